"""SCRUB: student-teacher unlearning (Kurmanji et al., NeurIPS 2023)."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ..core.registry import register
from ..core.strategy import LossStrategy, LossStrategyConfig
from ..losses import distillation_kl


@dataclass
class SCRUBConfig(LossStrategyConfig):
    """Hyperparameters (the authors' names in brackets):

    ``alpha`` [alpha] weight of the retain KL term, 0.001; ``gamma`` [gamma] weight of
    the retain cross-entropy, 0.99; ``temperature`` [kd_T] 4; ``max_epochs_forget``
    [msteps] number of epochs that run max-steps, 2; ``epochs`` [sgda_epochs] 3 (an upper
    bound under calibrated stopping); ``optimizer`` Adam, ``lr`` 3e-4 (the authors use SGD;
    see the class docstring for why Adam); ``retain_steps_ratio``: min-steps per
    epoch as a multiple of the number of forget batches, 2 (the paper runs one pass over the retain set;
    pass ``retain_steps_per_epoch=N`` to ``unlearn``/``fit`` to override it).
    """

    alpha: float = 0.001
    gamma: float = 0.99
    temperature: float = 4.0
    max_epochs_forget: int = 2
    epochs: float = 3
    lr: float = 3e-4
    optimizer: str = "adam"
    weight_decay: float = 0.0
    retain_steps_ratio: float = 2.0

    def validate(self) -> None:
        super().validate()
        self._check_positive("temperature", "retain_steps_ratio")
        self._check_positive("alpha", "gamma", "max_epochs_forget", allow_zero=True)


@register("strategy", "scrub")
class SCRUB(LossStrategy):
    """SCRUB (SCalable Remembering and Unlearning unBound).

    Kurmanji, Triantafillou, Hayes & Triantafillou, "Towards Unbounded Machine
    Unlearning", NeurIPS 2023. The student starts as the original model; the teacher is a
    frozen copy of the original. Each epoch runs *max-steps* on forget batches,
    ``min -KL(teacher || student)`` (push away from the teacher on the forget set; only
    for the first ``max_epochs_forget`` epochs), then *min-steps* on retain batches,
    ``min γ·CE + α·KL(teacher || student)`` (stay close to the teacher on retain data).
    Deviations, both measured (``benchmarks/results/classification.md``): (1) min-steps per
    epoch are ``retain_steps_ratio`` × the number of forget batches rather than a full
    retain pass, which keeps SCRUB at a fraction of retraining cost; (2) Adam instead of
    SGD: at the start the student equals the teacher, so the max-step gradient
    ``softmax(s) − softmax(t)`` is exactly zero, and on a model without dropout or data
    augmentation that has memorised its training set the retain gradient is ~0 too; SGD
    then never leaves the starting point (measured: forget accuracy stays at 100%), while
    Adam's normalised steps do. Calibrated stopping applies, but without the trainer's
    backtracking: a max-step phase lowers retain accuracy on purpose and the min-steps
    restore it, so backing off there stopped SCRUB from forgetting at all (measured on the
    Fashion-MNIST protocol: forget accuracy 93.5% with backtracking, 0% without).

    Known limitation, measured on random-10% forgetting of the Fashion-MNIST protocol (a
    CNN without batch norm or dropout that has memorised its training set): the max-step
    objective is unbounded, and here it is not specific to the forget samples. At the
    default rate one max phase takes forget *and* retain accuracy to ~21% (forget loss 33),
    the min-steps bring both back together, and the forget set ends at ~97% accuracy
    (retrained model: ~90%); at 1e-4 or 3e-5 nothing moves; running both objectives in every
    step diverges. Also measured there (seed 0 unless noted, calibrated stopping): the
    authors' SGD at 5e-4, 2e-3, 4e-3 and 1e-2 — every max phase is a runaway that takes
    forget, retain and held-out accuracy down together (to 10-68%) and the min-steps bring
    all three back, so no checkpoint is better than the original; temperature 1 (gap 4.62);
    3× more min-steps (4.03); both objectives in every step with the retain KL weighted
    α = 0.3, 1, 3 or 10 (3 seeds: 4.81, 4.10, 4.76, 4.77). The KL-to-teacher objective has no
    term that singles out what was memorised, so on data like this it cannot separate the
    forget samples from the rest. Its 3-seed average gap to retraining is 3.93 there
    (``classification.md``, models trained on the benchmark machine; 4.05 and 3.87 on earlier
    models and stopping rules), while it forgets whole classes well (0.98). Prefer ``simnpo``
    or ``wga`` for random deletions.
    """

    config_class = SCRUBConfig
    schedule = "alternating"
    needs_retain = True


    def setup(self, forget_loader, retain_loader):
        self.teacher = copy.deepcopy(self.model).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self._n_forget_batches = len(forget_loader)

    def use_forget_phase(self, epoch: int) -> bool:
        return epoch < self.config.max_epochs_forget

    def _kl(self, batch):
        student = self.adapter.logits(batch)
        with torch.no_grad():
            teacher = self.adapter.with_model(self.teacher).logits(batch)
        return student, distillation_kl(student, teacher, self.config.temperature)

    def forget_step(self, batch, batch_idx):
        _, kl = self._kl(batch)
        return -kl

    def retain_step(self, batch, batch_idx):
        logits, kl = self._kl(batch)
        ce = self.adapter.per_sample_loss(batch, logits=logits).mean()
        return self.config.gamma * ce + self.config.alpha * kl

    def unlearn(self, model, forget_loader, retain_loader=None, holdout_loader=None, **kwargs):
        if "retain_steps_per_epoch" not in kwargs and forget_loader is not None:
            n_forget_batches = len(forget_loader) if hasattr(forget_loader, "__len__") else 1
            kwargs["retain_steps_per_epoch"] = max(1, int(round(self.config.retain_steps_ratio * n_forget_batches)))
        # max-steps leave the admissible region on purpose and min-steps repair it, so the
        # trainer's backtracking on lost utility would cut SCRUB off mid-cycle (measured)
        kwargs.setdefault("max_backoffs", 0)
        return super().unlearn(model, forget_loader, retain_loader, holdout_loader, **kwargs)

    def release(self) -> None:
        self.teacher = None
        super().release()
