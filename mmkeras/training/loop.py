"""A custom training loop under ``strategy.run``, for strategies Keras's ``fit`` cannot drive.

Keras 3.15's ``model.fit`` fails under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585);
:func:`fit_custom` trains the same compiled model with the same callbacks under any
``tf.distribute`` strategy and returns a ``History`` like ``fit``.

How a step is distributed:

* **Data.** Each dataset is batched with the *global* batch size and distributed with
  ``strategy.experimental_distribute_dataset``, which splits every global batch across the
  replicas (per-replica batch = global batch / replicas). The auto-shard policy is set to
  ``DATA`` on purpose: the trainer's datasets come from in-memory arrays, not files, so the
  ``FILE`` policy (what ``AUTO`` tries first) has nothing to split and would fall back with a
  warning. Under ``DATA`` every worker runs the whole pipeline and keeps its own share of each
  global batch, so the workers must see the same order: shuffle with a fixed seed (the trainer
  does). Workers that run out of data first get empty batches, not a hang.
* **Loss.** The compiled loss (``model.compute_loss``: loss dict, loss weights, the model's
  own ``add_loss`` terms) is taken as the mean over the replica's examples and weighted by the
  replica's share of the global batch (``n_replica / n_global``, ``n_global`` summed over all
  replicas), so the gradients, summed across replicas and workers by the optimizer's
  all-reduce, are the gradients of the global-batch mean, even for an uneven last batch.
* **Metrics.** Keras metric variables are sync-on-read sums: each replica updates its own,
  reading a result outside the step sums them over replicas and workers.
* **Non-trainable state.** Keras creates ``BatchNormalization``'s moving mean and variance
  without an aggregation, so each replica (and worker) updates its own copy from its own
  examples. After every training epoch they are replaced by their mean over all replicas:
  the moving average is linear, so this equals averaging after every step, and every worker
  then validates and saves the same model.

Example:
    strategy = tf.distribute.MirroredStrategy()
    with strategy.scope():
        model = build_model()
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    history = fit_custom(model, train_ds, validation_data=val_ds, epochs=3, strategy=strategy)
    history.history["val_accuracy"]
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass

import keras
import tensorflow as tf

# per model: (strategy, train step, test step, state sync), reused by later fit_custom calls
_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class EpochTiming:
    """Wall-clock of one training epoch (validation excluded) and its input waits."""

    epoch: int
    steps: int
    examples: int
    seconds: float
    input_seconds: float

    @property
    def input_fraction(self) -> float:
        """Share of the epoch spent blocked in ``next(iterator)``."""
        return self.input_seconds / self.seconds if self.seconds else 0.0


class TrainingHistory(keras.callbacks.History):
    """``keras.callbacks.History`` plus ``timing``: one :class:`EpochTiming` per epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.timing: list[EpochTiming] = []


def distribute(dataset: tf.data.Dataset, strategy: tf.distribute.Strategy):
    """``dataset`` (batched with the global batch size) split across ``strategy``'s replicas.

    The auto-shard policy is ``DATA`` (see the module docstring for why).
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def _batch_size(x) -> tf.Tensor:
    return tf.shape(tf.nest.flatten(x)[0])[0]


def _build(model: keras.Model, dataset: tf.data.Dataset, strategy: tf.distribute.Strategy):
    """Create the optimizer, loss-tracker and metric variables in cross-replica context.

    Variables may not be created inside ``strategy.run``; one eager forward pass on a batch of
    one zero example of the dataset's spec builds everything the step will touch (the dataset
    itself is not read: a partly read ``cache()`` would be truncated), then the metrics are
    reset.
    """
    def zeros(spec: tf.TensorSpec) -> tf.Tensor:
        shape = [1 if d is None else d for d in spec.shape]
        return tf.fill(shape, "") if spec.dtype == tf.string else tf.zeros(shape, spec.dtype)

    with strategy.scope():
        x, y = tf.nest.map_structure(zeros, dataset.element_spec)
        y_pred = model(x, training=False)
        model.compute_loss(x, y, y_pred, training=False)
        model.compute_metrics(x, y, y_pred)
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.reset_metrics()


def _loss_tracker(model: keras.Model) -> keras.metrics.Metric:
    return next(m for m in model.metrics if m.name == "loss")


def _steps(model: keras.Model, strategy: tf.distribute.Strategy):
    """The distributed train and test steps (each returns the global number of examples) and
    the step averaging float non-trainable variables over replicas."""
    tracker = _loss_tracker(model)

    def forward(x, y, training: bool):
        y_pred = model(x, training=training)
        context = tf.distribute.get_replica_context()
        # compute_loss divides by the number of replicas inside strategy.run: undo it
        loss = model.compute_loss(x, y, y_pred, training=training)
        local = loss * tf.cast(context.num_replicas_in_sync, loss.dtype)
        n = _batch_size(x)
        n_global = context.all_reduce("sum", n)
        tracker.update_state(local, sample_weight=n)
        share = tf.cast(n, local.dtype) / tf.cast(tf.maximum(n_global, 1), local.dtype)
        return y_pred, local * share, n_global

    def train_replica(x, y):
        with tf.GradientTape() as tape:
            y_pred, loss, n_global = forward(x, y, training=True)
            scaled = model.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        model.optimizer.apply(grads, model.trainable_variables)
        model.compute_metrics(x, y, y_pred)
        return n_global

    def test_replica(x, y):
        y_pred, _, n_global = forward(x, y, training=False)
        model.compute_metrics(x, y, y_pred)
        return n_global

    state = [v for v in model.non_trainable_variables if "float" in str(v.dtype)]

    def sync_replica():
        context = tf.distribute.get_replica_context()
        for v in state:
            v.assign(context.all_reduce("mean", tf.identity(v.value)))
        return tf.constant(0)

    def wrap(replica_fn):
        @tf.function(reduce_retracing=True)
        def step(batch=()):
            n = strategy.run(replica_fn, args=batch)
            return strategy.experimental_local_results(n)[0]

        return step

    return wrap(train_replica), wrap(test_replica), wrap(sync_replica)


def _results(model: keras.Model) -> dict[str, float]:
    """Metric results summed over replicas and workers (read in cross-replica context)."""
    return {k: float(v) for k, v in model.get_metrics_result().items()}


def fit_custom(
    model: keras.Model,
    train_data: tf.data.Dataset,
    *,
    validation_data: tf.data.Dataset | None = None,
    epochs: int = 1,
    initial_epoch: int = 0,
    verbose: int = 0,
    callbacks: list[keras.callbacks.Callback] | None = None,
    strategy: tf.distribute.Strategy | None = None,
) -> TrainingHistory:
    """Train a compiled ``model`` like ``model.fit``, with a custom step under ``strategy.run``.

    Args:
        model: compiled (under ``strategy.scope()``) Keras model.
        train_data: ``(inputs, targets)`` batches of the global batch size.
        validation_data: the same for validation, evaluated after every epoch (``val_`` logs).
        epochs: last epoch (exclusive).
        initial_epoch: first epoch (to resume a run), as with ``fit``.
        verbose: 0 silent, 1 progress bar, 2 one line per epoch.
        callbacks: Keras callbacks; their train, epoch and batch hooks are called as ``fit``
            calls them, and ``model.stop_training`` ends training after the epoch.
        strategy: the distribution strategy (default: the current one).

    Returns:
        a :class:`TrainingHistory` (``.history`` dict of lists, ``.timing`` per epoch).
    """
    strategy = strategy or tf.distribute.get_strategy()
    cached = _STEPS.get(model)
    if cached is None or cached[0] is not strategy:  # traced once per model, as fit does
        _build(model, train_data, strategy)
        cached = _STEPS[model] = (strategy, *_steps(model, strategy))
    _, train_step, test_step, sync_state = cached
    train_dist = distribute(train_data, strategy)
    val_dist = distribute(validation_data, strategy) if validation_data is not None else None
    history = TrainingHistory()
    steps = int(train_data.cardinality())
    cbs = keras.callbacks.CallbackList(
        [*(callbacks or []), history], add_progbar=verbose != 0, model=model,
        verbose=verbose, epochs=epochs, steps=steps if steps > 0 else None,
    )
    model.stop_training = False
    cbs.on_train_begin()
    logs: dict[str, float] = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        cbs.on_epoch_begin(epoch)
        start = time.perf_counter()
        waited, counts = 0.0, []
        iterator = iter(train_dist)
        while True:
            t = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                break
            waited += time.perf_counter() - t
            cbs.on_train_batch_begin(len(counts))
            counts.append(train_step(batch))
            cbs.on_train_batch_end(len(counts) - 1, _results(model) if verbose == 1 else None)
        seconds = time.perf_counter() - start
        sync_state()
        logs = _results(model)
        history.timing.append(EpochTiming(epoch, len(counts), int(sum(int(c) for c in counts)),
                                          seconds, waited))
        if val_dist is not None:
            model.reset_metrics()
            cbs.on_test_begin()
            for batch in val_dist:
                test_step(batch)
            val_logs = _results(model)
            cbs.on_test_end(val_logs)
            logs.update({f"val_{k}": v for k, v in val_logs.items()})
        cbs.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    cbs.on_train_end(logs)
    return history
