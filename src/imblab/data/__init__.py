"""Imbalanced MNIST data: sources, imbalance profiles, stratified split, tensor loaders."""

from imblab.data.datamodule import MNISTDataModule
from imblab.data.tensors import BatchTensorDataset, UnpaddedDistributedSampler, collate_batch

__all__ = ["BatchTensorDataset", "MNISTDataModule", "UnpaddedDistributedSampler", "collate_batch"]
