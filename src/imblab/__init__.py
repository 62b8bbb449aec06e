"""imblab: image classification on imbalanced data with streaming per-class metrics."""

__version__ = "0.1.0"
