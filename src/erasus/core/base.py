"""Base classes for the three stages: selectors, strategies, metrics.

Constructors only store a validated config (scikit-learn style); work happens in
``select`` / ``unlearn`` / ``compute``.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Dict, Optional, Tuple

import numpy as np

from .config import BaseConfig
from .coreset import Coreset
from .exceptions import ConfigError, DataError, UnsupportedModelError


@dataclasses.dataclass
class EmptyConfig(BaseConfig):
    """Config of a component without hyperparameters."""


class Configurable:
    """Holds ``self.config``, built from ``config=`` or keyword arguments."""

    config_class = EmptyConfig
    #: option names of Erasus's specification that this component takes for one of its config
    #: fields (``{"approximation": "solver"}``); :meth:`translate_options` applies them
    option_aliases: Dict[str, str] = {}

    @classmethod
    def translate_options(cls, kwargs: Dict[str, Any]) -> Dict[str, Any]:
        """Keyword arguments in the names of the config's fields: each of ``option_aliases``
        renamed (given with the field it names as well, it is an error). Components whose
        specification options are not plain renames override this."""
        out = dict(kwargs)
        for alias, field in cls.option_aliases.items():
            if alias in out:
                if field in out:
                    raise ConfigError(f"{cls.__name__}: {alias!r} is another name for "
                                      f"{field!r}; pass one of them, not both.")
                out[field] = out.pop(alias)
        return out

    def __init__(self, config: Optional[BaseConfig] = None, **kwargs):
        if config is not None and kwargs:
            raise ValueError(f"Expected either config= or keyword arguments for {type(self).__name__}, got both.")
        if config is None:
            kwargs = self.translate_options(kwargs)
            names = {f.name for f in dataclasses.fields(self.config_class)}
            unknown = sorted(set(kwargs) - names)
            if unknown:
                import difflib

                who = getattr(self, "registered_name", "") or type(self).__name__
                hints = [f"{u!r} (did you mean {c[0]!r}?)" if (c := difflib.get_close_matches(u, names, n=1)) else
                         repr(u) for u in unknown]
                raise ConfigError(f"{who}: unknown option(s) {', '.join(hints)}. Expected some of {sorted(names)}.")
            config = self.config_class(**kwargs)
        elif not isinstance(config, self.config_class):
            raise TypeError(f"Expected a {self.config_class.__name__}, got {type(config).__name__}.")
        self.config = config

    def get_params(self) -> Dict[str, Any]:
        return self.config.to_dict()

    def save_config(self, path, overwrite: bool = False):
        """Save the config with the component's kind and registered name, so that
        ``erasus.core.registry.load(path)`` rebuilds this component."""
        name = getattr(type(self), "registered_name", None)
        if not name:
            raise ValueError(f"{type(self).__name__} is not registered: save its config with self.config.save(path).")
        return self.config.save(path, overwrite=overwrite, component={"kind": type(self).registered_kind, "name": name})

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.to_dict().items())
        return f"{type(self).__name__}({args})"


def check_supported(component, adapter) -> None:
    supports = getattr(component, "supports", ("*",))
    if "*" not in supports and adapter.family not in supports:
        name = getattr(component, "registered_name", "")
        who = f"{name} ({type(component).__name__})" if name else type(component).__name__
        why = getattr(component, "unsupported_note", "")
        raise UnsupportedModelError(
            f"{who} supports model families {supports}, got a {adapter.family!r} model"
            + (f": {why}" if why else "") + ". `erasus list` shows which components support which family."
        )


def resolve_k(n: int, k: Optional[int], prune_ratio: Optional[float]) -> int:
    """Number of samples to select from ``n``, from ``k`` or ``prune_ratio``."""
    if n == 0:
        raise DataError("The forget set is empty. Expected at least one sample to select from.")
    if k is not None and prune_ratio is not None:
        raise ConfigError(f"Expected k or prune_ratio, got both (k={k}, prune_ratio={prune_ratio}).")
    if k is None:
        ratio = 1.0 if prune_ratio is None else float(prune_ratio)
        if not 0.0 < ratio <= 1.0:
            raise ConfigError(f"Expected prune_ratio in (0, 1], got {prune_ratio}.")
        k = max(1, int(round(ratio * n)))
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ConfigError(f"Expected k to be an integer in [1, {n}] (the forget set size), got {k!r}.")
    return int(k)


class BaseSelector(Configurable):
    """Stage 1: choose ``k`` samples of the forget set.

    Subclasses implement ``_select(adapter, loader, k) -> (indices, scores)`` where
    ``loader`` iterates the dataset in order (``ordered_loader``); or, for pure scoring
    selectors, ``score(adapter, loader) -> np.ndarray`` (higher = more important) and the
    default ``_select`` takes the top ``k``.
    """

    supports: Tuple[str, ...] = ("*",)
    registered_name: str = ""

    def select(self, model, data, k: Optional[int] = None, prune_ratio: Optional[float] = None) -> Coreset:
        from ..models import wrap
        from ..utils.data import check_nonempty, ordered_loader

        adapter = wrap(model)
        check_supported(self, adapter)
        loader = ordered_loader(check_nonempty(data, "forget"))
        n = len(loader.dataset)
        k = resolve_k(n, k, prune_ratio)
        start = time.perf_counter()
        was_training = adapter.model.training
        adapter.model.eval()
        try:
            indices, scores = self._select(adapter, loader, k)
        finally:
            adapter.model.train(was_training)
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) != k or len(np.unique(indices)) != k:
            raise RuntimeError(f"{type(self).__name__} returned {len(np.unique(indices))} distinct indices, expected {k}.")
        return Coreset(
            indices,
            scores,
            {
                "selector": self.registered_name or type(self).__name__,
                "config": self.config.to_dict(),
                "k": k,
                "n": n,
                "seconds": time.perf_counter() - start,
            },
        )

    def score(self, adapter, loader) -> np.ndarray:
        raise NotImplementedError  # abstract: score-based selectors override this

    def _select(self, adapter, loader, k: int):
        scores = np.asarray(self.score(adapter, loader), dtype=np.float64)
        order = np.argsort(-scores, kind="stable")[:k]
        return order, scores[order]


class BaseMetric(Configurable):
    """Stage 3: a measurement of a model against forget / retain / test / holdout data.

    ``compute`` returns a dict of named values. ``higher_is_better`` and ``reference``
    map each returned name to its direction (True / False / None when neither: the best
    value is the reference) and its reference value (the value a model that never saw
    the forget data would have; ``"gold"`` when it must be measured on a retrained model).
    """

    higher_is_better: Dict[str, Optional[bool]] = {}
    reference: Dict[str, Any] = {}
    registered_name: str = ""
    supports: Tuple[str, ...] = ("*",)
    #: True when ``compute`` reads nothing but ``ctx.stats`` / ``ctx.lm_stats``: the
    #: verification suite then bootstraps it on resampled views of the context
    resamplable: bool = False

    def compute(self, ctx) -> Dict[str, float]:
        """Measure on an :class:`~erasus.metrics.context.EvalContext` (model, splits, gold)."""
        raise NotImplementedError  # abstract

    def samples(self, ctx) -> Dict[str, "np.ndarray"]:
        """Per-sample values whose means are ``compute``'s values, for metrics that are
        means over evaluation samples (correctness after an attack, a membership decision):
        the verification suite and the benchmark bootstrap them, paired with the retrained
        model's values on the same samples. ``{}`` for metrics that are not such means."""
        return {}


class MeanMetric(BaseMetric):
    """A metric whose values are means of per-sample values: subclasses implement
    :meth:`samples`; ``compute`` averages them."""

    def samples(self, ctx) -> Dict[str, "np.ndarray"]:
        raise NotImplementedError  # abstract

    def compute(self, ctx) -> Dict[str, float]:
        return {k: float(np.mean(v)) if len(v) else float("nan") for k, v in self.samples(ctx).items()}
