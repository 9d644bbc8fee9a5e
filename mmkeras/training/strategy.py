"""Distribution strategies: MirroredStrategy over local devices by default."""

from __future__ import annotations

import tensorflow as tf


def split_cpu(n: int) -> None:
    """Split the CPU into ``n`` logical devices (call before TensorFlow initialises devices).

    Lets ``MirroredStrategy`` run ``n`` replicas on one CPU, e.g. to test distributed code paths.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)


def get_strategy(kind: str = "mirrored") -> tf.distribute.Strategy:
    """``mirrored``: all local GPUs, else the CPU's logical devices, as replicas;
    ``multi_worker``: from ``TF_CONFIG``; ``default``: no distribution.

    ``mirrored`` with a single device returns the default strategy: a one-replica
    ``MirroredStrategy`` computes the same but adds 40-80 % per step to Keras ``fit`` on a CPU
    (``benchmarks/bench_train.py``).

    Keras 3.15's ``model.fit`` fails under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585):
    train under ``multi_worker`` with :func:`mmkeras.training.loop.fit_custom`. Create it first
    thing in the process, before any other TensorFlow operation.
    """
    if kind == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        if len(devices) == 1:
            return tf.distribute.get_strategy()
        return tf.distribute.MirroredStrategy(devices)
    if kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "default":
        return tf.distribute.get_strategy()
    raise ValueError(f"unknown strategy {kind!r}: use mirrored, multi_worker or default")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process should write run files: the ``chief`` task, else ``worker`` 0.

    Read from the strategy's cluster resolver (``TF_CONFIG``); True for every strategy that is
    not multi-worker, and for a multi-worker strategy without a cluster (one local worker).
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True
    if not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief
