"""A job: a task's stages, run in order on one run directory, for the command line and the Python API alike.

Stages talk through typed objects and the run directory; each stage's metrics are merged into metrics.json as
it ends, so a killed job keeps what finished. Re-running on a run directory resumes from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import shutil

from pipeline.core import preemption
from pipeline.core import task as task_lib
from pipeline.core.rundir import RunDir, setting
from pipeline.core.schema import ConfigError


def run(command: str, cfg, run_dir: RunDir) -> dict:
    """run: checks cfg before any work (`preflight`), records it in run_dir (refusing what its checkpoints cannot
    resume with) and runs every stage; evaluate or export: on the config run_dir recorded. Returns the metrics.
    Holds the run directory's lock throughout: rundir.RunLocked if another process works there."""
    from pipeline.core import distribute

    strategy = None
    if run_dir.root.exists() and not run_dir.root.is_dir():
        raise ConfigError(
            f"--run-dir {run_dir.root}: a file is there; allowed: a new folder, or a run directory to continue"
        )
    if command == "run":
        task = preflight(cfg)
        strategy = distribute.strategy(cfg.distribute)  # before TensorFlow's first op; waits for every worker
        # Across workers, TensorFlow's coordination service installs a SIGTERM handler of its own (its preemption
        # notifier): ours again, which tells every worker through a collective (distribute.any_worker).
        preemption.reinstall()
        if strategy is not None:
            task.check_split(cfg, strategy)
        if distribute.worker(strategy).index > 0:
            metrics = _worker(task, cfg, run_dir, strategy)
            distribute.barrier(strategy)  # until the chief has evaluated and exported
            return metrics
    else:
        cfg = run_dir.load_config()
        task = task_lib.get(cfg.task)
    with run_dir.lock():  # one process per run directory (RunLocked otherwise)
        if command == "run":
            run_dir.save_config(cfg)
            if distribute.worker(strategy).count == 1:  # no other worker: a killed one's leftovers
                shutil.rmtree(run_dir.root / "workers", ignore_errors=True)
        metrics = task.run_stages(command, cfg, run_dir, strategy)
        from pipeline.core import summaries  # TensorFlow: after the config and lock are settled

        summaries.write_hparams(run_dir, cfg, metrics)
    distribute.barrier(strategy)
    return metrics


def preflight(cfg) -> task_lib.Task:
    """What the config names must exist (a wrong env.id or reward.function is a config error, found before any
    work); the config's task."""
    task = task_lib.get(cfg.task)
    task.preflight(cfg)
    source = setting(cfg, task.warm_start_key)
    if source is not None:
        task.check_warm_start(cfg, source)  # a source that cannot be used is a config error, before any work
    return task


def _worker(task: task_lib.Task, cfg, run_dir: RunDir, strategy) -> dict:
    """A worker other than the chief: it trains beside the chief, restoring what the chief's checkpoints hold
    (the run directory on a shared filesystem, or the same host), and writes only into a scratch folder of its
    own under RUN_DIR/workers, removed when it ends; the chief alone evaluates, exports and writes the run."""
    from pipeline.core import distribute

    index = distribute.worker(strategy).index
    scratch = RunDir(run_dir.root / "workers" / str(index))
    try:
        task.run_worker(cfg, scratch, run_dir, strategy)
    finally:
        shutil.rmtree(scratch.root, ignore_errors=True)
        with contextlib.suppress(OSError):  # the last worker out removes the folder
            scratch.root.parent.rmdir()
    return {"distribute.worker": index}
