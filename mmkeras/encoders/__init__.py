"""Per-modality encoders: raw-but-standardised inputs in, fixed-size embeddings out."""

from mmkeras.encoders.image import ImageEncoder
from mmkeras.encoders.spectrogram import SpectrogramEncoder
from mmkeras.encoders.summary import SummaryFeatures
from mmkeras.encoders.text import TextEncoder
from mmkeras.encoders.timeseries import TimeSeriesEncoder

__all__ = [
    "ImageEncoder",
    "SpectrogramEncoder",
    "SummaryFeatures",
    "TextEncoder",
    "TimeSeriesEncoder",
]
