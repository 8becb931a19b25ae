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

    config_class = GradientAscentConfig
    uses_retain = False

    def forget_step(self, batch, batch_idx):
        return -self.adapter.loss(batch)
