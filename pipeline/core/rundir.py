"""The run directory: the one place stages read from and write to.

RUN_DIR/config.yaml        resolved config (every default filled in)
RUN_DIR/checkpoints/       tf.train.CheckpointManager files
RUN_DIR/tb/<stage>/        one TensorBoard writer per stage
RUN_DIR/metrics.json       flat `section.key` metrics (train.*, eval.*, export.*)
RUN_DIR/export/            TF Serving model base paths and models.config
RUN_DIR/.lock              held (flock) by the one process working in the directory
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import re
import time
from pathlib import Path

from pipeline.core import config as config_lib
from pipeline.core.schema import TaskConfig


class RunLocked(RuntimeError):
    """Another process is working in this run directory (a second scheduled run started before the first ended)."""


@dataclasses.dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.json"

    @property
    def export_root(self) -> Path:
        return self.root / "export"

    @property
    def videos(self) -> Path:
        return self.root / "videos"

    def tb(self, stage: str) -> Path:
        return self.root / "tb" / stage

    def read_metrics(self) -> dict:
        return json.loads(self.metrics_path.read_text()) if self.metrics_path.exists() else {}

    def update_metrics(self, values: dict) -> dict:
        """Merges into metrics.json, written atomically so a kill never leaves half a file. NaN (e.g. no episode
        finished yet) is stored as null: metrics.json stays strict JSON."""
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in values.items()}
        metrics = {**self.read_metrics(), **clean}
        write_atomic(self.metrics_path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        return metrics

    @contextlib.contextmanager
    def lock(self):
        """Holds RUN_DIR/.lock for the block; RunLocked at once if another process holds it. An OS file lock
        (flock): the kernel releases it when its process ends, however it ends, so a killed run never blocks
        the next one. The file names the holder, for the message."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / ".lock"
        with open(path, "a+") as handle:
            for _ in range(5):  # a moment's grace: `status` takes the lock shared for an instant to look
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    time.sleep(0.2)
            else:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise RunLocked(
                    f"{self.root}: {holder} is working in this run directory; this run did nothing "
                    f"(wait for it to end, or use another --run-dir)"
                )
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {os.uname().nodename}")
            handle.flush()
            yield

    def load_config(self) -> TaskConfig:
        if not self.config_path.exists():
            raise config_lib.ConfigError(f"{self.root} is not a run directory: {self.config_path.name} is missing")
        return config_lib.load(self.config_path, run_directory=True)

    def save_config(self, cfg: TaskConfig) -> None:
        """Refuses to resume with what the checkpoints cannot fit (`resume_locked`: the environment or data, the
        model, ...), before any work starts."""
        if self.config_path.exists():
            old = config_lib.load(self.config_path, run_directory=True)
            if old.task != cfg.task:
                raise config_lib.ConfigError(
                    f"task: {cfg.task} differs from the run directory's {old.task}; use a new --run-dir"
                )
            for path in cfg.resume_locked:
                before, now = setting(old, path), setting(cfg, path)
                if before != now:
                    raise config_lib.ConfigError(
                        f"{path}: {now} differs from the run directory's {before} ({self.config_path}); its "
                        f"checkpoints cannot resume with a different {path}: use a new --run-dir"
                    )
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.config_path, config_lib.to_yaml(cfg))


def setting(cfg, path: str):
    """A section (`model`) or one key (`train.normalize_observations`) of a config."""
    value = cfg
    for part in path.split("."):
        value = getattr(value, part)
    return value


def latest_checkpoint_name(folder: Path) -> str | None:
    """The newest checkpoint's name in a tf.train.CheckpointManager folder (its `checkpoint` state file), read
    without TensorFlow; None when there is none."""
    state = folder / "checkpoint"
    match = re.search(r'^model_checkpoint_path: "(.+)"', state.read_text(), re.MULTILINE) if state.exists() else None
    return match.group(1) if match else None


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
