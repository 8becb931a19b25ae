"""Experiment runners shared by the demo and the benchmarks; run tracking (local / MLflow) and
hyperparameter search (Optuna)."""
from .runner import ScenarioRow, format_table, hardware, merge_previous, run_meta, run_scenario
from .search import HyperparameterSearch, SearchResult
from .tracking import ExperimentTracker

__all__ = ["ExperimentTracker", "HyperparameterSearch", "SearchResult", "ScenarioRow", "format_table", "hardware", "merge_previous", "run_meta", "run_scenario"]
