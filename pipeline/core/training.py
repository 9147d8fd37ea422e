"""The training loop both tasks' training stages share, as Stable-Baselines3's OnPolicyAlgorithm.learn is one
loop for its algorithms: iterate (collect, update, log) until done; checkpoint every N iterations, on finishing
early and before stopping for SIGTERM (every worker stops at the same iteration); and once at the end. A task
fills in what an iteration is and what a checkpoint holds (pipeline/gym/stages/train.py,
pipeline/lm/stages/ppo.py)."""

from __future__ import annotations

import abc

import tensorflow as tf

from pipeline.core import preemption, summaries
from pipeline.core.rundir import RunDir


class Loop(abc.ABC):
    stage: str  # its TensorBoard run and the name SIGTERM's message gives
    checkpoint_every: int  # iterations
    strategy: tf.distribute.Strategy | None
    manager: tf.train.CheckpointManager  # saves the checkpoints, numbered by checkpoint_number()

    @abc.abstractmethod
    def iterations(self) -> int:
        """Iterations done, the resumed ones included."""

    @abc.abstractmethod
    def done(self) -> bool:
        """The budget is spent."""

    @abc.abstractmethod
    def iterate(self) -> bool:
        """One iteration: collect, update, log. True: training is finished early (e.g. solved)."""

    @abc.abstractmethod
    def checkpoint_number(self) -> int:
        """Where training stands, as the number its checkpoint's name ends with (env steps, iterations)."""

    def save(self) -> None:
        """A checkpoint of where training stands (a task extends it: what goes into it, what is checked first)."""
        self.manager.save(checkpoint_number=self.checkpoint_number())

    def saved(self) -> bool:
        """The newest checkpoint holds where training stands."""
        latest = self.manager.latest_checkpoint
        return latest is not None and latest.endswith(f"-{self.checkpoint_number()}")

    @abc.abstractmethod
    def position(self) -> str:
        """Where training stands, for messages: "at 4096 env steps"."""


def run(loop: Loop, run_dir: RunDir) -> None:
    with summaries.stage_writer(run_dir, loop.stage):
        while not loop.done():
            finished = loop.iterate()
            stop = preemption.stop_requested(loop.strategy)  # all workers stop together
            if loop.iterations() % loop.checkpoint_every == 0 or finished or stop:
                loop.save()
                tf.summary.flush()  # the curves up to a checkpoint survive a kill
            if finished:
                break
            if stop:
                raise preemption.stopped(f"in {loop.stage} {loop.position()}, after a checkpoint")
        if not loop.saved():
            loop.save()
