"""Gap to the gold (retrained) model, the headline number of SalUn-style tables."""
from __future__ import annotations

from ..core.base import BaseMetric
from ..core.registry import register
from .accuracy import AccuracyMetric
from .mia import MIAEfficacyMetric


@register("metric", "gold_gap", aliases=("gap", "avg_gap"))
class GoldGapMetric(BaseMetric):
    """Average absolute gap, in percentage points, between the model and the gold model
    retrained without the forget set, over forget, retain and test accuracy and
    MIA-efficacy (as in SalUn, Fan et al., ICLR 2024, "Avg. Gap"). Also reports each
    ``gap_<metric>``. Reference 0; lower is better."""

    higher_is_better = {"avg_gap": False}
    reference = {"avg_gap": 0.0}

    def compute(self, ctx):
        ctx.require("gold_gap", "forget", "retain", "test")
        mine = {**AccuracyMetric().compute(ctx), **MIAEfficacyMetric().compute(ctx)}
        gctx = ctx.for_gold()
        gold = {**AccuracyMetric().compute(gctx), **MIAEfficacyMetric().compute(gctx)}
        out = {f"gap_{k}": 100.0 * abs(mine[k] - gold[k]) for k in mine}
        out["avg_gap"] = sum(out.values()) / len(out)
        return out
