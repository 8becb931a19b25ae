"""Data sets: ``UnlearningDataset`` for your own data, and loaders for benchmark data."""
from ..unlearning_dataset import UnlearningDataset, check_disjoint, dataset_labels
from .tofu import TOFUDataset, TOFURequest, load_idk, load_tofu, tofu_request
from ..vision import FASHION_MNIST_CLASSES, load_digits, load_fashion_mnist, load_fashion_mnist_small

__all__ = ["TOFUDataset", "TOFURequest", "load_idk", "load_tofu", "tofu_request", "UnlearningDataset", "check_disjoint", "dataset_labels", "load_digits", "load_fashion_mnist",
           "FASHION_MNIST_CLASSES", "load_fashion_mnist_small"]
