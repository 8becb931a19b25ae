"""``EvalContext``: the model under test, its data splits, and cached per-sample statistics."""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from ..core.exceptions import DataError
from ..core.trainer import split_stats
from ..utils.data import subsample_loader

SPLITS = ("forget", "retain", "test", "holdout")


class EvalContext:
    """Holds an adapter, up to four loaders and optionally a gold (retrained) adapter.

    ``stats(split)`` returns per-sample ``loss``, ``correct``, ``label``, ``confidence``
    (the probability of the true label) and, for classifiers, ``entropy`` and ``m_entropy``, computed once per split and model. Each split
    is evaluated on at most ``max_samples`` samples (a fixed-seed subsample).
    """

    def __init__(self, adapter, forget=None, retain=None, test=None, holdout=None, gold=None,
                 max_samples: Optional[int] = None):
        self.adapter = adapter
        self.gold = gold
        self.max_samples = max_samples
        self.loaders = {}
        for i, (name, data) in enumerate(zip(SPLITS, (forget, retain, test, holdout))):
            if data is not None:
                self.loaders[name] = subsample_loader(data, max_samples, seed=100 + i)
        self._cache: Dict[tuple, Dict[str, np.ndarray]] = {}

    def has(self, split: str) -> bool:
        return split in self.loaders

    def require(self, who: str, *splits: str) -> None:
        missing = [s for s in splits if s not in self.loaders]
        if missing:
            raise DataError(f"{who} needs the {', '.join(missing)} split(s); pass "
                            + ", ".join(f"{s}_loader" for s in missing) + ".")

    def _cached(self, key: tuple, compute) -> Dict[str, np.ndarray]:
        """``compute(adapter, loader)`` for ``key = (split, gold, ...)``, once per key."""
        if key not in self._cache:
            split, gold = key[0], key[1]
            adapter = self.gold if gold else self.adapter
            if adapter is None:
                raise DataError("This metric needs a gold (retrained) model: pass gold_model=...")
            self.require("this metric", split)
            self._cache[key] = compute(adapter, self.loaders[split])
        return self._cache[key]

    def stats(self, split: str, gold: bool = False) -> Dict[str, np.ndarray]:
        def compute(adapter, loader):
            s = split_stats(adapter, loader, with_entropy=adapter.family == "classifier")
            s["confidence"] = np.exp(-s["loss"])
            return s

        return self._cached((split, gold), compute)

    def lm_stats(self, split: str, gold: bool = False, k: float = 0.4) -> Dict[str, np.ndarray]:
        """Per-sample language-model statistics (:func:`erasus.metrics.llm.lm_token_stats`)."""
        from .llm import lm_token_stats

        return self._cached((split, gold, "lm", k), lambda adapter, loader: lm_token_stats(adapter, loader, k=k))

    def nonmember_split(self) -> str:
        """Held-out data for membership tests: ``holdout`` if given, else ``test``."""
        if self.has("holdout"):
            return "holdout"
        self.require("membership inference", "test")
        return "test"

    def for_gold(self) -> "EvalContext":
        """The same splits, evaluated on the gold model (sharing the gold cache)."""
        ctx = EvalContext.__new__(EvalContext)
        ctx.adapter, ctx.gold, ctx.max_samples, ctx.loaders = self.gold, None, self.max_samples, self.loaders
        ctx._cache = {(k[0], False) + tuple(k[2:]): v for k, v in self._cache.items() if k[1]}
        return ctx
