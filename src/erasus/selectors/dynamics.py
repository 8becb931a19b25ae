"""Selectors from training dynamics: forgetting events (Toneva et al. 2019) and accumulated
training loss, recorded during training by :class:`TrainingDynamicsRecorder`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.base import BaseSelector
from ..core.config import BaseConfig
from ..core.exceptions import ConfigError, DataError
from ..core.registry import register
from ..utils.data import root_indices


class TrainingDynamicsRecorder:
    """Per-sample training statistics, updated at every training step.

        rec = TrainingDynamicsRecorder(len(train))
        loader = DataLoader(IndexedDataset(train), batch_size=128, shuffle=True)
        train_classifier(model, loader, dynamics=rec)       # or rec.update(ids, correct, losses)
        rec.save("runs/dynamics.npz")

    Records, per dataset index: presentations, forgetting events (a presentation
    misclassified after the previous one was classified correctly; Toneva et al.),
    whether it was ever learned, and the summed training loss.
    """

    def __init__(self, n: int):
        self.n = int(n)
        self.prev = np.full(self.n, -1, dtype=np.int8)
        self.forgets = np.zeros(self.n, dtype=np.int64)
        self.learned = np.zeros(self.n, dtype=bool)
        self.loss_sum = np.zeros(self.n, dtype=np.float64)
        self.seen = np.zeros(self.n, dtype=np.int64)

    def update(self, ids, correct, losses) -> None:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        correct = np.asarray(correct, dtype=bool).reshape(-1)
        losses = np.asarray(losses, dtype=np.float64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.n):
            raise DataError(f"Expected sample indices in [0, {self.n - 1}], got [{ids.min()}, {ids.max()}].")
        self.forgets[ids] += (self.prev[ids] == 1) & ~correct
        self.prev[ids] = correct
        self.learned[ids] |= correct
        np.add.at(self.loss_sum, ids, losses)
        np.add.at(self.seen, ids, 1)

    def save(self, path) -> Path:
        """Write the record atomically (``.npz``, no pickled objects)."""
        import io

        from ..utils.io import atomic_write_bytes

        buf = io.BytesIO()
        np.savez(buf, forgets=self.forgets, learned=self.learned, loss_sum=self.loss_sum, seen=self.seen)
        atomic_write_bytes(Path(path), buf.getvalue())
        return Path(path)

    @staticmethod
    def load(path) -> dict:
        if not Path(path).exists():
            raise DataError(f"No training-dynamics record at {path}. Expected a file written by "
                            "TrainingDynamicsRecorder.save() during training.")
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}


@dataclass
class DynamicsConfig(BaseConfig):
    """``record``: path of the ``.npz`` a :class:`TrainingDynamicsRecorder` saved (required)."""

    record: str = ""


class _DynamicsSelector(BaseSelector):
    config_class = DynamicsConfig
    needs_training_records = True  # it reads statistics recorded while the model was trained

    def _record(self, loader):
        if not self.config.record:
            raise ConfigError(f"{self.registered_name} needs record=<path>: the file a TrainingDynamicsRecorder "
                              "saved while the model was trained (see erasus.selectors.dynamics).")
        rec = TrainingDynamicsRecorder.load(self.config.record)
        idx = root_indices(loader.dataset)
        if idx.max() >= len(rec["seen"]):
            raise DataError("The forget set indexes beyond the recorded training set: expected its dataset to be "
                            "a Subset of the dataset the recorder indexed.")
        if (rec["seen"][idx] == 0).any():
            raise DataError("Some forget samples were never seen in the recorded training run.")
        return rec, idx


@register("selector", "forgetting_events", aliases=("forgetting", "toneva", "forgetting_score"))
class ForgettingEventsSelector(_DynamicsSelector):
    """Forgetting events (Toneva, Sordoni, Combes, Trischler, Bengio & Gordon, "An Empirical
    Study of Example Forgetting during Deep Neural Network Learning", ICLR 2019): the number
    of times a sample went from correctly to incorrectly classified during training (the
    "forgetting score" of Toneva et al. and of Paul et al.'s data-diet study, hence the alias).
    Samples never learned count as forgotten most often (the paper's convention: they get
    the largest count). High scores: hard, atypical or mislabelled samples, the ones the
    model had to memorise. Needs the record of a :class:`TrainingDynamicsRecorder`."""

    def score(self, adapter, loader):
        rec, idx = self._record(loader)
        counts = rec["forgets"][idx].astype(np.float64)
        never = ~rec["learned"][idx]
        counts[never] = counts.max(initial=0.0) + 1.0
        return counts


@register("selector", "loss_accumulation", aliases=("accumulated_loss",))
class LossAccumulationSelector(_DynamicsSelector):
    """Mean training loss accumulated over every presentation during training (the area
    under each sample's loss curve; cf. the mean-confidence axis of "Dataset Cartography",
    Swayamdipta et al., EMNLP 2020): samples the model found hard for longest. Needs the
    record of a :class:`TrainingDynamicsRecorder`."""

    def score(self, adapter, loader):
        rec, idx = self._record(loader)
        return rec["loss_sum"][idx] / rec["seen"][idx]
