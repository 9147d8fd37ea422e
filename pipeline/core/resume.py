"""Resuming from the newest checkpoint that reads back whole.

A checkpoint's files can be cut short after it was registered (a copy or sync interrupted, a file system that
lost a write): restoring it fails. The run says so, names the file, and resumes from the checkpoint before it,
rather than failing for good or starting over silently; only when none can be read does it stop.
"""

from __future__ import annotations

import logging

import tensorflow as tf

from pipeline.core import guards

log = logging.getLogger(__name__)

# What a cut-short or missing checkpoint file raises when read (a truncated .data file: IndexError "Read less
# bytes than requested", from TensorFlow's checkpoint reader).
UNREADABLE = (
    tf.errors.DataLossError,
    tf.errors.OutOfRangeError,
    tf.errors.NotFoundError,
    tf.errors.InvalidArgumentError,
    IndexError,
)


def restore_newest_readable(
    checkpoint: tf.train.Checkpoint, manager: tf.train.CheckpointManager, stage: str
) -> str | None:
    """Restores every variable from the newest readable of manager's checkpoints; its path, or None if there
    are none. guards.RunError if there are some and none of them reads."""
    for path in reversed(manager.checkpoints):
        try:
            checkpoint.restore(path).assert_consumed()
            return path
        except UNREADABLE as e:
            log.warning(
                "%s: checkpoint %s cannot be read (%s); resuming from the one before it instead",
                stage,
                path,
                str(e).splitlines()[0][:300],
            )
    if manager.checkpoints:
        raise guards.RunError(
            f"{stage}: none of the checkpoints {', '.join(manager.checkpoints)} can be read; "
            f"move them aside to start over"
        )
    return None


def trained_once(
    checkpoint: tf.train.Checkpoint, run_dir, stage: str, restore_from=None
) -> tuple[tf.train.CheckpointManager, str | None]:
    """For a stage that trains once and is then kept (SFT, the reward model): the manager its checkpoint is saved
    with (RUN_DIR/checkpoints/<stage>), and the checkpoint it was restored from, from restore_from's folder when
    given (a worker's scratch run restores the chief's), or None when it has yet to train."""
    manager = tf.train.CheckpointManager(checkpoint, str(run_dir.checkpoints / stage), max_to_keep=1)
    restorable = tf.train.latest_checkpoint(str((restore_from or run_dir).checkpoints / stage))
    if restorable:
        checkpoint.restore(restorable).assert_existing_objects_matched()
        log.info("%s: restored %s, not training again", stage, restorable)
    return manager, restorable
