"""Stage 3 protocols: ``UnlearningBenchmark`` and its report."""
from .benchmark import FAIL, PARTIAL, PASS, BenchmarkReport, MetricResult, UnlearningBenchmark

__all__ = ["UnlearningBenchmark", "BenchmarkReport", "MetricResult", "PASS", "PARTIAL", "FAIL"]
