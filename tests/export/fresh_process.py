"""Asks an export a question the way TF Serving would: serving_client.py in a fresh, isolated process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

CLIENT = Path(__file__).with_name("serving_client.py")


def serve(version_dir: Path, requests: list[dict], work: Path) -> tuple[dict, list[dict]]:
    """Answers requests from a fresh process that loads the export as TF Serving does: (report, outputs of each)."""
    (work / "requests.json").write_text(json.dumps(requests))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_USE_LEGACY_KERAS", "KERAS_BACKEND")}
    # -I: no script directory, no PYTHONPATH, no user site on sys.path; cwd outside the repository. -S: no site
    # module, so no .pth hook either (the project's editable install is one); the client puts the installed
    # packages' folders on sys.path itself. What is left is what a server has: TensorFlow, TF Text, no project.
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(CLIENT), str(version_dir), str(work / "requests.json"), str(work)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    report = json.loads((work / "report.json").read_text())
    answers = []
    for request, response in zip(requests, json.loads((work / "responses.json").read_text())):
        dtypes = report["signature_defs"][request.get("signature_name", "serving_default")]["output_dtypes"]
        answers.append(
            {
                key: np.asarray(value, dtype=None if dtypes[key] == "string" else dtypes[key])
                for key, value in response["outputs"].items()
            }
        )
    return report, answers
