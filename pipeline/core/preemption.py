"""SIGTERM, what Slurm, Kubernetes and most schedulers send a job before they kill it (preemption, time limit).

The driver's handler only notes the signal. Training loops look at the note between steps: a stage that
resumes from checkpoints saves one first, then the run stops with exit code 143 (128 + SIGTERM), so a
scheduler can requeue it and the same command continues. Without it, everything since the last periodic
checkpoint would be lost to the SIGKILL that follows.
"""

from __future__ import annotations

import signal

EXIT_CODE = 128 + signal.SIGTERM
_requested = False
_installed = False


class Preempted(Exception):
    """Raised at a step boundary once SIGTERM has arrived; the driver exits with EXIT_CODE."""


def install() -> None:
    global _installed
    signal.signal(signal.SIGTERM, _note)
    _installed = True


def reinstall() -> None:
    """Takes SIGTERM back where install() took it before (the driver) and a library has since set its own."""
    if _installed:
        install()


def _note(signum, frame) -> None:
    global _requested
    _requested = True


def requested() -> bool:
    return _requested


def stop_requested(strategy=None) -> bool:
    """Whether SIGTERM reached this process or, under a multi-worker strategy, any worker: every worker gets the
    same answer (a collective), so all stop at the same step and none waits in a collective for one that left."""
    from pipeline.core import distribute  # TensorFlow: not before the driver has read its arguments

    return distribute.any_worker(strategy, _requested)


def stopped(what: str) -> Preempted:
    return Preempted(f"stopped by SIGTERM {what}")


def stop_if_requested(what: str, strategy=None) -> None:
    """Call where stopping loses nothing more than `what` says (after a checkpoint, or before a restartable stage)."""
    if stop_requested(strategy):
        raise stopped(what)
