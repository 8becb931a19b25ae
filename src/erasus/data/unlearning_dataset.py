"""``UnlearningDataset``: a training set split into forget and retain parts."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Dict, Iterable, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset, WeightedRandomSampler

from ..core.exceptions import DataError


def dataset_labels(dataset) -> np.ndarray:
    """Integer labels of every sample (``targets``/``labels`` attributes, tensors, or iteration:
    the second element of ``(x, y)`` samples, the label field of dict samples such as a Hugging
    Face ``datasets.Dataset``'s rows, read as one column where the data set has columns)."""
    for attr in ("targets", "labels"):
        if hasattr(dataset, attr):
            return np.asarray(getattr(dataset, attr)).astype(np.int64).reshape(-1)
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) >= 2:
        return dataset.tensors[1].cpu().numpy().astype(np.int64).reshape(-1)
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[np.asarray(dataset.indices)]
    first = dataset[0] if len(dataset) else None
    if isinstance(first, Mapping):
        from ..models.classifier import LABEL_KEYS

        key = next((k for k in LABEL_KEYS if k in first), None)
        if key is None:
            raise DataError(f"Expected dict samples with a label key {LABEL_KEYS}, got keys {sorted(first)}.")
        if key in (getattr(dataset, "column_names", None) or ()):
            return np.asarray(dataset[key]).astype(np.int64).reshape(-1)
        return np.asarray([int(dataset[i][key]) for i in range(len(dataset))], dtype=np.int64)
    return np.asarray([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64)


class UnlearningDataset:
    """Wrap any map-style dataset and mark what to forget.

    ``forget_indices`` (sample level), ``forget_classes`` (every sample of those labels),
    ``forget_weights`` (``{index: weight}``; the forget loader samples heavier items more
    often), ``holdout`` (a dataset the model never trained on, from the same distribution:
    the reference for "forgotten" in membership tests and calibrated stopping).
    ``mark_forget`` / ``mark_retain`` update the split at any time (streaming deletion).
    """

    def __init__(self, dataset: Dataset, forget_indices: Optional[Iterable[int]] = None,
                 forget_classes: Optional[Iterable[int]] = None,
                 forget_weights: Optional[Dict[int, float]] = None, holdout: Optional[Dataset] = None):
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(f"Expected a map-style dataset (with __len__ and __getitem__), got {type(dataset).__name__}.")
        self.dataset = dataset
        self.holdout = holdout
        self.n = len(dataset)
        self._forget: set = set()
        self._retained_by_request: set = set()
        self.forget_classes = sorted({int(c) for c in (forget_classes or [])})
        self.forget_weights = {int(k): float(v) for k, v in (forget_weights or {}).items()}
        for k, v in self.forget_weights.items():
            if v < 0:
                raise DataError(f"Expected non-negative forget weights, got {v} for index {k}.")
        self._labels = None
        if self.forget_classes:
            labels = self.labels
            present = set(np.unique(labels).tolist())
            unknown = [c for c in self.forget_classes if c not in present]
            if unknown:
                raise DataError(f"forget_classes {unknown} do not occur in the dataset (labels present: {sorted(present)}).")
            self._forget |= set(np.nonzero(np.isin(labels, self.forget_classes))[0].tolist())
        self.mark_forget(forget_indices if forget_indices is not None else [])
        self.mark_forget(self.forget_weights.keys())

    @property
    def labels(self) -> np.ndarray:
        if self._labels is None:
            self._labels = dataset_labels(self.dataset)
        return self._labels

    def _check(self, indices) -> list:
        """Validated sample positions: whole numbers (ints, integer arrays or tensors, or
        floats with no fractional part) in ``[0, n)``; a fractional index is an error, never
        rounded down to another sample."""
        if isinstance(indices, torch.Tensor):
            indices = indices.detach().cpu().numpy()
        arr = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices)
        if arr.size == 0:
            return []
        arr = arr.reshape(-1)
        if arr.dtype == bool:
            raise DataError("Expected sample indices, got booleans; for a mask pass np.nonzero(mask)[0].")
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise DataError(f"Expected integer sample indices, got {arr.dtype} values such as {arr[:3].tolist()}.")
        if np.issubdtype(arr.dtype, np.floating):
            frac = arr[~np.isfinite(arr) | (arr != np.round(arr))]
            if len(frac):
                raise DataError(f"Expected whole-number sample indices, got {frac[:5].tolist()}: a fractional index "
                                "would name another sample.")
        idx = [int(i) for i in arr]
        bad = [i for i in idx if not 0 <= i < self.n]
        if bad:
            raise DataError(f"Expected indices in [0, {self.n - 1}], got {bad[:5]}{'...' if len(bad) > 5 else ''}.")
        return idx

    def mark_forget(self, indices: Iterable[int]) -> "UnlearningDataset":
        idx = self._check(indices)
        self._forget |= set(idx)
        self._retained_by_request -= set(idx)
        return self

    def mark_retain(self, indices: Iterable[int]) -> "UnlearningDataset":
        idx = self._check(indices)
        self._forget -= set(idx)
        self._retained_by_request |= set(idx)
        for i in idx:
            self.forget_weights.pop(i, None)
        return self

    @property
    def forget_indices(self) -> np.ndarray:
        return np.array(sorted(self._forget), dtype=np.int64)

    @property
    def retain_indices(self) -> np.ndarray:
        mask = np.ones(self.n, dtype=bool)
        mask[self.forget_indices] = False
        return np.nonzero(mask)[0]

    @property
    def forget_dataset(self) -> Subset:
        return Subset(self.dataset, self.forget_indices.tolist())

    @property
    def retain_dataset(self) -> Subset:
        return Subset(self.dataset, self.retain_indices.tolist())

    def to_loaders(self, batch_size: int = 32, shuffle: bool = True, seed: int = 0,
                   **loader_kwargs) -> Tuple[DataLoader, DataLoader]:
        """``(forget_loader, retain_loader)``. Raises :class:`DataError` if either is empty."""
        if len(self._forget) == 0:
            raise DataError("The forget set is empty. Expected forget_indices, forget_classes or mark_forget(...) "
                            "to name at least one sample.")
        if len(self._forget) == self.n:
            raise DataError("Every sample is marked to forget, so the retain set is empty. Expected at least one "
                            "sample to keep.")
        fds, rds = self.forget_dataset, self.retain_dataset
        g = torch.Generator().manual_seed(seed)
        if self.forget_weights:
            w = torch.tensor([self.forget_weights.get(int(i), 1.0) for i in self.forget_indices], dtype=torch.double)
            sampler = WeightedRandomSampler(w, num_samples=len(w), replacement=True, generator=g)
            forget = DataLoader(fds, batch_size=batch_size, sampler=sampler, **loader_kwargs)
        else:
            forget = DataLoader(fds, batch_size=batch_size, shuffle=shuffle, generator=g, **loader_kwargs)
        retain = DataLoader(rds, batch_size=batch_size, shuffle=shuffle,
                            generator=torch.Generator().manual_seed(seed + 1), **loader_kwargs)
        return forget, retain

    def splits(self, batch_size: int = 32, test=None, seed: int = 0):
        """The request as a :class:`~erasus.data.splits.Splits` (forget and retain loaders, the
        held-out loader when a held-out set was given, and ``test``: a loader of unseen data),
        the argument every verification entry point takes."""
        from .splits import Splits

        forget, retain = self.to_loaders(batch_size=batch_size, seed=seed)
        holdout = self.holdout_loader(batch_size=max(batch_size, 128)) if self.holdout is not None else None
        return Splits(forget, retain, test, holdout)

    def holdout_loader(self, batch_size: int = 128, only_forget_classes: Optional[bool] = None) -> DataLoader:
        """Held-out data for verification. With class forgetting (and by default then),
        only the held-out samples of the forgotten classes."""
        if self.holdout is None:
            raise DataError("No held-out data: pass UnlearningDataset(..., holdout=dataset_the_model_never_saw).")
        ds = self.holdout
        only = bool(self.forget_classes) if only_forget_classes is None else only_forget_classes
        if only:
            if not self.forget_classes:
                raise DataError("only_forget_classes=True needs forget_classes.")
            labels = dataset_labels(ds)
            ds = Subset(ds, np.nonzero(np.isin(labels, self.forget_classes))[0].tolist())
        return DataLoader(ds, batch_size=batch_size, shuffle=False)

    def __repr__(self) -> str:
        return f"UnlearningDataset(n={self.n}, forget={len(self._forget)}, forget_classes={self.forget_classes})"


def _base_and_indices(dataset):
    if isinstance(dataset, Subset):
        base, idx = _base_and_indices(dataset.dataset)
        return base, np.asarray(idx)[np.asarray(dataset.indices)]
    return dataset, np.arange(len(dataset))


def _content(v):
    """A hashable stand-in for a record's value: a tensor's dtype, shape and raw bytes (numpy has
    no bfloat16: its bits are viewed as integers)."""
    if torch.is_tensor(v):
        x = v.detach().contiguous().cpu()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.view(torch.int16)
        return (str(v.dtype), tuple(v.shape), x.numpy().tobytes())
    return v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)


def check_disjoint(forget_dataset, retain_dataset) -> None:
    """Raise :class:`DataError` when forget and retain data share samples.

    Subsets of one dataset are compared by index; ``TensorDataset``s by the content of
    each sample's input tensor.
    """
    fb, fi = _base_and_indices(forget_dataset)
    rb, ri = _base_and_indices(retain_dataset)
    if fb is rb:
        both = np.intersect1d(fi, ri)
        if len(both):
            raise DataError(f"The forget and retain sets overlap in {len(both)} sample(s) (dataset indices "
                            f"{both[:5].tolist()}...). Expected disjoint sets: remove them from the retain data "
                            "(UnlearningDataset does this for you).")
        return
    if isinstance(fb, TensorDataset) and isinstance(rb, TensorDataset):
        fx = fb.tensors[0][torch.as_tensor(fi)].flatten(1)
        rx = rb.tensors[0][torch.as_tensor(ri)].flatten(1)
        if fx.shape[1] != rx.shape[1] or fx.dtype != rx.dtype:
            return

        both = {_content(row) for row in fx} & {_content(row) for row in rx}
        if both:
            raise DataError(f"The forget and retain sets overlap: {len(both)} forget sample(s) also appear in the "
                            "retain data. Expected disjoint sets: remove them from the retain data.")
        return
    records = lambda ds, idx: [ds[int(i)] for i in idx] if len(idx) else []  # noqa: E731
    fr, rr = records(fb, fi[:1]), records(rb, ri[:1])
    if fr and rr and isinstance(fr[0], dict) and isinstance(rr[0], dict):  # question/answer records (language models)
        text_keys = ("question", "answer", "text")
        if any(k in fr[0] for k in text_keys):
            key = lambda r: tuple(r.get(k) for k in text_keys)  # noqa: E731
        else:  # records of tensors (speech features, images): their content
            key = lambda r: tuple(sorted((k, _content(v)) for k, v in r.items()))  # noqa: E731
        both = {key(r) for r in records(fb, fi)} & {key(r) for r in records(rb, ri)}
        if both:
            ex = next(iter(both))
            what = f" (e.g. question {ex[0]!r})" if any(k in fr[0] for k in text_keys) else ""
            raise DataError(f"The forget and retain sets overlap: {len(both)} forget record(s) also appear in the "
                            f"retain data{what}. Expected disjoint sets: remove them from the retain list.")
