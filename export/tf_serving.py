"""TF Serving's on-disk contract: BASE/<model_name>/<integer version>/ and a models.config.

A server polls BASE/<model_name> and loads any new integer folder it sees, so a version is written in a
staging folder outside it and renamed into place in one step: a server never sees half a model. A base may be
shared by many runs (a nightly job's): versions are numbered under a file lock, and old ones pruned.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from pathlib import Path

# A gym policy's serving input when its observation is not a dict (a Dict observation: one input per key).
OBSERVATIONS = "observations"
INFO_FILE = "assets.extra/export_info.json"  # TF Serving ignores assets.extra/ except its warm-up file


def drop_cluster_devices(savedmodel_dir: str | Path) -> None:
    """A SavedModel written by a worker of a tf.distribute cluster pins some ops (a tokenizer's lookup tables) to
    that worker's job, e.g. /job:worker/replica:0/task:0/device:CPU:0, which a server, a job of its own, cannot
    place. Those devices lose their job, replica and task here; the device type and number stay."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = Path(savedmodel_dir) / "saved_model.pb"
    saved = saved_model_pb2.SavedModel.FromString(path.read_bytes())
    pinned = [
        node
        for graph in saved.meta_graphs
        for nodes in [graph.graph_def.node, *(f.node_def for f in graph.graph_def.library.function)]
        for node in nodes
        if node.device.startswith("/job:")
    ]
    for node in pinned:
        _, found, device = node.device.partition("/device:")
        node.device = f"/device:{device}" if found else ""
    if pinned:
        path.write_bytes(saved.SerializeToString())


def versions(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def export_info(version_dir: Path) -> dict:
    path = version_dir / INFO_FILE
    return json.loads(path.read_text()) if path.exists() else {}


@contextlib.contextmanager
def locked(base: Path):
    """The base's publishing lock (flock on BASE/.lock), waited for: one publisher at a time, so two runs that
    finish together never take one version number. The kernel frees it if its holder dies."""
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def publish(
    base: Path, model_name: str, version: int | None, write_savedmodel, info: dict, keep_versions: int | None = None
) -> Path:
    """Calls write_savedmodel(staging_path), adds `info`, then renames the folder into place atomically, as the
    version given or the next integer after the newest; then keeps only the newest `keep_versions`."""
    with locked(base):
        return publish_locked(base, model_name, version, write_savedmodel, info, keep_versions)


def publish_locked(
    base: Path, model_name: str, version: int | None, write_savedmodel, info: dict, keep_versions: int | None = None
) -> Path:
    """`publish`, for a caller that holds `locked(base)` already (to compare with the served version first)."""
    model_dir = base / model_name
    # Staging folders are only written under the lock: any there now were left by a publisher that died.
    shutil.rmtree(base / ".staging", ignore_errors=True)
    version = version or max(versions(model_dir), default=0) + 1
    final = model_dir / str(version)
    if final.exists():
        raise FileExistsError(f"{final} already exists; TF Serving versions are immutable, choose another version")
    staging = base / ".staging" / f"{model_name}-{version}"
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_savedmodel(str(staging))
        (staging / INFO_FILE).parent.mkdir(parents=True, exist_ok=True)
        (staging / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        model_dir.mkdir(parents=True, exist_ok=True)
        os.rename(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if keep_versions is not None:
        prune(model_dir, keep_versions, base / ".staging")
    write_models_config(base)
    return final


def prune(model_dir: Path, keep: int, trash: Path) -> list[int]:
    """Removes all but the newest `keep` versions: each renamed out of the model folder first (one step, so a
    server never sees half a version), then deleted. Returns the versions removed."""
    removed = versions(model_dir)[:-keep] if keep > 0 else []
    for version in removed:
        trash.mkdir(parents=True, exist_ok=True)
        gone = trash / f"{model_dir.name}-{version}-removed"
        os.rename(model_dir / str(version), gone)
        shutil.rmtree(gone, ignore_errors=True)
    return removed


def write_models_config(base: Path) -> Path:
    """One `config` entry per model folder under base, with absolute base paths as TF Serving wants."""
    entries = "".join(
        f'  config {{\n    name: "{d.name}"\n    base_path: "{d.resolve()}"\n    model_platform: "tensorflow"\n  }}\n'
        for d in sorted(base.iterdir())
        if d.is_dir() and not d.name.startswith(".")
    )
    path = base / "models.config"
    tmp = base / ".models.config.tmp"
    tmp.write_text(f"model_config_list {{\n{entries}}}\n")
    os.replace(tmp, path)
    return path
