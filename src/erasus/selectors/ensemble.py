"""Ensembles of selectors: rank voting and weighted score fusion."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

import numpy as np
from scipy.stats import rankdata

from ..core.base import BaseSelector
from ..core.config import BaseConfig
from ..core.exceptions import ConfigError
from ..core.registry import build, register, resolve


@dataclass
class SelectorEnsembleConfig(BaseConfig):
    """``selectors``: registered names; ``weights``: one per selector (default equal)."""

    selectors: List[str] = field(default_factory=lambda: ["gradient_norm", "el2n", "kcenter"])
    weights: List[float] = field(default_factory=list)

    def validate(self) -> None:
        if not self.selectors:
            raise ConfigError(f"{type(self).__name__}: expected at least one selector name.")
        for name in self.selectors:
            resolve("selector", name)
        if self.weights and len(self.weights) != len(self.selectors):
            raise ConfigError(f"{type(self).__name__}: expected one weight per selector ({len(self.selectors)}), "
                              f"got {len(self.weights)}.")


class _SelectorEnsemble(BaseSelector):
    config_class = SelectorEnsembleConfig

    def _member_scores(self, adapter, loader) -> List[np.ndarray]:
        """Each member's score for every sample: its ``score`` if it has one, else its
        selection order over the whole set (earlier = higher)."""
        n = len(loader.dataset)
        out = []
        for name in self.config.selectors:
            sel = build("selector", name)
            if type(sel).score is not BaseSelector.score:  # a scoring selector
                s = np.asarray(sel.score(adapter, loader), dtype=np.float64)
            else:  # a sequential selector (k-center, herding, ...): rank by selection order
                order, _ = sel._select(adapter, loader, n)
                s = np.empty(n)
                s[np.asarray(order)] = np.arange(n, 0, -1, dtype=np.float64)
            out.append(s)
        return out

    def _weights(self) -> np.ndarray:
        w = np.asarray(self.config.weights or [1.0] * len(self.config.selectors), dtype=np.float64)
        return w / w.sum()


@register("selector", "voting", aliases=("borda",))
class VotingSelector(_SelectorEnsemble):
    """Rank voting (Borda count, de Borda 1781): every member ranks all forget samples;
    a sample's score is its (weighted) mean rank; the top ``k`` are kept. Robust to members
    whose scores live on different scales."""

    def score(self, adapter, loader):
        return sum(w * rankdata(s) for w, s in zip(self._weights(), self._member_scores(adapter, loader)))


@register("selector", "weighted_fusion", aliases=("score_fusion",))
class WeightedFusionSelector(_SelectorEnsemble):
    """Weighted score fusion (CombSUM with min-max normalisation, Fox & Shaw 1994): each
    member's scores are scaled to [0, 1] and summed with ``weights``."""

    def score(self, adapter, loader):
        total = 0.0
        for w, s in zip(self._weights(), self._member_scores(adapter, loader)):
            s = np.where(np.isfinite(s), s, np.nan)
            lo, hi = np.nanmin(s), np.nanmax(s)
            total = total + w * (np.nan_to_num((s - lo) / (hi - lo), nan=1.0) if hi > lo else np.zeros_like(s))
        return total
