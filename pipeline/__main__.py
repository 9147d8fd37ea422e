"""Driver: `python -m pipeline run CONFIG [--run-dir DIR] [--set key.path=value ...]`.

`check CONFIG [--set ...]` validates and prints the resolved config, every key documented; `reference` prints
every task's keys as Markdown (docs/configuration.md); `evaluate RUN_DIR`
and `export RUN_DIR` work on an existing run; `status PATH [--json]` tells where a run directory stands or what
a serving base holds. Stages run in order (environment -> model -> train -> evaluate ->
export), talking through typed objects and the run directory. Re-running on a run directory resumes from its
last checkpoint.
Exit codes: 0 success, 2 usage or config error (before any work starts), 1 any other failure (among them a
reward function or environment returning bad numbers, or a non-finite loss: stopped before the next checkpoint
or export), 3 trained fine but not published (blessing: the candidate scored below the served version), 75
another process is working in the run directory (nothing done; try later), 143 stopped by SIGTERM (after a
checkpoint where the stage has them; re-run to continue).
"""

from __future__ import annotations

import argparse
import errno
import logging
import re
import sys
from pathlib import Path

import pipeline  # noqa: F401  (sets TensorFlow's environment first)
from pipeline.core import config as config_lib
from pipeline.core import guards, job, preemption, tf_logs
from pipeline.core.rundir import RunDir, RunLocked

log = logging.getLogger("pipeline")
EXIT_LOCKED = 75  # sysexits' EX_TEMPFAIL: nothing was done, try again later
EXIT_NOT_PUBLISHED = 3  # trained and evaluated fine; blessing kept the candidate from the serving base


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    # TensorFlow's own logging, off the console unless asked for (pipeline/core/tf_logs.py).
    loud = argparse.ArgumentParser(add_help=False)
    loud.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's own log lines (TF_CPP_MIN_LOG_LEVEL set by you is respected either way)",
    )
    run_p = sub.add_parser("run", parents=[loud], help="train, evaluate and export from a config file")
    run_p.add_argument("config", help="YAML config, e.g. configs/cartpole.yaml")
    run_p.add_argument("--run-dir", help="output directory (default: runs/<config name>)")
    run_p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        dest="overrides",
        help="override one config value; repeatable",
    )
    check_p = sub.add_parser(
        "check", help="validate a config (exit 0 or 2) and print it resolved, every key documented; runs nothing"
    )
    check_p.add_argument("config")
    check_p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", dest="overrides")
    for name, text in (
        ("evaluate", "evaluate the latest checkpoint of a run directory"),
        ("export", "export the latest checkpoint of a run directory for TF Serving"),
    ):
        p = sub.add_parser(name, parents=[loud], help=text)
        p.add_argument("run_dir")
    launch_p = sub.add_parser(
        "launch", parents=[loud], help="run one config as N workers on this host (multi-worker training)"
    )
    launch_p.add_argument("--workers", type=int, required=True)
    launch_p.add_argument("config")
    launch_p.add_argument("--run-dir")
    launch_p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", dest="overrides")
    status_p = sub.add_parser("status", help="where a run directory stands, or what a serving base holds")
    status_p.add_argument("path", help="a run directory or an export.base_dir")
    status_p.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser(
        "reference",
        help="print the configuration reference (every task's keys, defaults, allowed "
        "values) as Markdown: docs/configuration.md",
    )
    args = parser.parse_args(argv)
    if args.command == "status":
        return _status(Path(args.path), args.json)
    if args.command == "reference":
        print(config_lib.reference(), end="")
        return 0
    if args.command == "launch":
        from pipeline.core.launch import launch

        tf_logs.configure(args.verbose)

        run_dir = args.run_dir or str(Path("runs") / Path(args.config).stem)
        return launch(args.workers, [args.config, "--run-dir", run_dir, *(f"--set={o}" for o in args.overrides)])
    # Our stages log at INFO; libraries only warnings (TensorFlow's checkpoint and SavedModel code log at INFO).
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO)
    preemption.install()
    try:
        cfg = None
        if args.command in ("check", "run"):
            cfg = config_lib.load(args.config, args.overrides)
            job.preflight(cfg)
        if args.command == "check":
            print(config_lib.annotated_yaml(cfg), end="")
            return 0
        run_dir = RunDir(Path(args.run_dir or Path("runs") / Path(args.config).stem))
        tf_logs.configure(args.verbose)
        tf_logs.import_tensorflow()
        metrics = job.run(args.command, cfg, run_dir)
    except config_lib.ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except RunLocked as e:
        log.error("%s: %s", args.command, e)
        return EXIT_LOCKED
    except guards.RunError as e:  # bad numbers from a reward function, an environment or an update: no traceback
        log.error("%s failed: %s", args.command, e)
        return 1
    except preemption.Preempted as e:
        log.warning("%s: %s; re-run the same command to continue", args.command, e)
        return preemption.EXIT_CODE
    except Exception as e:  # a failed batch job must say why, then exit non-zero
        full = _disk_full(e)
        if type(e).__name__ == "UnavailableError" and "Collective ops is aborted" in str(e):
            log.error(
                "%s failed: another worker of this run stopped or cannot be reached (%s). Nothing past the "
                "last checkpoint is kept; start every worker's command again to continue from it",
                args.command,
                str(e).split("\n")[0][:300],
            )
        elif full:
            log.error(
                "%s failed: no space left on the device holding %s. Nothing half-written is left where a "
                "resume or a server reads; free space and run the same command again to continue from the "
                "last checkpoint",
                args.command,
                full,
            )
        else:
            log.exception("%s failed", args.command)
        return 1
    if metrics.get("distribute.worker"):  # a worker beside the chief: the chief reports the run
        return 0
    print(
        f"run directory: {run_dir.root}\n"
        f"tensorboard:   tensorboard --logdir {run_dir.root / 'tb'}\n"
        f"metrics:       {run_dir.metrics_path}"
    )
    if args.command in ("run", "export") and metrics.get("export.published") is False:
        print(
            f"not published: {metrics['bless.reason']} (candidate and its NOT_BLESSED marker in "
            f"{run_dir.root / 'candidate'})"
        )
        return EXIT_NOT_PUBLISHED
    if "export.path" in metrics:
        print(f"export:        {metrics['export.path']}\nmodels.config: {metrics['export.models_config']}")
    return 0


def _disk_full(error: BaseException) -> str | None:
    """The path a write failed on for want of space (an OSError's ENOSPC, or TensorFlow's ResourceExhaustedError
    from a checkpoint or SavedModel write, which names its file), found along the exception's causes; else None."""
    while error is not None:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return error.filename or str(error)
        text = str(error)
        if type(error).__name__ == "ResourceExhaustedError" and "No space left on device" in text:
            match = re.search(r"(/\S+); No space left on device", text)
            return match.group(1) if match else text
        error = error.__cause__ or error.__context__
    return None


def _status(path: Path, as_json: bool) -> int:
    from pipeline.core import status

    try:
        described = status.describe(path)
    except (FileNotFoundError, config_lib.ConfigError) as e:
        print(f"status: {e}", file=sys.stderr)
        return 2
    print((status.as_json if as_json else status.as_text)(described), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
