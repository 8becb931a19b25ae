"""``Coreset``: the selected part of a forget set, as a first-class object."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
from torch.utils.data import DataLoader, Subset

from .exceptions import DataError


@dataclass
class Coreset:
    """Dataset indices chosen by a selector, with their scores and provenance.

    ``indices`` index the forget loader's **dataset** (``loader.dataset[i]``), never the
    loader's iteration order, so a shuffled loader gives the same coreset. ``scores`` are
    the selector's importance scores for those indices (higher = more important).
    ``provenance`` records who made it (selector, config, k, dataset size).
    """

    indices: np.ndarray
    scores: Optional[np.ndarray] = None
    provenance: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.indices = np.asarray(self.indices, dtype=np.int64).reshape(-1)
        if len(np.unique(self.indices)) != len(self.indices):
            raise DataError("Expected distinct dataset indices in a Coreset, got duplicates.")
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
            if self.scores.shape != self.indices.shape:
                raise DataError(
                    f"Expected one score per index, got {len(self.scores)} scores for {len(self.indices)} indices."
                )

    # construction ------------------------------------------------------------------
    @classmethod
    def from_selector(cls, selector, model, data, k: Optional[int] = None, prune_ratio: Optional[float] = None) -> "Coreset":
        """Run ``selector`` (an instance or a registered name) on ``data`` and return its coreset."""
        from .registry import build

        return build("selector", selector).select(model, data, k=k, prune_ratio=prune_ratio)

    # inspection --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices.tolist())

    def __getitem__(self, i):
        """The ``i``-th dataset index (a list for a slice), so that a coreset is a sequence of
        indices: ``torch.utils.data.Subset(dataset, coreset)``, as the specification's examples do."""
        return self.indices[i].tolist()

    def __contains__(self, idx) -> bool:
        return int(idx) in set(self.indices.tolist())

    def _score_map(self) -> Dict[int, float]:
        if self.scores is None:
            return {}
        return dict(zip(self.indices.tolist(), self.scores.tolist()))

    # composition -------------------------------------------------------------------
    def _combine(self, other: "Coreset", keep: List[int], op: str) -> "Coreset":
        a, b = self._score_map(), other._score_map()
        scores = None
        if a or b:
            def mean(i):  # the scores the sample has (NaN when neither coreset scored it)
                vals = [v for v in (a.get(i), b.get(i)) if v is not None and np.isfinite(v)]
                return float(np.mean(vals)) if vals else float("nan")

            scores = [mean(i) for i in keep]
        return Coreset(keep, scores, {"op": op, "parents": [self.provenance, other.provenance]})

    def union(self, other: "Coreset") -> "Coreset":
        """Samples either coreset chose (first-seen order)."""
        keep = list(dict.fromkeys(self.indices.tolist() + other.indices.tolist()))
        return self._combine(other, keep, "union")

    def intersect(self, other: "Coreset") -> "Coreset":
        """Samples both coresets chose (in this coreset's order)."""
        theirs = set(other.indices.tolist())
        keep = [i for i in self.indices.tolist() if i in theirs]
        return self._combine(other, keep, "intersect")

    def filter(self, min_score: float) -> "Coreset":
        """Samples whose score is at least ``min_score``."""
        if self.scores is None:
            raise DataError("This coreset has no scores to filter on (its selector does not score samples).")
        mask = self.scores >= min_score
        return Coreset(self.indices[mask], self.scores[mask], {**self.provenance, "filter_min_score": min_score})

    def top(self, k: int) -> "Coreset":
        """The ``k`` highest-scoring samples (the first ``k`` if there are no scores)."""
        if k < 0:
            raise DataError(f"Expected k >= 0, got {k}.")
        order = np.arange(len(self)) if self.scores is None else np.argsort(-self.scores, kind="stable")
        order = order[:k]
        return Coreset(
            self.indices[order], None if self.scores is None else self.scores[order], {**self.provenance, "top": k}
        )

    # use ---------------------------------------------------------------------------
    def subset(self, dataset) -> Subset:
        n = len(dataset)
        if len(self) and int(self.indices.max()) >= n:
            raise DataError(f"Coreset index {int(self.indices.max())} is out of range for a dataset of {n} samples.")
        return Subset(dataset, self.indices.tolist())

    def to_loader(self, loader: DataLoader, shuffle: bool = True) -> DataLoader:
        """A loader over the coreset's samples of ``loader.dataset``, with the same batching."""
        return DataLoader(
            self.subset(loader.dataset),
            batch_size=loader.batch_size or 32,
            shuffle=shuffle,
            collate_fn=loader.collate_fn,
        )

    # persistence -------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        return {
            "indices": self.indices.tolist(),
            "scores": None if self.scores is None else self.scores.tolist(),
            "provenance": self.provenance,
        }

    def save(self, path: Union[str, os.PathLike], overwrite: bool = False) -> Path:
        from ..utils.io import atomic_write_text

        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True or choose another path.")
        atomic_write_text(path, json.dumps(self.to_dict(), default=str))
        return path

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "Coreset":
        d = json.loads(Path(path).read_text())
        return cls(d["indices"], d.get("scores"), d.get("provenance", {}))

    def __repr__(self) -> str:
        src = self.provenance.get("selector", "?")
        return f"Coreset(n={len(self)}, selector={src!r})"
