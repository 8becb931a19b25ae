"""Reproducible classification unlearning protocols: data, original model, forget split,
gold (retrained) model, with on-disk caching of trained weights.

One piece of code serves the demo (digits), the tests and ``benchmarks/classification.py``
(Fashion-MNIST). The test set is split in two halves: ``holdout`` (data the model never
saw, used by calibrated stopping) and ``test`` (used only for evaluation), so that
stopping never peeks at the data the verdict is computed on.
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

from ..core.exceptions import DataError
from ..data.unlearning_dataset import UnlearningDataset, dataset_labels
from ..models.training import train_classifier
from ..utils.io import atomic_write_text, file_lock, load_state_dict, save_state_dict


@dataclass
class Split:
    """A forget request on a task: loaders for every role."""

    kind: str
    dataset: UnlearningDataset
    forget: DataLoader
    retain: DataLoader
    holdout: DataLoader
    test: DataLoader
    forget_classes: tuple = ()

    @property
    def splits(self):
        """This request as the :class:`~erasus.data.splits.Splits` verification takes."""
        from ..data.splits import Splits

        return Splits(self.forget, self.retain, self.test, self.holdout)


@dataclass
class ClassificationTask:
    """A data set plus a model recipe. ``model_fn()`` builds an untrained model;
    ``epochs``/``lr``/``batch_size`` train it to (near) memorisation."""

    name: str
    train: TensorDataset
    test_full: TensorDataset
    model_fn: Callable[[], torch.nn.Module]
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 128
    cosine: bool = True
    cache_dir: Optional[Path] = None
    progress: bool = False
    train_seconds: Dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.test_full)
        perm = np.random.default_rng(1234).permutation(n)
        self.holdout_full = Subset(self.test_full, np.sort(perm[: n // 2]).tolist())
        self.test = Subset(self.test_full, np.sort(perm[n // 2:]).tolist())

    # models -------------------------------------------------------------------------
    def _cached(self, key: str, data, seed: int, dynamics: Optional[Path] = None) -> torch.nn.Module:
        """Train (or load from the cache) ``model_fn()`` on ``data``. ``dynamics``: also
        record per-sample training dynamics to this ``.npz``; a cached model without that
        record is retrained with the recorder, so model and record come from one run."""
        torch.manual_seed(seed)
        model = self.model_fn()
        path = meta = None
        if self.cache_dir is not None:
            path = Path(self.cache_dir) / f"{self.name}-{key}-s{seed}.safetensors"
            meta = path.with_suffix(".json")
        # one process trains a model at a time; the others wait for it and load it
        with file_lock(path) if path is not None else contextlib.nullcontext():
            if path is not None and path.exists() and meta.exists() and (dynamics is None or dynamics.exists()):
                model.load_state_dict(load_state_dict(path))
                self.train_seconds[f"{key}-s{seed}"] = json.loads(meta.read_text())["train_seconds"]
                return model.eval()
            rec = None
            if dynamics is not None:
                from ..selectors.dynamics import TrainingDynamicsRecorder
                from ..utils.data import IndexedDataset

                rec, data = TrainingDynamicsRecorder(len(data)), IndexedDataset(data)
            loader = DataLoader(data, batch_size=self.batch_size, shuffle=True,
                                generator=torch.Generator().manual_seed(seed))
            t0 = time.perf_counter()
            train_classifier(model, loader, epochs=self.epochs, lr=self.lr, seed=seed, progress=self.progress,
                             desc=f"train {key} (seed {seed})", cosine=self.cosine, dynamics=rec)
            dt = time.perf_counter() - t0
            self.train_seconds[f"{key}-s{seed}"] = dt
            if rec is not None:
                rec.save(dynamics)
            if path is not None:
                save_state_dict(model.state_dict(), path, overwrite=True)
                atomic_write_text(meta, json.dumps({"train_seconds": dt, "epochs": self.epochs, "n": len(data)}))
            return model.eval()

    def original(self, seed: int = 0, dynamics: bool = False) -> torch.nn.Module:
        """The model trained on the full training set. ``dynamics=True``: with its
        training-dynamics record at :meth:`dynamics_path` (a cached original without one is
        retrained once with the recorder)."""
        if dynamics and self.cache_dir is None:
            raise DataError("original(dynamics=True) writes the training-dynamics record next to the cached model: "
                            "expected a task built with cache_dir=<folder>.")
        return self._cached("original", self.train, seed, self.dynamics_path(seed) if dynamics else None)

    def dynamics_path(self, seed: int = 0) -> Optional[Path]:
        """Where the training-dynamics record of ``original(seed)`` is kept (``None``
        without a cache directory): the ``record=`` of the ``forgetting_events`` and
        ``loss_accumulation`` selectors, written by ``original(seed, dynamics=True)``."""
        if self.cache_dir is None:
            return None
        return Path(self.cache_dir) / f"{self.name}-original-s{seed}-dynamics.npz"

    @staticmethod
    def _split_key(split: Split) -> str:
        import hashlib

        digest = hashlib.sha1(split.dataset.forget_indices.tobytes()).hexdigest()[:8]
        return f"retrain-{split.kind}-{digest}"

    def gold(self, split: Split, seed: int = 0) -> torch.nn.Module:
        """The gold standard: the same recipe retrained on the retain set only (cached per
        forget set and seed)."""
        return self._cached(self._split_key(split), split.dataset.retain_dataset, seed)

    def retrain_seconds(self, split: Split, seed: int = 0) -> float:
        """Wall-clock seconds the gold model took to train (recorded when it was trained)."""
        return self.train_seconds[f"{self._split_key(split)}-s{seed}"]

    # splits -------------------------------------------------------------------------
    def split(self, kind: str = "random", fraction: float = 0.1, forget_class: int = 0, seed: int = 0,
              batch_size: int = 64) -> Split:
        """``kind="random"``: forget a random ``fraction`` of the training set (the same
        samples for every seed of a run, fixed by ``seed``); ``kind="class"``: forget
        every sample of ``forget_class``."""
        n = len(self.train)
        if kind == "random":
            idx = np.sort(np.random.default_rng(10_000 + seed).choice(n, int(round(fraction * n)), replace=False))
            ds = UnlearningDataset(self.train, forget_indices=idx.tolist(), holdout=self.holdout_full)
            classes: tuple = ()
            test = self.test
            name = f"random{int(round(100 * fraction))}"
        elif kind == "class":
            ds = UnlearningDataset(self.train, forget_classes=[forget_class], holdout=self.holdout_full)
            classes = (forget_class,)
            labels = dataset_labels(self.test)
            test = Subset(self.test, np.nonzero(labels != forget_class)[0].tolist())
            name = f"class{forget_class}"
        else:
            raise DataError(f"Expected kind 'random' or 'class', got {kind!r}.")
        forget, retain = ds.to_loaders(batch_size=batch_size, seed=seed)
        holdout = ds.holdout_loader(batch_size=256)
        return Split(name, ds, forget, retain, holdout, DataLoader(test, batch_size=256), classes)


def digits_task(cache_dir: Optional[Path] = None, progress: bool = False) -> ClassificationTask:
    """scikit-learn digits with an MLP trained to memorisation (seconds on a CPU)."""
    from ..data.vision import load_digits
    from ..models.zoo import mlp

    train, test = load_digits(test_fraction=0.4, seed=0)
    return ClassificationTask("digits", train, test, lambda: mlp(64, 256, 10), epochs=60, lr=1e-3,
                              batch_size=32, cache_dir=cache_dir, progress=progress)


def fashion_mnist_task(n_train: int = 20_000, cache_dir: Optional[Path] = None, epochs: int = 30,
                       progress: bool = False) -> ClassificationTask:
    """Fashion-MNIST: ``n_train`` training images, a small CNN trained until it memorises."""
    from ..data.vision import load_fashion_mnist
    from ..models.zoo import small_cnn

    train = load_fashion_mnist(train=True, n=n_train, seed=0)
    test = load_fashion_mnist(train=False)
    # a constant learning rate: measured, it memorises (train accuracy ~99.5% after 30 epochs)
    # where a cosine schedule stops at ~97.9%
    return ClassificationTask("fmnist", train, test, lambda: small_cnn(width=32), epochs=epochs, lr=1e-3,
                              batch_size=128, cache_dir=cache_dir, progress=progress, cosine=False)


def fashion_mnist_small_task(cache_dir: Optional[Path] = None, progress: bool = False) -> ClassificationTask:
    """The bundled Fashion-MNIST subset (6,000 training images) with an MLP trained to
    memorisation: a clear gap between training and unseen data, trained in seconds."""
    from ..data.vision import load_fashion_mnist_small
    from ..models.zoo import mlp

    train, test = load_fashion_mnist_small()
    return ClassificationTask("fmnist_small", train, test, lambda: mlp(784, 256, 10), epochs=40, lr=1e-3,
                              batch_size=64, cache_dir=cache_dir, progress=progress)
