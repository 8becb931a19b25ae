"""Baseline selectors: ``random`` and ``full``."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.base import BaseSelector
from ..core.config import BaseConfig
from ..core.exceptions import ConfigError
from ..core.registry import register


@dataclass
class RandomSelectorConfig(BaseConfig):
    """``seed``: the random generator's seed (default 0)."""

    seed: int = 0


@register("selector", "random")
class RandomSelector(BaseSelector):
    """Uniform random sample of ``k`` forget samples, without replacement (the baseline
    every other selector must beat)."""

    config_class = RandomSelectorConfig

    def _select(self, adapter, loader, k):
        n = len(loader.dataset)
        idx = np.random.default_rng(self.config.seed).choice(n, size=k, replace=False)
        return idx, None


@register("selector", "full", aliases=("all", "none"))
class FullSelector(BaseSelector):
    """The whole forget set (no coreset). ``k`` must be the forget-set size."""

    def _select(self, adapter, loader, k):
        n = len(loader.dataset)
        if k != n:
            raise ConfigError(f"The 'full' selector selects all {n} samples; got k={k}. "
                             "Use prune_ratio=1.0, or another selector for a coreset.")
        return np.arange(n), None
