"""Erasus: machine unlearning that shows it worked — select, unlearn, verify.

Public names are imported lazily so that ``import erasus`` stays light (no transformers,
diffusers or scikit-learn import until they are needed).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "ErasusUnlearner": "erasus.unlearners",
    "LLMUnlearner": "erasus.unlearners",
    "Coreset": "erasus.core",
    "UnlearningModule": "erasus.core",
    "UnlearningTrainer": "erasus.core",
    "UnlearningResult": "erasus.core",
    "TrainerConfig": "erasus.core",
    "register": "erasus.core",
    "get": "erasus.core",
    "list_registered": "erasus.core",
    "UnlearningDataset": "erasus.data.datasets",
    "MetricSuite": "erasus.metrics",
    "UnlearningBenchmark": "erasus.evaluation",
    "wrap": "erasus.models",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'erasus' has no attribute {name!r}")


def __dir__():
    return __all__
