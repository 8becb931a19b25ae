"""Data: forget/retain splits and benchmark data loaders (see ``erasus.data.datasets``)."""
from .datasets import UnlearningDataset, load_digits, load_fashion_mnist
from .splits import Splits

__all__ = ["Splits", "UnlearningDataset", "load_digits", "load_fashion_mnist"]
