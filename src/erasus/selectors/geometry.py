"""Geometry-based selectors on penultimate features: ``kcenter``, ``herding``."""
from __future__ import annotations

import numpy as np

from dataclasses import dataclass

from ..core.base import BaseSelector
from ..core.config import BaseConfig
from ..core.registry import register
from ._common import collect_features


def _start_index(X: np.ndarray) -> int:
    """The sample nearest to the feature mean (a deterministic first centre)."""
    return int(np.argmin(((X - X.mean(0)) ** 2).sum(1)))


@register("selector", "kcenter", aliases=("k_center", "kcenter_greedy", "coreset_greedy", "farthest_first"))
class KCenterSelector(BaseSelector):
    """Greedy k-center on penultimate features (Sener & Savarese, "Active Learning for
    Convolutional Neural Networks: A Core-Set Approach", ICLR 2018): repeatedly add the
    sample farthest from the chosen centres, a 2-approximation of the minimax cover. This
    is Gonzalez's farthest-first traversal (1985), also registered as ``farthest_first``.
    Score: the sample's distance to the centres when it was picked (coverage radius)."""

    def _select(self, adapter, loader, k):
        X = collect_features(adapter, loader).astype(np.float64)
        first = _start_index(X)
        chosen, scores = [first], [np.inf]
        d = ((X - X[first]) ** 2).sum(1)
        for _ in range(k - 1):
            d[chosen] = -1.0
            i = int(np.argmax(d))
            chosen.append(i)
            scores.append(float(np.sqrt(max(d[i], 0.0))))
            d = np.minimum(d, ((X - X[i]) ** 2).sum(1))
        scores[0] = scores[1] if len(scores) > 1 else 1.0
        return np.array(chosen), np.array(scores)


@register("selector", "herding")
class HerdingSelector(BaseSelector):
    """Herding (Welling, "Herding Dynamical Weights to Learn", ICML 2009; the greedy
    mean-matching form of Rebuffi et al., iCaRL, CVPR 2017): pick samples one at a time
    so that the mean feature of the chosen set tracks the mean of the whole forget set.
    Score: ``k − rank`` (earlier picks matter more)."""

    def _select(self, adapter, loader, k):
        X = collect_features(adapter, loader).astype(np.float64)
        mu = X.mean(0)
        running = np.zeros_like(mu)
        available = np.ones(len(X), dtype=bool)
        chosen = []
        for t in range(1, k + 1):
            cand = (running[None, :] + X) / t
            dist = ((cand - mu) ** 2).sum(1)
            dist[~available] = np.inf
            i = int(np.argmin(dist))
            chosen.append(i)
            available[i] = False
            running += X[i]
        return np.array(chosen), np.arange(k, 0, -1, dtype=np.float64)


@dataclass
class KMeansPPConfig(BaseConfig):
    """``seed`` of the D² sampling."""

    seed: int = 0


@register("selector", "kmeans_pp", aliases=("kmeans++", "kmeanspp"))
class KMeansPPSelector(BaseSelector):
    """k-means++ seeding on penultimate features (Arthur & Vassilvitskii, "k-means++: The
    Advantages of Careful Seeding", SODA 2007): the first sample uniformly at random, each
    next one with probability proportional to its squared distance ``D²`` to the nearest
    chosen sample; an O(log k)-approximate k-means cover that, unlike k-center, does not
    chase outliers. Score: ``D²`` when picked (the first gets the largest)."""

    config_class = KMeansPPConfig

    def _select(self, adapter, loader, k):
        X = collect_features(adapter, loader).astype(np.float64)
        rng = np.random.default_rng(self.config.seed)
        first = int(rng.integers(len(X)))
        chosen, scores = [first], [np.inf]
        d = ((X - X[first]) ** 2).sum(1)
        for _ in range(k - 1):
            d[chosen] = 0.0
            total = d.sum()
            if total <= 0:  # all remaining samples coincide with chosen ones
                i = int(np.flatnonzero(~np.isin(np.arange(len(X)), chosen))[0])
            else:
                i = int(rng.choice(len(X), p=d / total))
            chosen.append(i)
            scores.append(float(d[i]))
            d = np.minimum(d, ((X - X[i]) ** 2).sum(1))
        scores[0] = max(scores[1:], default=1.0)
        return np.array(chosen), np.array(scores)
