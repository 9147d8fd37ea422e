"""tf.distribute for the learners: which strategy a run trains under, which worker this process is, and the
collectives the train loop needs beyond the gradients' (a rollout gathered from every worker, a flag any worker
may raise).

So that R replicas compute what one device computes, statistics are sums and counts reduced across replicas and
divided once (a mean taken per replica and then averaged equals the global mean only when every replica holds
the same number of items), or are computed on the gathered whole.
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from pipeline.core.sections import DistributeConfig


def chosen(settings: DistributeConfig) -> str:
    """ "none", "mirrored" or "multi_worker": what `auto` means on this host."""
    if settings.strategy != "auto":
        return settings.strategy
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    if sum(len(tasks) for tasks in cluster.values()) > 1:
        return "multi_worker"
    return "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "none"


def strategy(settings: DistributeConfig) -> tf.distribute.Strategy | None:
    """The strategy a learner builds its variables under; None for one device. Must run before TensorFlow's
    first op: splitting the CPU into logical devices, and collective ops across workers, are fixed when the
    runtime starts."""
    kind = chosen(settings)
    if kind == "none":
        return None
    if kind == "mirrored":
        if tf.config.list_physical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        _split_cpu(settings.cpu_replicas)
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(settings.cpu_replicas)])
    # One process per host (or per worker), the cluster from TF_CONFIG, else Slurm's environment.
    resolver = None
    if not os.environ.get("TF_CONFIG") and os.environ.get("SLURM_JOB_ID"):
        resolver = tf.distribute.cluster_resolver.SlurmClusterResolver()
    return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)


class Worker(NamedTuple):
    index: int  # this process's; 0 is the chief
    count: int


def worker(strategy_: tf.distribute.Strategy | None) -> Worker:
    """This process's place among the workers; Worker(0, 1) on one host. Worker 0 is the chief: it alone writes the run
    directory (config, TensorBoard, metrics, the export) and holds its lock."""
    if not isinstance(strategy_, tf.distribute.MultiWorkerMirroredStrategy):
        return Worker(0, 1)
    resolver = strategy_.cluster_resolver
    tasks = resolver.cluster_spec().as_dict()
    # With a chief task in the cluster, it is worker 0 and the "worker" tasks follow it.
    index = resolver.task_id + (1 if resolver.task_type == "worker" and "chief" in tasks else 0)
    return Worker(index, len(tasks.get("worker", [])) + len(tasks.get("chief", [])))


def describe(strategy_: tf.distribute.Strategy) -> str:
    """ "2 replicas (this process: /job:worker/.../CPU:0), worker 1 of 2": a stage's first log line under a strategy."""
    index, workers = worker(strategy_)
    return (
        f"{strategy_.num_replicas_in_sync} replicas (this process: {', '.join(strategy_.extended.worker_devices)})"
        + (f", worker {index} of {workers}" if workers > 1 else "")
    )


def gather(strategy_: tf.distribute.Strategy | None, tensors: dict, axes: dict) -> dict:
    """Every worker's tensors concatenated in worker order along axes[name]: what one device would hold. The
    same on every worker afterwards. Identity on one host (its replicas already share the host's arrays).

    Packed into one float64 buffer (exact for float32, booleans and integers below 2^53) for one collective:
    each collective across workers costs milliseconds."""
    if worker(strategy_).count == 1:
        return tensors
    local = len(strategy_.extended.worker_devices)
    arrays = {k: np.moveaxis(np.asarray(v), axes[k], 0) for k, v in tensors.items()}  # the gathered axis first
    rows = {len(a) for a in arrays.values()}
    assert len(rows) == 1, f"gather: the tensors disagree on their gathered axis' length ({rows})"
    packed = np.concatenate([a.reshape(len(a), -1).astype(np.float64) for a in arrays.values()], axis=1)
    # Each local replica contributes an equal slice of this worker's rows, so the gathered rows are in order.
    shares = np.array_split(packed, local)
    values = strategy_.experimental_distribute_values_from_function(
        lambda context: shares[context.replica_id_in_sync_group % local]
    )
    gathered = _collective(
        strategy_, "gather", lambda x: tf.distribute.get_replica_context().all_gather(tf.identity(x), 0)
    )(values)
    gathered = strategy_.experimental_local_results(gathered)[0].numpy()
    out, start = {}, 0
    for k, a in arrays.items():
        width = int(np.prod(a.shape[1:]))
        part = gathered[:, start : start + width].reshape(-1, *a.shape[1:]).astype(a.dtype)
        out[k], start = np.moveaxis(part, 0, axes[k]), start + width
    return out


def broadcast(strategy_: tf.distribute.Strategy | None, arrays: dict) -> dict:
    """The chief's arrays on every worker: what one worker made once, e.g. preference pairs ranked with the
    reward function, shared rather than made again. The others pass arrays of the same names and ranks (empty
    ones will do); what they get back has their dtypes. Two collectives: the shapes, then the values packed as
    float64 (exact for float32 and integers below 2^53), each a sum to which only the chief's first replica adds
    anything but zeros."""
    if worker(strategy_).count == 1:
        return arrays
    names = sorted(arrays)
    rank = [np.ndim(arrays[k]) for k in names]
    chief = worker(strategy_).index == 0
    shapes = [np.shape(arrays[k]) if chief else (0,) * r for k, r in zip(names, rank)]
    shapes = _from_chief(strategy_, np.concatenate([np.asarray(s, np.float64) for s in shapes]))
    shapes = np.split(shapes.astype(np.int64), np.cumsum(rank)[:-1])
    sizes = [int(np.prod(s)) for s in shapes]
    packed = (
        np.concatenate([np.asarray(arrays[k], np.float64).ravel() for k in names])
        if chief
        else np.zeros(sum(sizes), np.float64)
    )
    values = np.split(_from_chief(strategy_, packed) if sum(sizes) else packed, np.cumsum(sizes)[:-1])
    return {k: v.reshape(s).astype(np.asarray(arrays[k]).dtype) for k, v, s in zip(names, values, shapes)}


def _from_chief(strategy_, vector: np.ndarray) -> np.ndarray:
    """A float64 vector's sum over the replicas where only the chief's first replica holds it."""
    return _summed(
        strategy_,
        strategy_.experimental_distribute_values_from_function(
            lambda context: vector if context.replica_id_in_sync_group == 0 else np.zeros_like(vector)
        ),
    )


def _summed(strategy_, values) -> np.ndarray:
    """values (a tensor every replica holds, or one per replica) summed over every replica of every worker."""
    total = _collective(
        strategy_,
        "sum",
        lambda x: tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, tf.identity(x)),
    )(values)
    return strategy_.experimental_local_results(total)[0].numpy()


def any_worker(strategy_: tf.distribute.Strategy | None, flag: bool) -> bool:
    """Whether any worker's flag is set (SIGTERM reached one of them): every worker gets the same answer, so all
    stop at the same step and none waits in a collective for one that left."""
    if worker(strategy_).count == 1:
        return flag
    local = len(strategy_.extended.worker_devices)
    return float(_summed(strategy_, tf.constant(float(flag) / local))) > 0


def barrier(strategy_: tf.distribute.Strategy | None) -> None:
    """Waits for every worker to get here. The others wait for the chief's evaluation and export this way: a
    worker that left first would read as a crashed one in the chief's log (its heartbeats stop)."""
    any_worker(strategy_, False)


def replica_share(tensor, context):
    """This replica's rows of a batch every replica holds: equal contiguous shares, in replica order."""
    size = tf.shape(tensor)[0] // context.num_replicas_in_sync
    return tensor[context.replica_id_in_sync_group * size :][:size]


def all_reduce_sum(context, tensors: list) -> list:
    """Each tensor summed across replicas, as one flat collective (not one per tensor: across workers each costs
    milliseconds); the tensors themselves with one replica. None stays None (the gradient of a variable the loss
    does not reach, e.g. an untied LM head under a reward or value head)."""
    present = [t for t in tensors if t is not None]
    if context.num_replicas_in_sync == 1 or not present:
        return tensors
    flat = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.concat([tf.reshape(t, [-1]) for t in present], 0))
    parts = tf.split(flat, tf.stack([tf.size(t) for t in present]), num=len(present))
    summed = iter(tf.ensure_shape(tf.reshape(part, tf.shape(t)), t.shape) for part, t in zip(parts, present))
    return [None if t is None else next(summed) for t in tensors]


def summed_share(context, gradients_fn, batch: list, *args) -> tuple:
    """The data-parallel heart of a replica's step, in replica context: gradients_fn(*this replica's equal share of
    the batch's rows, *args) -> (gradients, stats, *rest), its gradients and stats then summed across replicas in
    one collective. Returns (gradients, stats, *rest), rest as this replica computed it. A loss that is a sum over
    the share's rows divided by the whole batch's count sums to the batch's mean: R replicas compute what one
    device computes. None rows (an absent field) and None gradients pass through."""
    share = [None if x is None else tf.nest.map_structure(lambda t: replica_share(t, context), x) for x in batch]
    grads, stats, *rest = gradients_fn(*share, *args)
    *grads, stats = all_reduce_sum(context, [*grads, stats])
    return (grads, stats, *rest)


_COMPILED: dict = {}


def _collective(strategy_, name, replica_fn):
    """replica_fn run on every replica, compiled once per strategy and name (what replica_fn does). Collectives
    across workers run in graphs (eagerly, MultiWorkerMirroredStrategy's gather cannot place its result).
    replica_fn copies its inputs with tf.identity first: made inside the replica's function, the copy has the
    replica's device, which the collective needs (the function's inputs have none)."""
    key = (id(strategy_), name)
    if key not in _COMPILED:
        _COMPILED[key] = tf.function(lambda *args: strategy_.run(replica_fn, args), autograph=False)
    return _COMPILED[key]


def _split_cpu(count: int) -> None:
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:  # TensorFlow already started in this process (a second run through the Python API)
        have = len(tf.config.list_logical_devices("CPU"))
        if have < count:
            raise RuntimeError(
                f"distribute.cpu_replicas: {count} logical CPUs asked for, but TensorFlow already "
                f"started in this process with {have}; run in a new process"
            ) from None
