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
    """``mirrored``: all local GPUs, else the CPU(s); ``multi_worker``: from ``TF_CONFIG``;
    ``default``: no distribution.

    Keras 3.15's ``model.fit`` fails under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585);
    ``multi_worker`` is offered for custom loops and future Keras releases, and says so when used.
    """
    if kind == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "default":
        return tf.distribute.get_strategy()
    raise ValueError(f"unknown strategy {kind!r}: use mirrored, multi_worker or default")
