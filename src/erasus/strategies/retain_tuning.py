"""Retain-only fine-tuning: forgetting through catastrophic forgetting, plain or ℓ1-sparse."""
from __future__ import annotations

from dataclasses import dataclass


from ..core.registry import register
from ..core.strategy import LossStrategy, LossStrategyConfig


@dataclass
class FineTuneConfig(LossStrategyConfig):
    """``lr`` 1e-3 (Adam), at most ``epochs`` = 10 passes (counted in forget-set-sized
    chunks of retain batches: each step is one retain batch)."""

    lr: float = 1e-3
    epochs: float = 10


@register("strategy", "fine_tune", aliases=("finetune", "ft", "retain_finetune"))
class FineTune(LossStrategy):
    """Fine-tuning on the retain set only (FT): the forget set is never shown, and its
    influence fades by catastrophic forgetting.

    The fine-tuning baseline of Golatkar, Achille & Soatto, "Eternal Sunshine of the
    Spotless Net", CVPR 2020, and Warnecke et al., "Machine Unlearning of Features and
    Labels", NDSS 2023. The forget loader only sets the step budget and is used by
    calibrated stopping to watch the forget set.
    """
    limits = ('forgetting one class of scikit-learn digits (MLP, seed 0), it stops with 78.2% of the class still '
              'recognised, with or without held-out data (fine-tuning on retain data alone forgets slowly); '
              'tests/test_first_hour.py measures it, and the run warns')

    config_class = FineTuneConfig
    needs_retain = True

    def retain_step(self, batch, batch_idx):
        return self.adapter.loss(batch)


@dataclass
class SparseAwareConfig(FineTuneConfig):
    """``l1``: the ℓ1 coefficient γ at the first step, 5e-5, decayed linearly to 0 over
    the step budget (the paper's schedule); ``lr`` 1e-3 (Adam), at most ``epochs`` = 10."""

    l1: float = 5e-5

    def validate(self) -> None:
        super().validate()
        self._check_positive("l1", allow_zero=True)


@register("strategy", "sparse_aware", aliases=("l1_sparse", "sparsity_aware"))
class SparseAware(FineTune):
    """ℓ1-sparse unlearning: retain fine-tuning with an ℓ1 penalty on the weights.

    Jia, Liu, Ram, Yao, Liu, Liu, Sharma & Liu, "Model Sparsity Can Simplify Machine
    Unlearning", NeurIPS 2023 ("ℓ1-sparse MU"): ``min_θ L(θ; D_r) + γ_t ‖θ‖₁`` with γ
    decayed linearly over the unlearning run. Sparsity lowers the gap between
    approximate unlearning and retraining; the penalty pulls weights the retain data
    does not need, among them those that encode the forget set, towards zero.
    """
    limits = ('forgetting one class of scikit-learn digits (MLP, seed 0), it stops with 70.9% of the class still '
              'recognised, with or without held-out data (fine-tuning on retain data alone forgets slowly); '
              'tests/test_first_hour.py measures it, and the run warns')

    config_class = SparseAwareConfig

    def setup(self, forget_loader, retain_loader):
        # the step budget the trainer will use: epochs × forget batches (at least 50)
        self._budget = max(1, int(self.config.epochs * len(forget_loader)), 50)

    def retain_step(self, batch, batch_idx):
        gamma = self.config.l1 * max(0.0, 1.0 - batch_idx / self._budget)
        loss = self.adapter.loss(batch)
        if gamma > 0:
            loss = loss + gamma * sum(p.abs().sum() for p in self.trainable_parameters())
        return loss
