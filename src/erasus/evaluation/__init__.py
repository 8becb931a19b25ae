"""Stage 3 protocols: ``UnlearningBenchmark`` and its report."""
from .benchmark import FAIL, PARTIAL, PASS, BenchmarkReport, MetricResult, UnlearningBenchmark
from .muse_wmdp import register as _register_muse_wmdp
from .tofu import register as _register_tofu

_register_tofu()
_register_muse_wmdp()

__all__ = ["UnlearningBenchmark", "BenchmarkReport", "MetricResult", "PASS", "PARTIAL", "FAIL"]
