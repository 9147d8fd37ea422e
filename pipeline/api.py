"""The pipeline from Python (notebooks, scripts, your own environments): the same configs, checks, stages and run
directories as `python -m pipeline`, with exceptions where the command line has exit codes.

    import pipeline
    cfg = pipeline.load_config("configs/cartpole.yaml", {"train.total_env_steps": 50_000})
    metrics = pipeline.run(cfg, "runs/notebook")           # trains (or resumes), evaluates, exports
    policy = pipeline.load_policy("runs/notebook")         # the exported policy, as TF Serving would load it
    action = policy(observation)

Errors (each also at the package's top, e.g. pipeline.ConfigError): ConfigError (a key or value, named), RunError
(bad numbers from a reward function, an environment or an update), RunLocked (another process works in the run
directory), Preempted (SIGTERM, where the caller installed the handler).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

from export.policies import LanguagePolicy, Policy, load_policy
from pipeline.core import config as config_lib
from pipeline.core import job
from pipeline.core.rundir import RunDir

__all__ = ["LanguagePolicy", "Policy", "evaluate", "export", "load_config", "load_policy", "run"]


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
    EnvSpec, or an instance gymnasium.make made (its spec); it becomes env.id (module:name, so `evaluate` can make
    it again: it must stay importable, e.g. from a module or the notebook's own __main__), its spec's kwargs
    env.kwargs."""
    cfg = load_config(cfg)
    if env is not None:
        cfg = _with_env(cfg, env)
    return job.run("run", cfg, RunDir(Path(run_dir)))


def evaluate(run_dir: str | Path) -> dict:
    """Evaluates the latest checkpoint of a run directory again; the metrics."""
    return job.run("evaluate", None, RunDir(Path(run_dir)))


def export(run_dir: str | Path) -> dict:
    """Exports the latest checkpoint of a run directory for TF Serving (if not already); the metrics."""
    return job.run("export", None, RunDir(Path(run_dir)))


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
