"""The config sections every task has: export (TF Serving, blessing) and distribute (tf.distribute)."""

from __future__ import annotations

import dataclasses

from pipeline.core.schema import option


@dataclasses.dataclass
class ExportConfig:
    model_name: str | None = option(
        None,
        "TF Serving model name, also the model's folder under the base and its REST path segment; null: the "
        "environment id, lower-cased (gym) or lm_policy (lm).",
        pattern=(
            r"[A-Za-z0-9][A-Za-z0-9_.-]*",
            "letters, digits, '_', '-' and '.', beginning with a letter or digit (no '/' or space)",
        ),
    )
    version: int | None = option(
        None, "Version directory; null takes the next integer after the newest (TF Serving serves the highest).", low=1
    )
    base_dir: str | None = option(
        None,
        "A TF Serving model base shared by runs (a nightly job's): versions rise "
        "across runs, numbered under a file lock, with a models.config there; null: "
        "RUN_DIR/export.",
    )
    keep_versions: int | None = option(
        None,
        "After publishing, keep only the newest this-many versions of the "
        "model (never the one just published); null: keep all.",
        low=1,
    )
    bless_tolerance: float | None = option(
        None,
        "Blessing: publish only if the candidate scores at least the version now served minus this, both "
        "scored now on the same work (gym: mean greedy return on the evaluation episodes; lm: mean "
        "reward.function on the held-out evaluation prompts, one sampling seed); not published: exit 3. "
        "null (and bless_floor null): publish every run.",
        low=0.0,
    )
    bless_floor: float | None = option(
        None,
        "Blessing: publish only if the candidate scores at least this (also "
        "when nothing is served yet); null: no floor.",
    )


@dataclasses.dataclass
class DistributeConfig:
    strategy: str = option(
        "auto",
        "tf.distribute engine: none (one device), mirrored (every GPU of this host; on a "
        "CPU-only host, cpu_replicas logical CPUs), multi_worker (one process per host, the "
        "cluster from TF_CONFIG or Slurm); auto: multi_worker when TF_CONFIG names a cluster, "
        "mirrored when several GPUs are visible, else none. Batch sizes in this config are "
        "totals, split over the replicas.",
        choices=["auto", "none", "mirrored", "multi_worker"],
    )
    cpu_replicas: int = option(
        2,
        "With strategy mirrored and no GPU: the host's CPU split into this many logical "
        "devices (to try data parallelism, and for tests; no faster than one).",
        low=1,
        high=64,
    )
