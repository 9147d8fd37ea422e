"""TensorBoard writers, one per stage under RUN_DIR/tb/<stage>, and the hparams record.

Tag names follow Stable-Baselines3 (rollout/ep_rew_mean, train/approx_kl, time/fps, ...) so its users find
their way.
"""

from __future__ import annotations

import contextlib

import numpy as np
import tensorflow as tf
from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata

from pipeline.core.rundir import RunDir
from pipeline.core.schema import TaskConfig


@contextlib.contextmanager
def stage_writer(run: RunDir, stage: str):
    writer = tf.summary.create_file_writer(str(run.tb(stage)))
    try:
        with writer.as_default():
            yield writer
    finally:  # a stage that stops early (an error, SIGTERM) keeps what it logged
        writer.flush()
        writer.close()


def scalars(values: dict, step: int) -> None:
    write(values, {}, step)


def write(scalar_values: dict, histogram_values: dict, step: int) -> None:
    """Writes scalars and histograms to the default writer as one Summary record, in one op.

    Why not tf.summary.scalar per tag: each eager call is several TF ops, and a compiled writer still costs a
    call and a trace; a training loop logging every iteration pays that hundreds of times. The record holds the
    same tensors and plugin metadata tf.summary.scalar and tf.summary.histogram write, so TensorBoard reads it the
    same way. A NaN scalar (nothing to report yet, e.g. no finished episode) is left out.
    """
    summary = summary_pb2.Summary()
    for tag, value in scalar_values.items():
        value = float(value)
        if not np.isnan(value):
            summary.value.add(
                tag=tag,
                metadata=_SCALAR_METADATA,
                tensor=tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=_SCALAR_SHAPE, float_val=[value]),
            )
    for tag, values in histogram_values.items():
        buckets = histogram_buckets(values)
        summary.value.add(
            tag=tag,
            metadata=_HISTOGRAM_METADATA,
            tensor=tensor_pb2.TensorProto(
                dtype=types_pb2.DT_DOUBLE,
                tensor_content=buckets.tobytes(),
                tensor_shape=tensor_shape_pb2.TensorShapeProto(
                    dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=n) for n in buckets.shape]
                ),
            ),
        )
    tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=step)


HISTOGRAM_BUCKETS = 30
_SCALAR_METADATA = scalar_metadata.create_summary_metadata(display_name="", description="")
_SCALAR_SHAPE = tensor_shape_pb2.TensorShapeProto()
# TensorBoard's histogram plugin data: a [buckets, 3] tensor of (left edge, right edge, count) per step.
_HISTOGRAM_METADATA = histogram_metadata.create_summary_metadata(display_name="", description="")


def histogram_buckets(values) -> np.ndarray:
    """What tf.summary.histogram stores, computed in numpy: no TF bucketing graph to trace each run."""
    values = np.asarray(values, np.float64).reshape(-1)
    if values.size == 0:
        return np.zeros((HISTOGRAM_BUCKETS, 3))
    counts, edges = np.histogram(values, bins=HISTOGRAM_BUCKETS)
    return np.stack([edges[:-1], edges[1:], counts], axis=1)  # float64: what tf.summary.histogram stores


def encoded_image(tag: str, encoded: bytes, width: int, height: int, step: int) -> None:
    """An already encoded image (an animated GIF plays in TensorBoard's Images tab), stored as tf.summary.image
    stores its PNGs: a string tensor [width, height, image]."""
    summary = summary_pb2.Summary()
    summary.value.add(
        tag=tag,
        metadata=image_metadata.create_summary_metadata(display_name=tag, description=""),
        tensor=tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=3)]),
            string_val=[str(width).encode(), str(height).encode(), encoded],
        ),
    )
    tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=step)


def text(tag: str, markdown: str, step: int = 0) -> None:
    tf.summary.text(tag, markdown, step=step)


def markdown_table(rows: dict) -> str:
    return "| key | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows.items())


def markdown_columns(header: list[str], rows) -> str:
    """A table of text rows (e.g. prompt | SFT | PPO); a pipe or newline in a cell would break its row."""
    escape = lambda text: str(text).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    body = ["| " + " | ".join(escape(cell) for cell in row) + " |" for row in rows]
    return "\n".join([f"| {' | '.join(header)} |", "|" + "---|" * len(header), *body])


def write_hparams(run: RunDir, cfg: TaskConfig, metrics: dict) -> None:
    """Links the flat config to the final metrics in TensorBoard's HParams tab (one session per run)."""
    hparams = {k: (v if isinstance(v, (bool, int, float, str)) else str(v)) for k, v in cfg.flat().items()}
    numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    with stage_writer(run, "hparams"):
        hp.hparams_config(hparams=[hp.HParam(k) for k in hparams], metrics=[hp.Metric(k) for k in numeric])
        hp.hparams(hparams, trial_id=run.root.name)
        scalars(numeric, step=0)
