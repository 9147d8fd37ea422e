"""`python -m pipeline status PATH`: where a run directory stands, or what a serving base holds, read from files
alone (no TensorFlow), for people and, with --json, for schedulers and scripts."""

from __future__ import annotations

import datetime
import fcntl
import json
from pathlib import Path

from export import tf_serving
from pipeline.core import task as task_lib
from pipeline.core.rundir import RunDir, latest_checkpoint_name


def describe(path: Path) -> dict:
    """A run directory's or a serving base's status as plain data; FileNotFoundError if it is neither."""
    if (path / "config.yaml").is_file():
        return run_status(RunDir(path))
    if (path / "models.config").is_file():
        return base_status(path)
    raise FileNotFoundError(f"{path}: neither a run directory (config.yaml) nor a serving base (models.config)")


def run_status(run_dir: RunDir) -> dict:
    cfg = run_dir.load_config()
    metrics = run_dir.read_metrics()
    task = task_lib.get(cfg.task)
    done = [stage for stage, prefix in task.stages if any(k.startswith(prefix) for k in metrics)]
    checkpoints = {}
    for state in sorted(run_dir.checkpoints.rglob("checkpoint")) if run_dir.checkpoints.is_dir() else []:
        name = latest_checkpoint_name(state.parent)
        if name:
            stage = state.parent.relative_to(run_dir.checkpoints).as_posix()
            checkpoints["train" if stage == "." else stage] = {"checkpoint": name, "at": _when(state)}
    published = {k.removeprefix("export."): v for k, v in metrics.items() if k.startswith("export.")}
    return {
        "kind": "run directory",
        "path": str(run_dir.root),
        "task": cfg.task,
        "subject": task.subject(cfg),
        "running": _holder(run_dir.root / ".lock"),
        "stages_done": done,
        "progress": task.progress(cfg, metrics),
        "checkpoints": checkpoints,
        "published": published,
        "metrics": {k: v for k, v in metrics.items() if k.startswith(("eval.", "train.solved", "reward.pair_"))},
    }


def base_status(base: Path) -> dict:
    models = {}
    for model_dir in sorted(p for p in base.iterdir() if p.is_dir() and tf_serving.versions(p)):
        models[model_dir.name] = [
            {"version": v, "at": _when(model_dir / str(v)), **tf_serving.export_info(model_dir / str(v))}
            for v in tf_serving.versions(model_dir)
        ]
    return {"kind": "serving base", "path": str(base), "publishing": _holder(base / ".lock"), "models": models}


def as_text(status: dict) -> str:
    if status["kind"] == "serving base":
        lines = [
            f"serving base {status['path']}"
            + (f" (publishing now: {status['publishing']})" if status["publishing"] else "")
        ]
        for name, versions in status["models"].items():
            lines.append(f"  {name}: {len(versions)} version(s), TF Serving serves {versions[-1]['version']}")
            for v in versions:
                scored = [
                    f"{k} {x:.4g}" if isinstance(x, float) else f"{k} {x}"
                    for k, x in v.get("eval", {}).items()
                    if k.endswith(("mean_return", "gold_reward", ".kl"))
                ]
                extra = [f"{k} {v[k]}" for k in sorted(v) if k not in ("version", "at", "eval")]
                lines.append(f"    {v['version']}  {v['at']}  {', '.join(scored + extra)}")
        return "\n".join(lines) + "\n"
    progress = status["progress"]
    unit = "env steps" if "env_steps" in progress else "PPO iterations"
    count = progress.get("env_steps", progress.get("iterations"))
    lines = [
        f"run directory {status['path']} (task {status['task']}: {status['subject']})",
        f"  state: {'running, ' + status['running'] if status['running'] else 'not running'}; stages done: "
        f"{', '.join(status['stages_done']) or 'none'}",
        f"  progress: {count:,} of {progress['of']:,} {unit}",
    ]
    for stage, checkpoint in status["checkpoints"].items():
        lines.append(f"  checkpoint ({stage}): {checkpoint['checkpoint']} at {checkpoint['at']}")
    for key, value in status["metrics"].items():
        lines.append(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
    published = status["published"]
    lines.append(
        f"  published: {published['model_name']} version {published['version']} at {published['path']}"
        if published
        else "  published: nothing yet"
    )
    return "\n".join(lines) + "\n"


def as_json(status: dict) -> str:
    return json.dumps(status, indent=2, sort_keys=True) + "\n"


def _when(path: Path) -> str:
    return datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.UTC).isoformat(timespec="seconds")


def _holder(lock: Path) -> str | None:
    """Who holds the lock (what its file says), or None when no process does."""
    if not lock.exists():
        return None
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            return handle.read().strip() or "another process"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None
