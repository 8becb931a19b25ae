"""Loader helpers shared by selectors, metrics and the trainer."""
from __future__ import annotations

from typing import Iterator, Optional

import numpy as np
from torch.utils.data import DataLoader, Dataset, Subset

from ..core.exceptions import DataError


def as_loader(data, batch_size: int = 128, shuffle: bool = False) -> DataLoader:
    """Accept a DataLoader or a Dataset; always return a DataLoader."""
    if data is None:
        raise DataError("Expected a DataLoader or Dataset, got None.")
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, Dataset) or hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        return DataLoader(data, batch_size=batch_size, shuffle=shuffle)
    raise DataError(f"Expected a torch DataLoader or Dataset, got {type(data).__name__}.")


def ordered_loader(data, batch_size: Optional[int] = None) -> DataLoader:
    """A loader over the same dataset in dataset order (index i is ``dataset[i]``).

    Selectors and per-sample metrics use this so their results index the dataset and do not
    depend on the caller's shuffling or sampler.
    """
    loader = as_loader(data)
    bs = batch_size or loader.batch_size or 128
    return DataLoader(loader.dataset, batch_size=bs, shuffle=False, collate_fn=loader.collate_fn)


def subsample_loader(data, max_samples: Optional[int], seed: int = 0, batch_size: Optional[int] = None) -> DataLoader:
    """An ordered loader over at most ``max_samples`` samples, chosen with a fixed seed."""
    loader = as_loader(data)
    n = len(loader.dataset)
    if max_samples is None or n <= max_samples:
        return ordered_loader(loader, batch_size)
    idx = np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False))
    return DataLoader(
        Subset(loader.dataset, idx.tolist()),
        batch_size=batch_size or loader.batch_size or 128,
        shuffle=False,
        collate_fn=loader.collate_fn,
    )


def check_nonempty(data, what: str) -> DataLoader:
    loader = as_loader(data)
    if len(loader.dataset) == 0:
        raise DataError(
            f"The {what} set is empty. Expected at least one sample; pass the samples to "
            f"{'forget' if what == 'forget' else 'keep'} (e.g. UnlearningDataset(..., forget_indices=[...]))."
        )
    return loader


def is_class_forgetting(forget_labels, retain_labels) -> bool:
    """Class forgetting: retain data is present and none of the forget labels occurs in it."""
    retain = set(np.unique(retain_labels).tolist())
    return bool(retain) and not (set(np.unique(forget_labels).tolist()) & retain)


def cycle(loader: DataLoader) -> Iterator:
    """Endless iteration over a loader (re-shuffled each pass if the loader shuffles)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise DataError("Expected a non-empty loader to cycle over, got an empty one.")


class IndexedDataset(Dataset):
    """Wraps a dataset so each item is ``(*item, index)``: the batches then carry their
    samples' dataset indices, which the training-time recorders (``AmnesiacRecorder``,
    ``TrainingDynamicsRecorder``) need. Classifier adapters
    read only the first two fields, so training code is unchanged."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        item = self.dataset[i]
        return (*item, i) if isinstance(item, (tuple, list)) else (item, i)


def root_indices(dataset) -> np.ndarray:
    """Indices of ``dataset``'s samples in the dataset at the bottom of its ``Subset`` chain."""
    idx = np.arange(len(dataset))
    while isinstance(dataset, Subset):
        idx = np.asarray(dataset.indices)[idx]
        dataset = dataset.dataset
    return idx
