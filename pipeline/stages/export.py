"""Export stage: a versioned SavedModel for TF Serving, written atomically, plus models.config."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from export import tf_serving
from export.serving import PolicyServingModule
from pipeline import summaries
from pipeline.config import Config
from pipeline.ppo import PPOLearner
from pipeline.rundir import RunDir

log = logging.getLogger(__name__)


def model_name(cfg: Config) -> str:
    return cfg.export.model_name or re.sub(r"[^a-z0-9_]+", "_", cfg.env.id.lower()).strip("_")


def run(cfg: Config, run_dir: RunDir, learner: PPOLearner, checkpoint: str) -> dict:
    name = model_name(cfg)
    model_dir = run_dir.export_root / name
    existing = tf_serving.versions(model_dir)
    source = Path(checkpoint).name
    version = cfg.export.version or (existing[-1] + 1 if existing else 1)
    # Re-running a finished job must not pile up identical versions: reuse the one made from this checkpoint.
    for candidate in ([cfg.export.version] if cfg.export.version else existing[-1:]):
        if candidate in existing:
            if tf_serving.export_info(model_dir / str(candidate)).get("checkpoint") == source:
                log.info("export: version %d already holds checkpoint %s", candidate, source)
                tf_serving.write_models_config(run_dir.export_root)  # base paths follow a moved run directory
                return _metrics(name, candidate, model_dir / str(candidate), run_dir)
            if cfg.export.version:
                raise FileExistsError(f"export.version {candidate}: {model_dir / str(candidate)} already exists "
                                      f"from another checkpoint; versions are immutable, choose a new one")
    module = PolicyServingModule(learner.agent.policy, learner.agent.collect_policy,
                                 learner.spaces.observation_shape, learner.spaces.discrete)
    info = {"checkpoint": source, "env_steps": int(learner.counters.env_steps), "env_id": cfg.env.id}
    path = tf_serving.publish(run_dir.export_root, name, version, module.save, info)
    signature = module.serve.get_concrete_function()
    with summaries.stage_writer(run_dir, "export"):
        summaries.text("export/savedmodel", summaries.markdown_table({
            "path": path, "model_name": name, "version": version, "from checkpoint": source,
            "models.config": run_dir.export_root / "models.config"}))
        summaries.text("export/serving_default", summaries.markdown_table(
            {f"input {spec.name}": _describe(spec) for spec in signature.structured_input_signature[0]}
            | {f"output {name}": _describe(t) for name, t in signature.structured_outputs.items()}))
    return _metrics(name, version, path, run_dir)


def _describe(tensor) -> str:
    return f"{tensor.dtype.name} {tensor.shape}"


def _metrics(name: str, version: int, path: Path, run_dir: RunDir) -> dict:
    return {"export.model_name": name, "export.version": version, "export.path": str(path),
            "export.models_config": str(run_dir.export_root / "models.config")}
