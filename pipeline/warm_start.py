"""Warm starts (train.warm_start): a new run's agent (networks, observation normaliser, its optimizer's moments)
starts from another run's checkpoint instead of from scratch, so a nightly job keeps improving the model it serves.

The source may be a version folder of a serving base (its export info names the run and checkpoint it came
from), a model folder (its newest version: the one TF Serving serves), or a run directory (its latest
checkpoint). It must have been made with the same environment, networks and normaliser setting: checked, with
the source run's config, before any work starts.
"""

from __future__ import annotations

import re
from pathlib import Path

from export import tf_serving
from pipeline import config as config_lib
from pipeline.rundir import RunDir

MUST_MATCH = ("env.id", "env.kwargs", "model", "train.normalize_observations")


def resolve(source: str, cfg) -> str:
    """The checkpoint prefix a warm start reads; config_lib.ConfigError (train.warm_start) if it cannot be used."""
    path = Path(source)
    versions = tf_serving.versions(path)
    if versions:  # a model folder: the version a server serves
        path = path / str(versions[-1])
    info = tf_serving.export_info(path)
    if info:
        run, checkpoint = RunDir(Path(info.get("run", ""))), info.get("checkpoint")
        where = f"{path} was exported from {run.root}, checkpoint {checkpoint}"
    elif (path / "config.yaml").is_file():
        run, checkpoint = RunDir(path), _latest(path / "checkpoints")
        where = f"run directory {path}"
    else:
        raise config_lib.ConfigError(f"train.warm_start: {source} is neither a run directory nor an exported version "
                                     f"(or a model folder of them)")
    if not checkpoint or not (run.checkpoints / f"{checkpoint}.index").exists():
        raise config_lib.ConfigError(f"train.warm_start: {where}, whose checkpoint is not there any more")
    theirs = run.load_config()
    for key in MUST_MATCH:
        if _get(theirs, key) != _get(cfg, key):
            raise config_lib.ConfigError(f"train.warm_start: {key} is {_get(cfg, key)!r} here but "
                                         f"{_get(theirs, key)!r} in {run.root}; a warm start needs the same")
    return str(run.checkpoints / checkpoint)


def _latest(checkpoints: Path) -> str | None:
    state = checkpoints / "checkpoint"
    match = re.search(r'^model_checkpoint_path: "(.+)"', state.read_text(), re.MULTILINE) if state.exists() else None
    return match.group(1) if match else None


def _get(cfg, path: str):
    value = cfg
    for part in path.split("."):
        value = getattr(value, part)
    return value
