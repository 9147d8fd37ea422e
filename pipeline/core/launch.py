"""`python -m pipeline launch --workers N CONFIG [run options]`: N workers of one run on this host.

Each worker is the same `python -m pipeline run` command with a TF_CONFIG of its own (a cluster of N workers on
free loopback ports), as a cluster manager would start them on N hosts. Their output is prefixed with the worker's
index, and TensorFlow's thread pools share the host's cores out among them. When one fails, the others are
stopped (SIGTERM: they checkpoint and exit) so none waits forever in a collective; SIGTERM to the launcher goes to
every worker. The exit code is the chief's, or the first failure's.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

GRACE_S = 60  # after SIGTERM, how long a worker may take to checkpoint before it is killed


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(ports: list[int], index: int) -> str:
    return json.dumps(
        {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
    )


def launch(workers: int, run_args: list[str]) -> int:
    ports = free_ports(workers)
    command = [sys.executable, "-m", "pipeline", "run", *run_args, "--set", "distribute.strategy=multi_worker"]
    # The host's cores shared out, unless set: N workers each with TensorFlow's default intra-op pool (one thread
    # per core) oversubscribe them (benchmarks/README.md). The inter-op pool is one thread (pipeline/__init__.py).
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    env = {"TF_NUM_INTRAOP_THREADS": threads, **os.environ}
    procs = [
        subprocess.Popen(
            command,
            env={**env, "TF_CONFIG": tf_config(ports, i)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        for i in range(workers)
    ]
    printers = [threading.Thread(target=_prefix, args=(i, p.stdout), daemon=True) for i, p in enumerate(procs)]
    for printer in printers:
        printer.start()
    previous = signal.signal(signal.SIGTERM, lambda *_: _stop(procs))
    try:
        failed = None
        while any(p.poll() is None for p in procs):
            failed = failed or next((p for p in procs if p.poll() not in (None, 0)), None)
            if failed is not None:
                _stop(procs)
                break
            time.sleep(0.2)
        deadline = time.monotonic() + GRACE_S
        for p in procs:
            try:
                p.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    for printer in printers:
        printer.join(timeout=5)
    failed = failed or next((p for p in procs if p.returncode != 0), None)
    return failed.returncode if failed is not None else procs[0].returncode


def _stop(procs) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)


def _prefix(index: int, stream) -> None:
    for line in stream:
        sys.stdout.write(f"[worker {index}] {line}")
        sys.stdout.flush()
