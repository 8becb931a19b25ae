"""Loader helpers shared by selectors, metrics and the trainer."""
from __future__ import annotations

import os
from typing import Iterator, Optional

import numpy as np
from torch.utils.data import DataLoader, Dataset, Subset

from ..exceptions import DataError


def as_loader(data, batch_size: int = 128, shuffle: bool = False) -> DataLoader:
    """Accept a DataLoader or a Dataset; always return a DataLoader."""
    if data is None:
        raise DataError("Expected a DataLoader or Dataset, got None.")
    if isinstance(data, (str, bytes, os.PathLike)):
        raise DataError(f"Expected a DataLoader or Dataset, got the path {data!r}: folders of captioned images are read "
                        "for CLIP models loaded with ErasusUnlearner(model_name=...); otherwise load the data yourself.")
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


FORGET_MODES = ("auto", "sample", "class")


def infer_forget_mode(forget_labels, retain_labels=None, reference_labels=None, mode: str = "auto"):
    """``("class" | "sample", reason)``: whether a request forgets whole classes.

    ``mode`` other than ``"auto"`` is taken as given. Otherwise, with retain labels: class
    forgetting when no forget label occurs in the retain data. Without them, from the
    labels of data the model never trained on (``reference_labels``, e.g. held-out or test
    data): class forgetting when the forget set lacks classes that a random sample of its
    size would almost surely contain, i.e. the probability that ``n`` draws from the
    reference label distribution all miss the classes the forget set lacks is below 1e-4
    (a random deletion request of 30 samples over 10 balanced classes misses a given class
    with probability 0.04, all nine others with probability 1e-30). Pass ``forget_mode``
    explicitly where neither is available."""
    if mode not in FORGET_MODES:
        raise ValueError(f"Expected forget_mode in {FORGET_MODES}, got {mode!r}.")
    if mode != "auto":
        return mode, f"forget_mode={mode!r} given"
    f = np.asarray(forget_labels)
    if retain_labels is not None and len(retain_labels):
        if is_class_forgetting(f, retain_labels):
            return "class", f"no forget label ({sorted(np.unique(f).tolist())}) occurs in the retain data"
        return "sample", "forget labels also occur in the retain data"
    if reference_labels is not None and len(reference_labels) and len(f):
        ref = np.asarray(reference_labels)
        classes, counts = np.unique(ref, return_counts=True)
        absent = ~np.isin(classes, np.unique(f))
        if absent.any() and not np.isin(np.unique(f), classes, invert=True).any():
            p_missing = float(counts[absent].sum() / counts.sum())
            log_p = len(f) * np.log1p(-p_missing) if p_missing < 1 else -np.inf
            if log_p < np.log(1e-4):
                return "class", (f"the {len(f)} forget samples hold only classes {sorted(np.unique(f).tolist())}: a "
                                 f"random sample would include the others (p = {np.exp(log_p):.1e})")
        return "sample", "the forget labels look like a sample of the held-out labels"
    return "sample", "no retain or held-out labels to compare with; pass forget_mode='class' for class forgetting"


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
