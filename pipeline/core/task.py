"""The Task interface: what the job runner, status, warm starts and the API ask of a task, so that none of them
branches on which task it is. Each task lives in its own package (pipeline.gym, pipeline.lm) and is found here by
the name its configs give under `task:`; its module is imported only when asked for, and must stay cheap to import
(no TensorFlow until a stage runs)."""

from __future__ import annotations

import abc
import importlib

# task name -> the module whose TASK implements it
_MODULES = {"gym": "pipeline.gym.task", "lm": "pipeline.lm.task"}
NAMES = tuple(_MODULES)


class Task(abc.ABC):
    config: type  # its root config (a pipeline.core.schema.TaskConfig dataclass)
    warm_start_key: str  # the config key naming a warm start's source
    warm_start_shared: tuple[str, ...]  # what a warm start's source run must share with this one
    stages: tuple[tuple[str, str], ...]  # (stage, the metrics prefix it writes when it ends), in order

    @abc.abstractmethod
    def preflight(self, cfg) -> None:
        """What the config names must exist (an environment, a reward function, a checkpoint, a file): a config
        error found before any work. (A warm start's source is checked by the job, through warm_start_key.)"""

    def check_warm_start(self, cfg, source: str) -> None:
        """A warm start's source that cannot be used is a config error naming warm_start_key, before any work."""
        from pipeline.core import warm_start

        warm_start.resolve(source, cfg)

    def check_split(self, cfg, strategy) -> None:  # noqa: B027 (optional: nothing to check by default)
        """Batch sizes that do not split over the strategy's workers and replicas: config errors before training."""

    @abc.abstractmethod
    def run_stages(self, command: str, cfg, run_dir, strategy=None) -> dict:
        """Runs the stages `command` (run, evaluate or export) takes, in order; the metrics so far."""

    @abc.abstractmethod
    def run_worker(self, cfg, scratch, run_dir, strategy) -> None:
        """A worker beside the chief: trains in its scratch run directory, restoring run_dir's checkpoints."""

    @abc.abstractmethod
    def progress(self, cfg, metrics: dict) -> dict:
        """How far training is, for status: one counter and its target."""

    @abc.abstractmethod
    def subject(self, cfg) -> str:
        """What the run trains on, in a few words, for status."""


def get(name: str) -> Task:
    return importlib.import_module(_MODULES[name]).TASK
