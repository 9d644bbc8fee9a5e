"""mmkeras: multimodal recordings to trained, servable Keras fusion models."""

from mmkeras.paths import resolve_env

__version__ = "0.1.0"

resolve_env()  # folder variables become absolute once, before anything changes directory
