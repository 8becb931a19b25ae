"""Data: forget/retain splits and benchmark data loaders (see ``erasus.data.datasets``)."""
from .datasets import UnlearningDataset, load_digits, load_fashion_mnist

__all__ = ["UnlearningDataset", "load_digits", "load_fashion_mnist"]
