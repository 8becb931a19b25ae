"""Stage 3: metrics. Each module registers its metrics on import."""
from .accuracy import AccuracyMetric
from .context import EvalContext
from .gap import GoldGapMetric
from .mia import LossMIAMetric, MIAEfficacyMetric
from .suite import MetricSuite

__all__ = ["AccuracyMetric", "EvalContext", "GoldGapMetric", "LossMIAMetric", "MIAEfficacyMetric", "MetricSuite"]
