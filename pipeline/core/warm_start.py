"""Warm starts (train.warm_start, ppo.warm_start): a new run's agent (networks, observation normaliser, its
optimizer's moments), or LM policy (weights or adapters, value head), starts from another run's checkpoint instead
of from scratch, so a nightly job keeps improving the model it serves.

The source may be a version folder of a serving base (its export info names the run and checkpoint it came
from), a model folder (its newest version: the one TF Serving serves), or a run directory (its latest
checkpoint). It must have been made with the same environment, networks and normaliser setting (lm: the same data,
model and value model): checked, with the source run's config, before any work starts.
"""

from __future__ import annotations

from pathlib import Path

from export import tf_serving
from pipeline.core import config as config_lib
from pipeline.core import task as task_lib
from pipeline.core.rundir import RunDir, latest_checkpoint_name, setting


def resolve(source: str, cfg) -> str:
    """The checkpoint prefix a warm start reads; config_lib.ConfigError naming the key if it cannot be used."""
    task = task_lib.get(cfg.task)
    key = task.warm_start_key
    path = Path(source)
    versions = tf_serving.versions(path)
    if versions:  # a model folder: the version a server serves
        path = path / str(versions[-1])
    info = tf_serving.export_info(path)
    if info:
        run, checkpoint = RunDir(Path(info.get("run", ""))), info.get("checkpoint")
        where = f"{path} was exported from {run.root}, checkpoint {checkpoint}"
    elif (path / "config.yaml").is_file():
        run = RunDir(path)
        checkpoint = latest_checkpoint_name(run.checkpoints / task.config.checkpoints)
        where = f"run directory {path}"
    else:
        raise config_lib.ConfigError(
            f"{key}: {source} is neither a run directory nor an exported version (or a model folder of them)"
        )
    prefix = run.checkpoints / task.config.checkpoints / str(checkpoint)
    if not checkpoint or not prefix.with_name(f"{prefix.name}.index").exists():
        raise config_lib.ConfigError(f"{key}: {where}, whose checkpoint is not there any more")
    theirs = run.load_config()
    if theirs.task != cfg.task:
        raise config_lib.ConfigError(f"{key}: {run.root} is a {theirs.task} run, this is {cfg.task}")
    for shared in task.warm_start_shared:
        if setting(theirs, shared) != setting(cfg, shared):
            raise config_lib.ConfigError(
                f"{key}: {shared} is {setting(cfg, shared)!r} here but "
                f"{setting(theirs, shared)!r} in {run.root}; a warm start needs the same"
            )
    return str(prefix.resolve())
