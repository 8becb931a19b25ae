"""Plots and HTML reports of unlearning runs (matplotlib; ``pip install 'erasus[viz]'``).
See :mod:`.plots` and :mod:`.report`."""
from .plots import (generation_grid, generation_grid_data, loss_distribution_data, loss_distributions, per_class_accuracy, per_class_accuracy_data,
                    prediction_shift, prediction_shift_data, predictions, save_figure, training_history)
from .report import ReportGenerator, run_report

__all__ = ["ReportGenerator", "run_report", "generation_grid", "generation_grid_data", "loss_distribution_data", "loss_distributions", "per_class_accuracy", "per_class_accuracy_data",
           "prediction_shift", "prediction_shift_data", "predictions", "save_figure", "training_history"]
