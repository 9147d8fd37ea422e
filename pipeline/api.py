"""The pipeline from Python (notebooks, scripts, your own environments): the same configs, checks, stages and run
directories as `python -m pipeline`, with exceptions where the command line has exit codes.

    import pipeline
    cfg = pipeline.load_config("configs/cartpole.yaml", {"train.total_env_steps": 50_000})
    metrics = pipeline.run(cfg, "runs/notebook")           # trains (or resumes), evaluates, exports
    policy = pipeline.load_policy("runs/notebook")         # the exported policy, as TF Serving would load it
    action = policy(observation)

Errors: config_lib.ConfigError (a key or value, named), guards.RunError (bad numbers from a reward function, an
environment or an update), rundir.RunLocked (another process works in the run directory), preemption.Preempted
(SIGTERM, where the caller installed the handler).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np

from pipeline import config as config_lib
from pipeline import jobs
from pipeline.rundir import RunDir


def load_config(source=None, overrides: dict | None = None):
    """A validated config from a YAML path, a dict shaped like the YAML, a config object (checked again, as a
    hand-built one has not been), or None (the gym task's defaults); `overrides` maps "section.key" to values.
    Raises config_lib.ConfigError naming the key, with the same message as the command line."""
    if source is None:
        raw = {}
    elif isinstance(source, (str, Path)):
        raw = config_lib.load(source).to_dict()
    elif isinstance(source, dict):
        raw = copy.deepcopy(source)
    elif dataclasses.is_dataclass(source) and hasattr(source, "task"):
        raw = source.to_dict()
    else:
        raise TypeError(f"load_config: expected a YAML path, a dict or a config, got {type(source).__name__}")
    for key, value in (overrides or {}).items():
        config_lib.override(raw, key, value)
    return config_lib.from_dict(raw)


def run(cfg, run_dir: str | Path, env=None) -> dict:
    """Runs every stage into run_dir (resuming from its checkpoints, as a re-run of the command does) and returns
    the metrics (metrics.json's). env, for a gym config: a gymnasium.Env class or a function making one, an
    EnvSpec, or an instance gymnasium.make made (its spec); it becomes env.id (module:name, so `evaluate` can make it again: it must stay importable, e.g. from
    a module or the notebook's own __main__), its spec's kwargs env.kwargs."""
    cfg = load_config(cfg)
    if env is not None:
        cfg = _with_env(cfg, env)
    return jobs.start("run", cfg, RunDir(Path(run_dir)))


def evaluate(run_dir: str | Path) -> dict:
    """Evaluates the latest checkpoint of a run directory again; the metrics."""
    return jobs.start("evaluate", None, RunDir(Path(run_dir)))


def export(run_dir: str | Path) -> dict:
    """Exports the latest checkpoint of a run directory for TF Serving (if not already); the metrics."""
    return jobs.start("export", None, RunDir(Path(run_dir)))


def _with_env(cfg, env):
    import gymnasium as gym
    from gymnasium.envs.registration import EnvSpec

    if cfg.task != "gym":
        raise config_lib.ConfigError("env: only a gym config has an environment")
    if isinstance(env, gym.Env):  # an instance: the spec it was made from (gymnasium.make gives it one)
        if env.unwrapped.spec is None and env.spec is None:
            raise TypeError("env: an environment instance not made by gymnasium.make has no spec; pass its class")
        env = env.spec or env.unwrapped.spec
    if isinstance(env, EnvSpec):
        env_id, kwargs = env.id, dict(env.kwargs)
    elif callable(env):
        env_id, kwargs = f"{env.__module__}:{env.__qualname__}", dict(cfg.env.kwargs)
    else:
        raise TypeError(f"env: expected an Env class, a function or an EnvSpec, got {type(env).__name__}")
    return load_config(cfg, {"env.id": env_id, "env.kwargs": kwargs})


class Policy:
    """A trained gym policy from its export: observations in (one, or a batch), greedy actions out, as the
    served `serving_default` answers (`outputs` gives its value and logits, or mean and std, too)."""

    def __init__(self, signature):
        self._serve = signature

    def outputs(self, observations) -> dict:
        batch = np.asarray(observations, np.float32)
        single = batch.ndim == 1
        out = self._serve(observations=batch[None] if single else batch)
        return {k: v.numpy()[0] if single else v.numpy() for k, v in out.items()}

    def __call__(self, observations) -> np.ndarray:
        return self.outputs(observations)["action"]


class LanguagePolicy:
    """A trained LM policy from its export: prompts in, completions out, as the served signature answers."""

    def __init__(self, signature, defaults: dict):
        self._serve, self._defaults = signature, defaults

    def __call__(self, prompts, **settings) -> str | list[str]:
        """settings: max_new_tokens, temperature (0: greedy), seed (-1: a fresh one); what is not given takes the
        SignatureDef's default, as TF Serving fills it in (the training run's sampling settings)."""
        import tensorflow as tf

        single = isinstance(prompts, str)
        inputs = {"prompts": tf.constant([prompts] if single else list(prompts))}
        for name, default in self._defaults.items():
            inputs[name] = tf.constant(settings.pop(name, default), tf.as_dtype(default.dtype))
        if settings:
            raise TypeError(f"unknown settings {sorted(settings)}; allowed: {sorted(self._defaults)}")
        texts = [t.decode() for t in self._serve(**inputs)["completions"].numpy()]
        return texts[0] if single else texts


def load_policy(path: str | Path) -> Policy | LanguagePolicy:
    """The policy of a run directory (its latest export), a model folder (its latest version) or a version folder,
    loaded as TF Serving loads it (the SavedModel, nothing of this project's code)."""
    import tensorflow as tf

    from export import tf_serving

    version_dir = _version_dir(Path(path), tf_serving)
    signature = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    if "prompts" not in signature.structured_input_signature[1]:
        return Policy(signature)
    return LanguagePolicy(signature, _signature_defaults(version_dir, "serving_default"))


def _signature_defaults(version_dir: Path, key: str) -> dict:
    """The optional inputs' defaults a SignatureDef holds (TF Serving applies them; a loaded function does not)."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString((version_dir / "saved_model.pb").read_bytes())
    return {name: tf.make_ndarray(value) for name, value in saved.meta_graphs[0].signature_def[key].defaults.items()}


def _version_dir(path: Path, tf_serving) -> Path:
    if (path / "saved_model.pb").exists():
        return path
    if (path / "config.yaml").exists():  # a run directory: its one exported model
        models = [p for p in (path / "export").glob("*") if tf_serving.versions(p)]
        if len(models) != 1:
            raise FileNotFoundError(f"{path}: a run directory with {len(models)} exported models; export it first "
                                    f"(pipeline.export) or name the version folder")
        path = models[0]
    versions = tf_serving.versions(path)
    if not versions:
        raise FileNotFoundError(f"{path}: no SavedModel version folder here")
    return path / str(versions[-1])
