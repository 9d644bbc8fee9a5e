"""The task model: a backbone plus prediction heads, trained on preprocessed features.

Like KerasHub's ``Task``: ``FusionClassifier(backbone, num_classes)`` adds the classification head
(output ``probabilities``) and optional extra heads (multi-task: other classifications or
regressions, each a named output with its own loss weight), and passes the backbone's
``modality_weights`` through when the fusion returns them. The loss is
``sum_i alpha_i L_i + beta ||h||^2`` with ``h`` the fused representation
(``representation_penalty`` = beta, averaged over the batch).

Unimodal heads (``tasks={"label": {"unimodal_loss_weight": gamma}}``, intermediate fusions):
one more classification head per modality on its encoder's pooled output, each trained on the
main label with weight gamma, so every encoder is discriminative on its own. They exist only in
:meth:`FusionClassifier.training_model` (outputs ``<modality>_unimodal``); predictions,
``model.keras`` and the export are as without them. A single-modality model gets none (its main
head already is that modality's head). Under a fusion that reads no pooled vector
(``cross_attention``) they need ``FusionBackbone(keep_pooled=True)``, which
:func:`~mmkeras.models.build_models` sets when :func:`has_unimodal_heads`.

Example:
    >>> from mmkeras.models.backbone import FusionBackbone
    >>> backbone = FusionBackbone({"acc": {"input_kind": "sequence", "shape": [64, 3]}},
    ...                           embed_dim=8)
    >>> task = FusionClassifier(backbone, num_classes=3,
    ...                         tasks={"speed": {"type": "regression", "loss_weight": 0.5}})
    >>> sorted(task.output), task.losses_and_weights()[1]
    (['probabilities', 'speed'], {'probabilities': 1.0, 'speed': 0.5})
"""

from __future__ import annotations

from typing import Any

import keras

from mmkeras.models.backbone import FusionBackbone

TASK_TYPES = ("classification", "regression")
PRIMARY = "probabilities"
UNIMODAL_SUFFIX = "_unimodal"


@keras.saving.register_keras_serializable(package="mmkeras")
class FusionClassifier(keras.Model):
    """Backbone + classification head (+ optional extra task heads).

    Args:
        backbone: a :class:`FusionBackbone`.
        num_classes: classes of the main label (output ``probabilities``).
        tasks: extra heads ``{name: {"type": "classification"|"regression",
            "num_classes": K (classification), "loss_weight": alpha}}``; a ``label`` entry sets
            only the main task's loss weight and ``unimodal_loss_weight`` (the weight of the
            unimodal heads; 0, the default, adds none).
        dropout: dropout before the heads.
        representation_penalty: beta, weight of the mean squared norm of the fused vector.
    """

    def __init__(
        self,
        backbone: FusionBackbone,
        num_classes: int,
        tasks: dict[str, dict[str, Any]] | None = None,
        dropout: float = 0.3,
        representation_penalty: float = 0.0,
        **kwargs: Any,
    ) -> None:
        tasks = {k: dict(v) for k, v in (tasks or {}).items()}
        for name, t in tasks.items():
            if name != "label" and t.get("type", "classification") not in TASK_TYPES:
                raise ValueError(f"task {name!r}: type must be one of {TASK_TYPES}")
            if name != "label" and backbone.fusion_level == "late":
                raise ValueError(f"task {name!r}: extra tasks need an early or intermediate "
                                 f"fusion; {backbone.fusion!r} is a late fusion")
            if name != "label" and t.get("unimodal_loss_weight"):
                raise ValueError(f"task {name!r}: only the main task ('label') has unimodal "
                                 f"heads")
        unimodal_weight = float(tasks.get("label", {}).get("unimodal_loss_weight", 0.0))
        if unimodal_weight and backbone.fusion_level != "intermediate":
            raise ValueError(f"unimodal heads need an intermediate fusion (one encoder per "
                             f"modality), and fusion {backbone.fusion!r} is "
                             f"{backbone.fusion_level}: set tasks.label.unimodal_loss_weight=0 "
                             f"or choose an intermediate fusion")
        if not has_unimodal_heads(tasks, len(backbone.modalities)):
            unimodal_weight = 0.0
        unpooled = [m for m in backbone.modalities if unimodal_weight
                    and not backbone.get_layer(f"{m}_encoder").return_pooled]
        if unpooled:
            raise ValueError(f"unimodal heads read each encoder's pooled output, but the "
                             f"encoders of {unpooled} return none under fusion "
                             f"{backbone.fusion!r}: build the backbone with keep_pooled=True")
        inputs = backbone.input
        if unimodal_weight:  # the backbone's graph, also returning each encoder's pooled output
            source = keras.Model(inputs, {**backbone.output, **{
                m + UNIMODAL_SUFFIX: _pooled(backbone.get_layer(f"{m}_encoder"))
                for m in backbone.modalities}}, name="backbone_and_encoders")
            out = source(inputs)
        else:
            out = backbone(inputs)
        fused = out["fused"]
        outputs: dict[str, Any] = {}
        if backbone.fusion_level == "late":  # the fusion already combined class probabilities
            outputs[PRIMARY] = keras.layers.Activation("linear", dtype="float32",
                                                       name=PRIMARY)(fused)
        else:
            if representation_penalty:
                fused = keras.layers.ActivityRegularization(
                    l2=representation_penalty, name="representation_penalty")(fused)
            fused = keras.layers.Dropout(dropout, name="head_dropout")(fused)
            outputs[PRIMARY] = self._head(fused, PRIMARY, num_classes, backbone.embed_dim)
            for name, t in tasks.items():
                if name == "label":
                    continue
                units = t.get("num_classes", 1) if t.get("type") != "regression" else 1
                outputs[name] = self._head(fused, name, units, backbone.embed_dim,
                                           regression=t.get("type") == "regression")
        unimodal = {}
        for m in backbone.modalities if unimodal_weight else ():
            name = m + UNIMODAL_SUFFIX
            x = keras.layers.Dropout(dropout, name=f"{name}_dropout")(out[name])
            unimodal[name] = self._head(x, name, num_classes, backbone.embed_dim)
        if "modality_weights" in out:
            outputs["modality_weights"] = keras.layers.Activation(
                "linear", dtype="float32", name="modality_weights")(out["modality_weights"])
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._unimodal_outputs = unimodal
        self.unimodal_loss_weight = unimodal_weight
        self.backbone = backbone
        self.num_classes = num_classes
        self.tasks = tasks
        self.dropout = dropout
        self.representation_penalty = representation_penalty

    @staticmethod
    def _head(x, name: str, units: int, width: int, regression: bool = False):
        x = keras.layers.Dense(width, activation="relu", name=f"{name}_dense")(x)
        return keras.layers.Dense(units, activation=None if regression else "softmax",
                                  dtype="float32", name=name)(x)

    def training_model(self) -> keras.Model:
        """The same layers without the ``modality_weights`` output (it has no target), plus the
        unimodal heads' outputs if any (scored against the main label's target).

        Compile and fit this one; weights are shared, so training it trains the task.
        """
        outputs = {k: v for k, v in self.output.items() if k != "modality_weights"}
        if not self._unimodal_outputs:
            return keras.Model(self.input, outputs, name=f"{self.name}_training")
        return _UnimodalTraining(self.input, {**outputs, **self._unimodal_outputs},
                                 name=f"{self.name}_training")

    def losses_and_weights(self) -> tuple[dict[str, Any], dict[str, float]]:
        """Keras ``loss`` and ``loss_weights`` dicts for ``compile`` (weights are not trained)."""
        losses: dict[str, Any] = {PRIMARY: "sparse_categorical_crossentropy"}
        weights = {PRIMARY: float(self.tasks.get("label", {}).get("loss_weight", 1.0))}
        for name in self._unimodal_outputs:
            losses[name] = "sparse_categorical_crossentropy"
            weights[name] = self.unimodal_loss_weight
        for name, t in self.tasks.items():
            if name == "label":
                continue
            regression = t.get("type") == "regression"
            losses[name] = "mse" if regression else "sparse_categorical_crossentropy"
            weights[name] = float(t.get("loss_weight", 1.0))
        return losses, weights

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "tasks": self.tasks,
            "dropout": self.dropout,
            "representation_penalty": self.representation_penalty,
        }

    @classmethod
    def from_config(cls, config: dict) -> FusionClassifier:
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def has_unimodal_heads(tasks: dict[str, dict[str, Any]] | None, num_modalities: int) -> bool:
    """Whether a task with ``tasks`` on ``num_modalities`` modalities gets unimodal heads."""
    weight = float((tasks or {}).get("label", {}).get("unimodal_loss_weight", 0.0))
    return bool(weight) and num_modalities > 1  # one modality: its main head is the unimodal head


def _pooled(encoder: keras.layers.Layer):
    """The ``pooled`` output of an encoder called once in a functional graph."""
    flat = keras.tree.flatten(encoder.output)
    order = keras.tree.flatten(encoder.outputs("pooled", "tokens", "mask"))
    return flat[order.index("pooled")]


class _UnimodalTraining(keras.Model):
    """A training model whose ``<modality>_unimodal`` outputs are scored on the main target."""

    def _targets(self, y, sample_weight):
        """``y`` (and dict ``sample_weight``) with the main entry copied to each head."""
        heads = [k for k in self.output if k.endswith(UNIMODAL_SUFFIX)]
        main = y[PRIMARY] if isinstance(y, dict) else y
        y = {**(y if isinstance(y, dict) else {PRIMARY: y}), **{k: main for k in heads}}
        if isinstance(sample_weight, dict):
            sample_weight = {**sample_weight, **{k: sample_weight.get(PRIMARY) for k in heads}}
        return y, sample_weight

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        y, sample_weight = self._targets(y, sample_weight)
        return super().compute_loss(x, y, y_pred, sample_weight, training)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        y, sample_weight = self._targets(y, sample_weight)
        return super().compute_metrics(x, y, y_pred, sample_weight)
