"""Plots of unlearning runs (matplotlib; ``pip install 'erasus[viz]'``). See :mod:`.plots`."""
from .plots import (loss_distribution_data, loss_distributions, per_class_accuracy, per_class_accuracy_data,
                    prediction_shift, prediction_shift_data, predictions, save_figure, training_history)

__all__ = ["loss_distribution_data", "loss_distributions", "per_class_accuracy", "per_class_accuracy_data",
           "prediction_shift", "prediction_shift_data", "predictions", "save_figure", "training_history"]
