"""Experiment runners shared by the demo and the benchmarks; run tracking (local / MLflow) and
hyperparameter search (Optuna), ablations, and config-driven runs (:mod:`.configs`)."""
from .ablation import AblationStudy
from .runner import ResultsFile, ScenarioRow, format_table, hardware, run_meta, run_scenario
from .search import HyperparameterSearch, SearchResult
from .tracking import ExperimentTracker

__all__ = ["AblationStudy", "ExperimentTracker", "HyperparameterSearch", "ResultsFile", "SearchResult", "ScenarioRow", "format_table", "hardware", "run_meta", "run_scenario"]
