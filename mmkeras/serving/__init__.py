"""Serving: SavedModel export for TF Serving and its out-of-process validation."""
