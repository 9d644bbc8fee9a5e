"""Batched predictions of a raw-input model with explicit presence flags.

Every ``<modality>_present`` input of the model is always fed (1 = present, 0 = absent, the same
for all examples), so one traced predict function serves clean, corrupted and missing-modality
passes alike.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from mmkeras.models.preprocessor import PRESENT_SUFFIX


def predict(
    model: keras.Model,
    inputs: dict[str, np.ndarray],
    absent: tuple[str, ...] = (),
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """The model's outputs (``probabilities``, ``modality_weights`` if any) as NumPy arrays.

    ``inputs`` maps each modality to its raw examples; the modalities named in ``absent`` get
    ``<modality>_present = 0``, the others 1.

    Example:
        out = predict(model, {"audio": waves, "image": pixels}, absent=("audio",))
        out["probabilities"].argmax(-1)
    """
    n = len(next(iter(inputs.values())))
    dtypes = {t.name: t.dtype for t in model.inputs}
    feed: dict[str, np.ndarray] = {}
    for name, values in inputs.items():
        dtype = dtypes.get(name, "string")
        feed[name] = values if dtype == "string" else np.asarray(values, dtype=dtype)
    for name, dtype in dtypes.items():
        if name.endswith(PRESENT_SUFFIX):
            flag = 0.0 if name[: -len(PRESENT_SUFFIX)] in absent else 1.0
            feed[name] = np.full((n, 1), flag, dtype=dtype)
    unknown = sorted(set(absent) - {n[: -len(PRESENT_SUFFIX)] for n in dtypes
                                     if n.endswith(PRESENT_SUFFIX)})
    if unknown:
        raise ValueError(f"the model has no presence input for {unknown}; "
                         f"its inputs are {sorted(dtypes)}")
    outputs = model.predict(tf.data.Dataset.from_tensor_slices(feed).batch(batch_size),
                            verbose=0)
    if not isinstance(outputs, dict):
        outputs = {"probabilities": outputs}
    return {k: np.asarray(v) for k, v in outputs.items()}
