"""TensorBoard writers, one per stage under RUN_DIR/tb/<stage>, and the hparams record.

Tag names follow Stable-Baselines3 (rollout/ep_rew_mean, train/approx_kl, time/fps, ...) so its users find
their way.
"""

from __future__ import annotations

import contextlib

import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.histogram import metadata as histogram_metadata

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
    which a training loop logging every iteration cannot afford. Traced once per set of tags (~0.4 s);
    a NaN scalar (nothing to report yet, e.g. no finished episode) is skipped inside the graph, so a tag
    that has no value yet does not cost a second trace."""

    def __init__(self, writer):
        self._writer = writer
        self._functions = {}

    def _compile(self, scalar_tags: tuple, histogram_tags: tuple):
        def write(scalar_vector, histogram_values, step):
            with self._writer.as_default(step=step):
                for i, tag in enumerate(scalar_tags):
                    with tf.summary.record_if(~tf.math.is_nan(scalar_vector[i])):
                        tf.summary.scalar(tag, scalar_vector[i])
                for tag in histogram_tags:
                    tf.summary.write(tag, histogram_values[tag], metadata=_HISTOGRAM_METADATA)

        signature = (tf.TensorSpec([len(scalar_tags)], tf.float32),
                     {tag: tf.TensorSpec([HISTOGRAM_BUCKETS, 3], tf.float64) for tag in histogram_tags},
                     tf.TensorSpec([], tf.int64))
        return tf.function(write, input_signature=signature, autograph=False)

    def __call__(self, scalar_values: dict, histogram_values: dict, step: int) -> None:
        scalars = {k: float(v) for k, v in scalar_values.items()}
        key = (tuple(scalars), tuple(histogram_values))
        if key not in self._functions:
            self._functions[key] = self._compile(*key)
        self._functions[key](np.array(list(scalars.values()), np.float32),
                             {k: histogram_buckets(v) for k, v in histogram_values.items()}, step)


HISTOGRAM_BUCKETS = 30
# TensorBoard's histogram plugin data: a [buckets, 3] tensor of (left edge, right edge, count) per step.
_HISTOGRAM_METADATA = histogram_metadata.create_summary_metadata(display_name="", description="").SerializeToString()


def histogram_buckets(values) -> np.ndarray:
    """What tf.summary.histogram stores, computed in numpy: tracing TF's bucketing graph cost ~0.6 s a run."""
    values = np.asarray(values, np.float64).reshape(-1)
    if values.size == 0:
        return np.zeros((HISTOGRAM_BUCKETS, 3))
    counts, edges = np.histogram(values, bins=HISTOGRAM_BUCKETS)
    return np.stack([edges[:-1], edges[1:], counts], axis=1)


def text(tag: str, markdown: str, step: int = 0) -> None:
    tf.summary.text(tag, markdown, step=step)


def markdown_table(rows: dict) -> str:
    return "| key | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows.items())


def markdown_columns(header: list[str], rows) -> str:
    """A table of text rows (e.g. prompt | SFT | PPO); a pipe or newline in a cell would break its row."""
    escape = lambda text: str(text).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    body = ["| " + " | ".join(escape(cell) for cell in row) + " |" for row in rows]
    return "\n".join([f"| {' | '.join(header)} |", "|" + "---|" * len(header), *body])


def write_hparams(run: RunDir, cfg: Config, metrics: dict) -> None:
    """Links the flat config to the final metrics in TensorBoard's HParams tab (one session per run)."""
    hparams = {k: (v if isinstance(v, (bool, int, float, str)) else str(v)) for k, v in cfg.flat().items()}
    numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    with stage_writer(run, "hparams"):
        hp.hparams_config(hparams=[hp.HParam(k) for k in hparams], metrics=[hp.Metric(k) for k in numeric])
        hp.hparams(hparams, trial_id=run.root.name)
        scalars(numeric, step=0)
