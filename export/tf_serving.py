"""TF Serving's on-disk contract: BASE/<model_name>/<integer version>/ and a models.config.

A server polls BASE/<model_name> and loads any new integer folder it sees, so a version is written in a
staging folder outside it and renamed into place in one step: a server never sees half a model.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

INFO_FILE = "assets.extra/export_info.json"  # TF Serving ignores assets.extra/ except its warm-up file


def versions(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def export_info(version_dir: Path) -> dict:
    path = version_dir / INFO_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def publish(base: Path, model_name: str, version: int, write_savedmodel, info: dict) -> Path:
    """Calls write_savedmodel(staging_path), adds `info`, then renames the folder into place atomically."""
    model_dir = base / model_name
    final = model_dir / str(version)
    if final.exists():
        raise FileExistsError(f"{final} already exists; TF Serving versions are immutable, choose another version")
    staging = base / ".staging" / f"{model_name}-{version}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_savedmodel(str(staging))
        (staging / INFO_FILE).parent.mkdir(parents=True, exist_ok=True)
        (staging / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        model_dir.mkdir(parents=True, exist_ok=True)
        os.rename(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_models_config(base)
    return final


def write_models_config(base: Path) -> Path:
    """One `config` entry per model folder under base, with absolute base paths as TF Serving wants."""
    entries = "".join(
        f'  config {{\n    name: "{d.name}"\n    base_path: "{d.resolve()}"\n    model_platform: "tensorflow"\n  }}\n'
        for d in sorted(base.iterdir()) if d.is_dir() and not d.name.startswith("."))
    path = base / "models.config"
    tmp = base / ".models.config.tmp"
    tmp.write_text(f"model_config_list {{\n{entries}}}\n")
    os.replace(tmp, path)
    return path
