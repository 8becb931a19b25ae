"""``ComparisonVisualizer``: before / after views of an unlearning run (the specification's
``erasus.visualization.comparisons``): how predictions moved and how metrics moved."""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from ..core.exceptions import DataError
from .plots import PathLike, _finish, _plt, prediction_shift


def _flat(metrics: Mapping, prefix: str = "") -> Dict[str, float]:
    """Numeric values of a (possibly nested) metrics dict, nested keys joined with ``/``."""
    out: Dict[str, float] = {}
    for k, v in metrics.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


def metric_comparison_data(runs: Mapping[str, Mapping]) -> Dict[str, Dict[str, float]]:
    """``{metric: {run: value}}`` for the numeric metrics every run reports (nested dicts such as
    ``evaluate``'s are flattened, ``"unlearned/forget_i2t@1"``)."""
    flat = {name: _flat(m) for name, m in runs.items()}
    if not flat:
        raise DataError("Expected metrics of at least one run.")
    shared = [k for k in next(iter(flat.values())) if all(k in f for f in flat.values())]
    if not shared:
        raise DataError("Expected metric names shared by every run, got none: "
                        + "; ".join(f"{n}: {sorted(f)}" for n, f in flat.items()))
    return {k: {n: f[k] for n, f in flat.items()} for k in shared}


class ComparisonVisualizer:
    """Before / after comparisons::

        comp = ComparisonVisualizer()
        comp.plot_prediction_shift(model_before, model_after, forget_loader)
        comp.plot_metric_comparison(metrics_before, metrics_after)

    Each method returns the matplotlib figure and saves it when given ``path``."""

    def plot_prediction_shift(self, model_before, model_after, data, class_names: Optional[Sequence[str]] = None,
                              path: Optional[PathLike] = None, formats: Sequence[str] = ("png",),
                              overwrite: bool = False):
        """Counts of samples predicted as class ``i`` before and ``j`` after
        (:func:`~.plots.prediction_shift`): on a forgotten class, the row of that class empties
        into others."""
        return prediction_shift(model_before, model_after, data, path, ("before", "after"), class_names, formats,
                                overwrite)

    def plot_metric_comparison(self, metrics_before: Mapping, metrics_after: Mapping,
                               others: Optional[Mapping[str, Mapping]] = None, labels: Sequence[str] = ("before", "after"),
                               path: Optional[PathLike] = None, formats: Sequence[str] = ("png",),
                               overwrite: bool = False):
        """One panel per metric both runs report, one bar per run (``others``: more runs, such as
        ``{"retrained": metrics_retrained}``), the value written on each bar."""
        d = metric_comparison_data({labels[0]: metrics_before, labels[1]: metrics_after, **dict(others or {})})
        plt = _plt()
        cols = min(4, len(d))
        rows = -(-len(d) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.4 * rows), squeeze=False)
        for ax, (metric, vals) in zip(axes.flat, d.items()):
            bars = ax.bar(range(len(vals)), list(vals.values()), color=["#999", "#3367d6", "#137333", "#b06000"][:len(vals)])
            ax.bar_label(bars, fmt="%.3g", fontsize=7)
            ax.set_xticks(range(len(vals)), list(vals), fontsize=7)
            ax.set_title(metric, fontsize=8)
        for ax in list(axes.flat)[len(d):]:
            ax.set_visible(False)
        fig.tight_layout()
        return _finish(fig, path, formats, overwrite)
