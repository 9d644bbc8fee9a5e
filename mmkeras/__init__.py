"""mmkeras: multimodal recordings to trained, servable Keras fusion models."""

__version__ = "0.1.0"
