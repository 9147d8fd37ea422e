"""Reading event files back with TensorBoard's own reader (tests, benchmarks), as its server does."""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator, event_file_loader


def accumulator(stage_dir: Path) -> event_accumulator.EventAccumulator:
    acc = event_accumulator.EventAccumulator(str(stage_dir), size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    return acc


def tags(stage_dir: Path) -> set:
    return set(accumulator(stage_dir).Tags()["tensors"])


def read_scalars(stage_dir: Path, tag: str, per_file: bool = False):
    """{step: value}; with per_file, one dict per event file in write order (one per process)."""
    files = sorted(Path(stage_dir).glob("events.out.tfevents.*"), key=lambda p: (p.stat().st_mtime, p.name))
    out = []
    for path in files:
        values = {}
        for event in event_file_loader.EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = float(tf.make_ndarray(value.tensor))
        out.append(values)
    if per_file:
        return out
    return {k: v for values in out for k, v in values.items()}


def texts(stage_dir: Path) -> dict:
    acc = accumulator(stage_dir)
    return {
        tag: tf.make_ndarray(acc.Tensors(tag)[-1].tensor_proto).item().decode()
        for tag in acc.Tags()["tensors"]
        if acc.summary_metadata[tag].plugin_data.plugin_name == "text"
    }
