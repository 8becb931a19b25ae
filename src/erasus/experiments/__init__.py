"""Experiment runners shared by the demo and the benchmarks."""
from .runner import ScenarioRow, format_table, merge_previous, run_meta, run_scenario

__all__ = ["ScenarioRow", "format_table", "merge_previous", "run_meta", "run_scenario"]
