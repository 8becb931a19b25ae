"""Accuracy on the forget, retain and test splits."""
from __future__ import annotations

from ..core.base import BaseMetric
from ..core.registry import register


@register("metric", "accuracy", aliases=("acc",))
class AccuracyMetric(BaseMetric):
    """Top-1 accuracy per split: ``forget_accuracy`` (UA = 1 − forget accuracy in SalUn's
    notation), ``retain_accuracy`` (RA), ``test_accuracy`` (TA).

    Reference for forget accuracy: the retrained model's (a model that never saw the forget
    samples gets about its test accuracy on them, and ~0 on a forgotten class); retain and
    test accuracy: higher is better, reference the retrained model's.
    """

    higher_is_better = {"forget_accuracy": None, "retain_accuracy": True, "test_accuracy": True}
    reference = {"forget_accuracy": "gold", "retain_accuracy": "gold", "test_accuracy": "gold"}

    def compute(self, ctx):
        out = {}
        for split in ("forget", "retain", "test"):
            if ctx.has(split):
                out[f"{split}_accuracy"] = float(ctx.stats(split)["correct"].mean())
        return out
