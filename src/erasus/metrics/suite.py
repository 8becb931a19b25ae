"""``MetricSuite``: run several registered metrics on one model with shared caching."""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Union

from ..core.registry import build
from .context import EvalContext


class MetricResults(dict):
    """The values measured, as a dict; ``missing`` says, for every value that could not be
    measured, why (e.g. ``mia_auc``: no held-out data). Looking up a missing value raises a
    ``KeyError`` carrying that reason instead of a bare key name."""

    def __init__(self, *args, missing: Optional[Dict[str, str]] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.missing: Dict[str, str] = dict(missing or {})

    def __missing__(self, key):
        if key in self.missing:
            raise KeyError(f"{key!r} was not measured: {self.missing[key]}")
        raise KeyError(f"{key!r} is not one of the values measured ({', '.join(sorted(self)) or 'none'}).")


class MetricSuite:
    """``MetricSuite(["accuracy", "mia"]).run(model, forget_loader, retain_loader, ...)``.

    Per-sample statistics are computed once per split and shared by all metrics.
    ``directions()`` and ``references()`` say, for every value returned, which way is
    better and what the reference is.
    """

    def __init__(self, metrics: Sequence[Union[str, object]] = ("accuracy", "mia"), max_samples: Optional[int] = None):
        if isinstance(metrics, str):
            metrics = [metrics]
        self.metrics = [build("metric", m) for m in metrics]
        self.max_samples = max_samples

    def run(self, model, forget_loader=None, retain_loader=None, test_loader=None, holdout_loader=None, *legacy,
            gold_model=None) -> Dict[str, float]:
        """Measure ``model``; the data as a :class:`~erasus.data.Splits` or loaders one by one;
        ``gold_model=``: a model retrained without the forget data (by keyword)."""
        from ..data.splits import legacy_positional, unpack
        from ..models import wrap

        forget_loader, retain_loader, test_loader, holdout_loader = unpack(
            forget_loader, retain_loader, test_loader, holdout_loader, "MetricSuite.run")
        gold_model = legacy_positional("MetricSuite.run", legacy, ["gold_model"], {"gold_model": gold_model})["gold_model"]

        adapter = wrap(model)
        gold = adapter.adapter_for(gold_model) if gold_model is not None else None
        ctx = EvalContext(adapter, forget_loader, retain_loader, test_loader, holdout_loader, gold,
                          max_samples=self.max_samples)
        from ..core.base import check_supported

        for m in self.metrics:  # every metric's model family first, before any measuring
            check_supported(m, adapter)  # e.g. a language-model metric on a classifier: a clear error
        out: Dict[str, float] = {}
        for m in self.metrics:
            out.update(m.compute(ctx))
        return out

    def directions(self) -> Dict[str, Optional[bool]]:
        d: Dict[str, Optional[bool]] = {}
        for m in self.metrics:
            d.update(m.higher_is_better)
        return d

    def references(self) -> Dict[str, object]:
        d: Dict[str, object] = {}
        for m in self.metrics:
            d.update(m.reference)
        return d
