"""The export stage both tasks share: a versioned SavedModel for TF Serving, written atomically, plus
models.config; blessing against the version served; the TensorBoard record.

A task hands over only the servable it builds and how to score one (pipeline/gym/stages/export.py,
pipeline/lm/stages/export.py).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from tensorflow.core.framework import tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import saved_model_pb2

from export import tf_serving
from pipeline.core import blessing, summaries
from pipeline.core.rundir import RunDir
from pipeline.core.sections import ExportConfig

log = logging.getLogger(__name__)

# A servable builder: returns a function that writes the SavedModel into a given folder.
Build = Callable[[], Callable[[str], None]]


def publish(
    export: ExportConfig,
    run_dir: RunDir,
    name: str,
    checkpoint: str,
    build: Build,
    info: dict,
    score: Callable[[Path], float],
) -> dict:
    """Publishes into export.base_dir (shared by runs) or RUN_DIR/export, unless this run already published this
    checkpoint there: re-running a finished job adds no version, even where retention has pruned it since. With
    blessing on (export.bless_tolerance or export.bless_floor), only a candidate that scores well enough against
    the version now served (`score` of each SavedModel) is published; `export.published` says which it was."""
    base = Path(export.base_dir) if export.base_dir is not None else run_dir.export_root
    model_dir = base / name
    source = Path(checkpoint).name
    run = str(run_dir.root.resolve())
    shared = export.base_dir is not None
    done = run_dir.read_metrics()
    if shared and done.get("export.checkpoint") == source and done.get("export.base") == str(base):
        if done.get("export.published") is not False:
            log.info("export: this run published checkpoint %s already (version %s)", source, done["export.version"])
            tf_serving.write_models_config(base)  # base paths follow a moved run directory
        return {k: v for k, v in done.items() if k.startswith(("export.", "bless."))}
    existing = tf_serving.versions(model_dir)
    for version in existing:  # published by this run before metrics.json recorded it (a kill in between)
        published = tf_serving.export_info(model_dir / str(version))
        if published.get("checkpoint") == source and (not shared or published.get("run") == run):
            log.info("export: version %d already holds checkpoint %s", version, source)
            tf_serving.write_models_config(base)  # base paths follow a moved run directory
            return _metrics(name, version, model_dir / str(version), base, source)
    if export.version in existing:
        raise FileExistsError(
            f"export.version {export.version}: {model_dir / str(export.version)} already exists "
            f"from another checkpoint; versions are immutable, choose a new one"
        )
    evaluated = {k: v for k, v in done.items() if k.startswith("eval.")}  # what this version scored, for `status`
    info = {"checkpoint": source, "run": run, **info, "eval": evaluated}
    blessing_on = export.bless_tolerance is not None or export.bless_floor is not None
    if not blessing_on:
        path = tf_serving.publish(base, name, export.version, build(), info, keep_versions=export.keep_versions)
        decision = None
    else:
        candidate = _candidate(run_dir, name, build, info)
        with tf_serving.locked(base):  # the served version cannot change between the comparison and the publish
            served = tf_serving.versions(model_dir)
            decision = blessing.decide(
                score(candidate),
                score(model_dir / str(served[-1])) if served else None,
                export.bless_tolerance,
                export.bless_floor,
            )
            blessing.write_marker(candidate.parent, decision)
            log.info("export: %s: %s", "blessed" if decision.blessed else "NOT blessed", decision.reason)
            path = (
                tf_serving.publish_locked(
                    base,
                    name,
                    export.version,
                    lambda staging: shutil.copytree(candidate, staging),
                    info,
                    export.keep_versions,
                )
                if decision.blessed
                else None
            )
    with summaries.stage_writer(run_dir, "export"):
        if decision is not None:
            summaries.text("export/blessing", summaries.markdown_table(decision.metrics()))
            summaries.scalars(
                {
                    "bless/candidate": decision.candidate,
                    **({"bless/baseline": decision.baseline} if decision.baseline is not None else {}),
                },
                step=0,
            )
        if path is not None:
            summaries.text(
                "export/savedmodel",
                summaries.markdown_table(
                    {
                        "path": path,
                        "model_name": name,
                        "version": path.name,
                        "from checkpoint": source,
                        "run": run,
                        "models.config": base / "models.config",
                    }
                ),
            )
            for key, rows in signatures(path).items():
                summaries.text(f"export/{key}", summaries.markdown_table(rows))
    bless = {} if decision is None else decision.metrics()
    if path is None:
        return {**bless, "export.published": False, "export.checkpoint": source, "export.base": str(base)}
    return {**bless, **_metrics(name, int(path.name), path, base, source)}


def _candidate(run_dir: RunDir, name: str, build: Build, info: dict) -> Path:
    """RUN_DIR/candidate/<name>/: the SavedModel blessing scores and, if blessed, copies into the base; its
    BLESSED or NOT_BLESSED marker goes beside it. Written once per checkpoint (staged, then renamed)."""
    candidate = run_dir.root / "candidate" / name
    if tf_serving.export_info(candidate).get("checkpoint") == info["checkpoint"]:
        return candidate
    staging = candidate.with_name(f".{name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(candidate, ignore_errors=True)
    build()(str(staging))
    (staging / tf_serving.INFO_FILE).parent.mkdir(parents=True, exist_ok=True)
    (staging / tf_serving.INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    os.rename(staging, candidate)
    return candidate


def signatures(version_dir: Path) -> dict[str, dict[str, str]]:
    """What a server sees, read from saved_model.pb: per signature, each input (and its default) and output."""
    saved = saved_model_pb2.SavedModel.FromString((version_dir / "saved_model.pb").read_bytes())
    described = {}
    for key, signature in saved.meta_graphs[0].signature_def.items():
        if key.startswith("__"):
            continue
        rows = {
            f"input {name}": _describe(info) + (" (optional)" if name in signature.defaults else "")
            for name, info in sorted(signature.inputs.items())
        }
        described[key] = rows | {f"output {name}": _describe(info) for name, info in sorted(signature.outputs.items())}
    return described


def _describe(info) -> str:
    shape: tensor_shape_pb2.TensorShapeProto = info.tensor_shape
    dims = "unknown" if shape.unknown_rank else "(" + ", ".join(str(d.size) for d in shape.dim) + ")"
    return f"{types_pb2.DataType.Name(info.dtype)[3:].lower()} {dims}"


def _metrics(name: str, version: int, path: Path, base: Path, checkpoint: str) -> dict:
    return {
        "export.published": True,
        "export.model_name": name,
        "export.version": version,
        "export.path": str(path),
        "export.models_config": str(base / "models.config"),
        "export.base": str(base),
        "export.checkpoint": checkpoint,
    }
