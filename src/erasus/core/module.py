"""``UnlearningModule``: a loss-based unlearning method is its loss and nothing else.

Override ``forget_step`` and/or ``retain_step`` (and ``setup`` for reference models, masks
or Fisher information); :class:`~erasus.core.trainer.UnlearningTrainer` runs everything else.

    class MyModule(UnlearningModule):
        def forget_step(self, batch, batch_idx):
            x, y = batch
            return -F.cross_entropy(self.model(x), y)
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from .base import Configurable


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A reference model held once, in eval mode, without gradients or optimiser state."""
    import copy

    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


class UnlearningModule(Configurable):
    """Base of loss-based methods.

    ``schedule``: ``"interleaved"`` (each optimiser step sees one forget batch and one
    retain batch, losses summed) or ``"alternating"`` (each epoch is a pass of
    forget steps followed by retain steps, each its own optimiser step, as in SCRUB).
    ``uses_retain``: whether the method needs retain data.
    """

    schedule: str = "interleaved"
    uses_retain: bool = True
    #: the run's own random generator (seeded by the trainer from its ``seed``): methods draw
    #: their random numbers (random labels, noise) from it, never from torch's global
    #: generator, so concurrent runs in threads give the results they give alone
    generator: Optional[torch.Generator] = None

    def __init__(self, model: Optional[torch.nn.Module] = None, config=None, **kwargs):
        super().__init__(config, **kwargs)
        self.adapter = None
        if model is not None:
            from ..models import wrap

            self.bind(wrap(model))

    @property
    def model(self) -> torch.nn.Module:
        if self.adapter is None:
            raise RuntimeError(f"{type(self).__name__} is not bound to a model yet.")
        return self.adapter.model

    def bind(self, adapter) -> "UnlearningModule":
        self.adapter = adapter
        return self

    # hooks ---------------------------------------------------------------------------
    def setup(self, forget_loader, retain_loader) -> None:
        """Called once before training (build teachers, masks, Fisher information)."""

    def frozen_reference(self):
        """The model as it is now, frozen (:func:`frozen_copy`), seen through the module's
        adapter: the teacher or reference of SCRUB, Bad Teacher, NPO, UNDIAL and the like,
        built once in ``setup`` (``ref.logits(batch)``, ``ref.model(x)``)."""
        return self.adapter.with_model(frozen_copy(self.model))

    def forget_step(self, batch: Any, batch_idx: int) -> Optional[torch.Tensor]:
        """Loss on a forget batch (to minimise). ``None``: no forget term."""
        return None

    def retain_step(self, batch: Any, batch_idx: int) -> Optional[torch.Tensor]:
        """Loss on a retain batch (to minimise). ``None``: no retain term."""
        return None

    def use_forget_phase(self, epoch: int) -> bool:
        """For ``alternating`` schedules: whether epoch ``epoch`` runs forget steps."""
        return True

    def trainable_parameters(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def training_step(self, forget_batch, retain_batch, batch_idx: int) -> Optional[torch.Tensor]:
        losses = []
        if forget_batch is not None:
            lf = self.forget_step(forget_batch, batch_idx)
            if lf is not None:
                losses.append(lf)
        if retain_batch is not None:
            lr = self.retain_step(retain_batch, batch_idx)
            if lr is not None:
                losses.append(lr)
        return sum(losses) if losses else None
