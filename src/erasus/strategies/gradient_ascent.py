"""Gradient ascent on the forget set."""
from __future__ import annotations

from dataclasses import dataclass

from ..core.registry import register
from ..core.strategy import LossStrategy, LossStrategyConfig


@dataclass
class GradientAscentConfig(LossStrategyConfig):
    """``lr`` (Adam) 1e-4 and at most ``epochs`` = 5 passes over the forget set.

    Plain gradient ascent is unbounded: without a stopping rule it drives the model to
    collapse. With held-out data the trainer's calibrated stopping ends the run when
    the forget set looks unseen and restores the best checkpoint.
    """

    lr: float = 1e-4
    epochs: float = 5


@register("strategy", "gradient_ascent", aliases=("ga",))
class GradientAscent(LossStrategy):
    """Gradient ascent: maximise the loss on the forget set, ``min_θ -L(θ; D_f)``.

    The baseline of Golatkar et al., "Eternal Sunshine of the Spotless Net: Selective
    Forgetting in Deep Networks", CVPR 2020 (and of Thudi et al., 2022, "Unrolling SGD").
    Uses no retain data.
    """
    limits = ('forgetting one class of scikit-learn digits (MLP, seed 0), it stops with 5.5% of the class still '
              'recognised, with or without held-out data (it backtracks on retain accuracy three times); '
              'tests/test_first_hour.py measures it, and the run warns')

    config_class = GradientAscentConfig
    uses_retain = False

    def forget_step(self, batch, batch_idx):
        return -self.adapter.loss(batch)
