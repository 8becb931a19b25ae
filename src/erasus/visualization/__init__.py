"""Plots and HTML reports of unlearning runs (matplotlib; ``pip install 'erasus[viz]'``).
See :mod:`.plots`, :mod:`.analysis` and :mod:`.report`; the specification's visualiser classes are in
:mod:`.visualizers`, :mod:`.attention` and :mod:`.comparisons`."""
from .plots import (cross_attention_data, cross_attention_maps, generation_grid, generation_grid_data, loss_distribution_data, loss_distributions, per_class_accuracy, per_class_accuracy_data,
                    prediction_shift, prediction_shift_data, predictions, save_figure, training_history)
from .report import ReportGenerator, run_report
from .visualizers import EmbeddingVisualizer, GradientVisualizer, LossLandscapeVisualizer

__all__ = ["EmbeddingVisualizer", "GradientVisualizer", "LossLandscapeVisualizer", "ReportGenerator", "run_report", "cross_attention_data", "cross_attention_maps", "generation_grid", "generation_grid_data", "loss_distribution_data", "loss_distributions", "per_class_accuracy", "per_class_accuracy_data",
           "prediction_shift", "prediction_shift_data", "predictions", "save_figure", "training_history"]
