"""Serving: SavedModel export for TF Serving and its out-of-process validation."""

# accepted input range: the training range widened by this many spans on each side (here, not
# in signature.py, so that ``python -m mmkeras.export --help`` needs no TensorFlow)
RANGE_MARGIN = 2.0
