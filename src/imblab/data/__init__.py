"""Imbalanced MNIST data: sources, imbalance profiles, stratified split, on-device batches."""

from imblab.data.datamodule import MNISTDataModule
from imblab.data.tensors import TensorBatches

__all__ = ["MNISTDataModule", "TensorBatches"]
