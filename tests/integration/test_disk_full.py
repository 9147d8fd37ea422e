"""The disk fills up under a run directory or a serving base (a small tmpfs, a ballast file taking most of it):
a one-line error naming the path, exit 1, nothing half-written where a resume or a server reads, and once space
is freed the same command continues."""

from __future__ import annotations

import json
import subprocess

import pytest

from export import tf_serving
from tests.conftest import run_driver, write_config

BIG = {
    "model": {"actor_layers": [256, 256], "value_layers": [256, 256]},  # ~0.8 MB of checkpoint with Adam
    "train": {"total_env_steps": 1024, "rollout_steps": 32, "num_epochs": 1, "checkpoint_every": 4},
}


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs, with a ballast file that leaves 256 KiB free (mounting needs root: skipped without it)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    (mount / "ballast").write_bytes(b"\0" * (4 * 2**20 - 256 * 2**10))
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_under_the_run_directory_stops_cleanly_and_the_rerun_continues(small_disk, tmp_path):
    config, run = write_config(tmp_path / "c.yaml", BIG), small_disk / "run"
    result = run_driver("run", config, "--run-dir", run)
    assert result.returncode == 1, result.stderr[-3000:]
    assert f"no space left on the device holding {run / 'checkpoints'}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (run / "checkpoints" / "checkpoint").exists()  # no checkpoint state points at half a checkpoint
    (small_disk / "ballast").unlink()
    again = run_driver("run", config, "--run-dir", run)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["train.env_steps"] == 1024


def test_a_full_serving_base_leaves_no_half_version_and_the_rerun_publishes(small_disk, tmp_path):
    base, run = small_disk / "models", tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", {**BIG, "export": {"base_dir": str(base)}})
    result = run_driver("run", config, "--run-dir", run)
    assert result.returncode == 1 and f"no space left on the device holding {base}" in result.stderr, result.stderr[
        -3000:
    ]
    assert tf_serving.versions(base / "cartpole_v1") == []  # nothing a server would load
    assert not (base / ".staging").exists() or not any((base / ".staging").iterdir())
    (small_disk / "ballast").unlink()
    again = run_driver("run", config, "--run-dir", run)
    assert again.returncode == 0, again.stderr[-3000:]
    assert tf_serving.versions(base / "cartpole_v1") == [1]
