"""Export a trained model as a TF Serving SavedModel whose signature takes raw inputs.

Layout: ``<export_root>/<model_name>/<version>/`` (``saved_model.pb``, ``variables/``,
``assets/``), the directory structure TF Serving's ``--model_base_path`` expects.

The ``serving_default`` signature takes one tensor per modality, named after it, in the raw form of
:class:`mmkeras.data.dataset.ModalitySpec` (waveforms, sensor windows, note strings). Outputs:
``probabilities`` float32 ``[batch, classes]``, ``class_id`` int64 ``[batch]`` and ``class_name``
string ``[batch]``. All preprocessing (log-mel, standardisation, tokenisation) is inside the graph
and uses core TensorFlow ops only, so the model loads with plain ``tf.saved_model.load`` and in
TF Serving, with no Python or Keras code.

Example:
    >>> export_saved_model(model, dataset.modalities, dataset.class_names, "runs/x/export",
    ...                    "machine", 1)                                      # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from mmkeras.data.dataset import ModalitySpec


def export_saved_model(
    model: keras.Model,
    modalities: dict[str, ModalitySpec],
    class_names: list[str],
    export_root: str | Path,
    model_name: str,
    version: int,
) -> Path:
    """Write the SavedModel to ``export_root/model_name/version`` and return that path."""
    path = Path(export_root) / model_name / str(int(version))
    if path.exists():
        raise FileExistsError(f"{path} exists; TF Serving versions are immutable, bump the version")
    names = tf.constant(list(class_names))
    signature = {name: spec.tensor_spec() for name, spec in modalities.items()}

    def serve(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        probabilities = model(inputs, training=False)
        class_id = tf.argmax(probabilities, axis=-1)
        return {
            "probabilities": probabilities,
            "class_id": class_id,
            "class_name": tf.gather(names, class_id),
        }

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=[signature])
    archive.write_out(str(path), verbose=False)
    return path
