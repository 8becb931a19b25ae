"""SCRUB: student-teacher unlearning (Kurmanji et al., NeurIPS 2023)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.registry import register
from ..core.strategy import LossStrategy, LossStrategyConfig
from ..losses import distillation_kl
from ..models.causal_lm import TOKEN_FAMILIES


@dataclass
class SCRUBConfig(LossStrategyConfig):
    """Hyperparameters (the authors' names in brackets):

    ``alpha`` [alpha] weight of the retain KL term, 0.5 (paper 0.001); ``gamma`` [gamma]
    weight of the retain cross-entropy, 0.99; ``temperature`` [kd_T] 2 (paper 4);
    ``max_epochs_forget`` [msteps] number of epochs that run max-steps, 5; ``epochs``
    [sgda_epochs] 5 (the authors' selective-forgetting setting is msteps 5, sgda_epochs 5;
    an upper bound under calibrated stopping); ``optimizer`` Adam, ``lr`` 3e-4 (the
    authors use SGD; see the class docstring for why Adam and why these weights);
    ``retain_steps_ratio``: min-steps per epoch as a multiple of the number of forget
    batches, 2 (the paper runs one pass over the retain set; pass
    ``retain_steps_per_epoch=N`` to ``unlearn``/``fit`` to override it).
    """

    alpha: float = 0.5
    gamma: float = 0.99
    temperature: float = 2.0
    max_epochs_forget: int = 5
    epochs: float = 5
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
    Deviations, each measured on the Fashion-MNIST protocol (``benchmarks/classification.py``;
    a CNN without batch norm or dropout that has memorised its training set):

    (1) Adam instead of SGD: at the start the student equals the teacher, so the max-step
    gradient ``softmax(s) − softmax(t)`` is exactly zero, and the retain gradient of a
    memorised model is ~0 too; SGD then never leaves the starting point (forget accuracy
    stays at 100%), or, at 1e-2, sits for 16 steps and then runs away to chance.
    (2) Min-steps per epoch are ``retain_steps_ratio`` × the number of forget batches
    rather than a full retain pass, which keeps SCRUB within a tenth of retraining cost.
    (3) ``alpha`` 0.5 and temperature 2 rather than 0.001 and 4, with the authors'
    selective-forgetting schedule (5 max epochs of 5). Each max phase takes forget, retain
    and held-out accuracy down *together* (evaluated every 8 steps at the paper's weights:
    100/99.6/90.4% to 21/21/21% in 32 steps) and the min-steps bring them back together, so
    one cycle does not separate the forget set; the separation grows over cycles (forget
    minus retain accuracy at epoch ends −2.8, −3.6, −5.2 points after epochs 4, 5, 6; the
    retrained model: −8), and the heavier retain distillation is what brings retain
    accuracy back within each epoch. Random 10%, 3 seeds, average gap to retraining: 2.86
    (3.05, 3.23, 2.31) at 9.9-11.4× faster than retraining with these defaults
    (``benchmarks/results/classification-criteria.md``), against 4.40 for the paper's α
    0.001 and temperature 4 with 2 max epochs of 3 under the same checkpoint rule; with
    four max epochs 3.66 (seed 1 never came back within the retain tolerance at an epoch
    end).
    (4) Checkpoints are taken once per epoch, after its min-steps, as in the paper's
    rewinding (SCRUB+R), on 250 samples per split, with patience 3 epochs; the trainer's
    backtracking and learning-rate growth are off, since a max phase lowers retain
    accuracy on purpose (with backtracking, forget accuracy stayed at 93.5%, against 0%
    without; with growth, the idle-looking epoch ends raised the rate and the run kept the
    original).

    Also measured there and not adopted (gaps are 3-seed means unless a seed is named):
    the authors' SGD at 5e-4, 2e-3, 4e-3 and 1e-2 (every max phase a runaway, no checkpoint
    better than the original); the authors' selective forget batch size 16 (seed 0: 3.92 at
    three times the time budget); temperature 1 (4.62); 3× more min-steps (4.03); both
    objectives in every step with the retain KL weighted 0.3, 1, 3 or 10 (4.81, 4.10, 4.76,
    4.77); coupled weight decay 5e-4 or 5e-3 (seed 0: 4.17, 4.36); min-steps at 1.75× the
    forget batches (3.94, seed 1 kept the original). The margin is thin: retain accuracy
    ends 3-4 points below the original's (95-96%), just inside the 5-point tolerance, so on
    other models a seed can keep the original (reported in the result's ``stop_reason``).
    For random deletions ``wga`` and ``simnpo`` are closer to retraining; SCRUB forgets
    whole classes well (gap 1.0).
    """
    limits = ('forgetting one class of scikit-learn digits (MLP, seed 0), it stops with 7.3% of the class still '
              'recognised, without held-out data (9.1% with it) (its patience of 3 evaluations ends it); '
              'tests/test_first_hour.py measures it, and the run warns')

    #: per-sample (classifier) or per-token (language model) output distributions to distil; a
    #: CLIP model's in-batch pair logits carry none for a forget set of one concept
    supports = ("classifier",) + TOKEN_FAMILIES
    config_class = SCRUBConfig
    schedule = "alternating"
    needs_retain = True


    def setup(self, forget_loader, retain_loader):
        self.teacher = self.frozen_reference()

    def use_forget_phase(self, epoch: int) -> bool:
        return epoch < self.config.max_epochs_forget

    def _kl(self, batch):
        student = self.adapter.distillation_logits(batch)
        with torch.no_grad():
            teacher = self.teacher.distillation_logits(batch)
        return student, distillation_kl(student, teacher, self.config.temperature)

    def forget_step(self, batch, batch_idx):
        _, kl = self._kl(batch)
        return -kl

    def retain_step(self, batch, batch_idx):
        logits, kl = self._kl(batch)
        ce = self.adapter.per_sample_loss(batch, logits=logits).mean()
        return self.config.gamma * ce + self.config.alpha * kl

    def stopping_policy(self, forget_loader, given):
        n_forget_batches = len(forget_loader) if hasattr(forget_loader, "__len__") else 1
        retain_steps = given.get("retain_steps_per_epoch") or max(
            1, int(round(self.config.retain_steps_ratio * n_forget_batches)))
        return {
            "retain_steps_per_epoch": retain_steps,
            # the paper's rewinding (SCRUB+R) keeps one checkpoint per epoch, after the min-steps; mid-epoch
            # the max-steps have lowered every accuracy together, so no checkpoint there is useful
            "eval_every_steps": n_forget_batches + retain_steps,
            "calibration_patience": 3,
            "val_max_samples": 250,
            # max-steps leave the admissible region on purpose and min-steps repair it, so the
            # trainer's backtracking on lost utility would cut SCRUB off mid-cycle (measured)
            "max_backoffs": 0,
            # nor a larger rate when the epoch ends look idle: every max phase moves the model a long way
            # (measured: with per-epoch checkpoints the growth rule raised the rate and the run kept the original)
            "max_lr_growth": 1.0,
        }

    def release(self) -> None:
        self.teacher = None
        super().release()
