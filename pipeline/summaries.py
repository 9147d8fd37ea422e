"""TensorBoard writers, one per stage under RUN_DIR/tb/<stage>, and the hparams record.

Tag names follow Stable-Baselines3 (rollout/ep_rew_mean, train/approx_kl, time/fps, ...) so its users find
their way.
"""

from __future__ import annotations

import contextlib

import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from pipeline.config import Config
from pipeline.rundir import RunDir


@contextlib.contextmanager
def stage_writer(run: RunDir, stage: str):
    writer = tf.summary.create_file_writer(str(run.tb(stage)))
    with writer.as_default():
        yield writer
    writer.flush()
    writer.close()


def scalars(values: dict, step: int) -> None:
    for tag, value in values.items():
        tf.summary.scalar(tag, value, step=step)


class CompiledWriter:
    """Writes dicts of scalars and histograms in one compiled call: eager tf.summary costs ~2 ms a tag,
    which a training loop logging every iteration cannot afford."""

    def __init__(self, writer):
        self._writer = writer
        # Keep the same keys on every call: a new key set traces again (~0.3 s).
        self._write = tf.function(self._write_all, autograph=False, reduce_retracing=True)

    def _write_all(self, scalar_values, histogram_values, step):
        with self._writer.as_default(step=step):
            for tag, value in scalar_values.items():  # NaN = nothing to report yet (e.g. no finished episode)
                with tf.summary.record_if(tf.logical_not(tf.math.is_nan(value))):
                    tf.summary.scalar(tag, value)
            for tag, value in histogram_values.items():
                tf.summary.histogram(tag, value)

    def __call__(self, scalar_values: dict, histogram_values: dict, step: int) -> None:
        self._write({k: tf.constant(v, tf.float32) for k, v in scalar_values.items()},
                    {k: tf.cast(v, tf.float32) for k, v in histogram_values.items()}, tf.constant(step, tf.int64))


def text(tag: str, markdown: str, step: int = 0) -> None:
    tf.summary.text(tag, markdown, step=step)


def markdown_table(rows: dict) -> str:
    return "| key | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows.items())


def write_hparams(run: RunDir, cfg: Config, metrics: dict) -> None:
    """Links the flat config to the final metrics in TensorBoard's HParams tab (one session per run)."""
    hparams = {k: (v if isinstance(v, (bool, int, float, str)) else str(v)) for k, v in cfg.flat().items()}
    numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    with stage_writer(run, "hparams"):
        hp.hparams_config(hparams=[hp.HParam(k) for k in hparams], metrics=[hp.Metric(k) for k in numeric])
        hp.hparams(hparams, trial_id=run.root.name)
        scalars(numeric, step=0)
