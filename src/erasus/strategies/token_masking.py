"""Token-level unlearning: run a strategy's forget loss only on the answer tokens that
carry the forget information."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.exceptions import ConfigError
from ..core.module import frozen_copy
from ..core.registry import register
from ..models.causal_lm import IGNORE
from .composite import RestrictedConfig, _Restricted


@dataclass
class TokenMaskingConfig(RestrictedConfig):
    """``base``: the loss-based strategy whose forget loss is restricted, ``"npo"``;
    ``base_kwargs``: its hyperparameters; ``ratio``: the fraction of each answer's tokens
    unlearned (the highest-scoring ones, at least one per answer), 0.3; ``min_pmi``: tokens
    whose score is at most this many nats are never unlearned, even within the top
    ``ratio``, 0.0 (a token the question makes no more likely carries nothing of it)."""

    base: str = "npo"
    ratio: float = 0.3
    min_pmi: float = 0.0

    def validate(self) -> None:
        from ..core.registry import get
        from ..core.strategy import LossStrategy

        super().validate()
        if not issubclass(get("strategy", self.base), LossStrategy):
            raise ConfigError(f"token_masking: expected a loss-based base strategy, got {self.base!r} (a one-shot "
                              "edit has no per-token loss to restrict).")
        if not 0.0 < self.ratio <= 1.0:
            raise ConfigError(f"TokenMaskingConfig: expected 0 < ratio <= 1, got {self.ratio}.")


@torch.no_grad()
def question_pmi(adapter, batch) -> torch.Tensor:
    """Pointwise mutual information between the prompt and each scored (answer) token,
    ``log p(y_t | q, y_<t) − log p(y_t | y_<t)``, under ``adapter``'s model: the same
    answer is scored once after its question and once after only a BOS token. Aligned
    with ``labels[:, 1:]``; 0 where a token is not scored. High values mark the tokens the
    question determines (names, dates, facts), values near 0 the ones any answer would
    contain ("the", "was born in")."""
    b = adapter.to_device(batch)
    nll_q, mask = adapter.token_nll(b)
    labels = b["labels"]
    cfg = adapter.model.config
    bos = cfg.bos_token_id if cfg.bos_token_id is not None else cfg.eos_token_id
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else bos
    answers = [row[row != IGNORE] for row in labels]
    n = max(len(a) for a in answers) + 1
    ids = torch.full((len(answers), n), pad, dtype=torch.long, device=labels.device)
    att = torch.zeros_like(ids)
    lab = torch.full_like(ids, IGNORE)
    for k, a in enumerate(answers):
        ids[k, 0], ids[k, 1:len(a) + 1], att[k, :len(a) + 1], lab[k, 1:len(a) + 1] = bos, a, 1, a
    nll_0, mask_0 = adapter.token_nll({"input_ids": ids, "attention_mask": att, "labels": lab})
    pmi = torch.zeros_like(nll_q)
    for k in range(len(answers)):
        pmi[k, mask[k]] = nll_0[k, mask_0[k]] - nll_q[k, mask[k]]
    return pmi


@register("strategy", "token_masking", aliases=("selective_unlearning", "token_level_unlearning"))
class TokenMasking(_Restricted):
    """Token-level selective unlearning: the base strategy's forget loss sees only the
    answer tokens that carry the forget information; the other answer tokens are masked
    out of its labels (Wan et al., "Not Every Token Needs Forgetting: Selective Unlearning
    to Limit Change in Utility in Large Language Model Unlearning", Findings of EMNLP 2025;
    token scoring by masking the knowledge context as in Wu & Zhou, "Unlearning What
    Matters: Token-Level Attribution for Precise Language Model Unlearning", 2026).

    A token's score is its pointwise mutual information with the question under the
    original model (:func:`question_pmi`): how much more likely the question makes it.
    Per answer, the top ``ratio`` of tokens with a score above ``min_pmi`` are unlearned
    (hard selection); scores come from a frozen copy of the original, so the selection
    does not drift as the model forgets. The retain loss is the base strategy's, on every
    token. Deviation: Wan et al. select tokens with an auxiliary language model; here the
    model itself with the question removed is the reference, so no second model is needed.
    Causal language models only (batches from :class:`~erasus.models.QACollator`)."""

    config_class = TokenMaskingConfig
    supports = ("causal_lm",)

    def select(self, adapter, batch) -> dict:
        """``batch`` with ``labels`` set to ``-100`` on every answer token not selected."""
        pmi = question_pmi(adapter, batch)
        b = adapter.to_device(batch)
        labels = b["labels"].clone()
        scored = labels[:, 1:] != IGNORE
        keep = torch.zeros_like(scored)
        for k in range(len(labels)):
            idx = scored[k].nonzero().flatten()
            s = pmi[k, idx]
            top = idx[s.argsort(descending=True)[:max(1, int(round(self.config.ratio * len(idx))))]]
            top = top[pmi[k, top] > self.config.min_pmi]
            keep[k, top if len(top) else idx[s.argmax()].view(1)] = True
        labels[:, 1:][scored & ~keep] = IGNORE
        self.selected_ += int(keep.sum())
        self.scored_ += int(scored.sum())
        return {**b, "labels": labels}

    def restrict(self, adapter, base, forget_loader):
        from ..models.causal_lm import CausalLMAdapter

        if not isinstance(adapter, CausalLMAdapter):
            raise ConfigError("token_masking applies to causal language models (batches with answer tokens); got a "
                              f"{type(adapter.model).__name__}.")
        ref = adapter.with_model(frozen_copy(adapter.model))
        self.selected_, self.scored_ = 0, 0
        step = base.forget_step
        base.forget_step = lambda batch, batch_idx: step(self.select(ref, batch), batch_idx)

        def undo():
            del base.forget_step  # back to the class's method

        return f"on the top {100 * self.config.ratio:.0f}% of answer tokens by question PMI", undo

    def unlearn(self, model, forget_loader, retain_loader=None, holdout_loader=None, **kwargs):
        res = super().unlearn(model, forget_loader, retain_loader, holdout_loader, **kwargs)
        res.stop_reason += f" ({self.selected_ / max(1, self.scored_):.0%} of the forget-answer tokens seen were unlearned)"
        return res
