"""Attacks on the unlearned model: relearning, quantization recovery, representation probes.

A model can score 0% on the forget set and still hold it: a few fine-tuning steps bring it
back (relearning), rounding the weights to low precision undoes small unlearning updates
(quantization recovery), or its features still separate the forgotten labels (probes).
Each attack here runs on the model under test and, with the same seed and data, on the
retrained gold model: the reference is what the attack gets from a model that never saw
the forget set.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from ..core.base import BaseMetric
from ..core.config import BaseConfig
from ..core.registry import register
from ..core.trainer import split_stats
from ..selectors._common import collect_features
from ..utils.misc import seed_everything


def _split_forget(loader: DataLoader, fraction: float, seed: int):
    """Disjoint (attack, evaluation) loaders over the forget set, fixed by ``seed``."""
    n = len(loader.dataset)
    perm = np.random.default_rng(seed).permutation(n)
    k = max(1, min(n - 1, int(round(fraction * n)))) if n > 1 else 1
    mk = lambda idx, shuffle: DataLoader(Subset(loader.dataset, np.sort(idx).tolist()), batch_size=loader.batch_size or 64,
                                        shuffle=shuffle, collate_fn=loader.collate_fn,
                                        generator=torch.Generator().manual_seed(seed))
    return mk(perm[:k], True), mk(perm[k:] if n > 1 else perm, False)


def relearn(model: torch.nn.Module, loader: DataLoader, steps: int = 30, lr: float = 1e-3, seed: int = 0):
    """A copy of ``model`` fine-tuned with Adam and cross-entropy for ``steps`` steps on ``loader``."""
    from ..models import wrap

    seed_everything(seed)
    m = copy.deepcopy(model).train()
    adapter = wrap(m)
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=lr)
    it, step = iter(loader), 0
    while step < steps:
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        loss = adapter.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
    return m.eval()


def _accuracy(model, loader) -> float:
    from ..models import wrap

    return float(split_stats(wrap(model), loader)["correct"].mean())


@dataclass
class RelearnConfig(BaseConfig):
    """``fraction`` of the forget set the attacker fine-tunes on, 0.1 (evaluation uses the
    rest); ``steps`` 30 and ``lr`` 1e-3 (Adam); ``seed``."""

    fraction: float = 0.1
    steps: int = 30
    lr: float = 1e-3
    seed: int = 0

    def validate(self) -> None:
        self._check_range("fraction", 0.0, 1.0)
        self._check_positive("steps", "lr")


@register("metric", "relearn", aliases=("relearning_attack",))
class RelearnAttack(BaseMetric):
    """Relearning attack (Lynch et al., "Eight Methods to Evaluate Robust Unlearning in
    LLMs", 2024; Hu et al., "Jogging the Memory of Unlearned LLMs Through Targeted
    Relearning Attacks", ICLR 2025): fine-tune a copy on a small part of the forget set
    for a few steps, then measure accuracy on the *other* forget samples.

    ``relearn_forget_accuracy`` (after the attack) with reference ``"gold"``: the same attack
    on the retrained model. A model that only suppressed the forget set springs back above
    the gold value; genuinely removed knowledge relearns no faster than it would from
    scratch. Also ``relearn_forget_accuracy_before`` on the same evaluation samples, and,
    when retain data is given, ``retain_finetune_forget_accuracy``: the same fine-tuning on
    retain data only (a benign user's further training), which must not revive the
    forget set either.
    """

    config_class = RelearnConfig
    higher_is_better = {"relearn_forget_accuracy": None, "relearn_forget_accuracy_before": None,
                        "retain_finetune_forget_accuracy": None}
    reference = {"relearn_forget_accuracy": "gold", "relearn_forget_accuracy_before": "gold",
                 "retain_finetune_forget_accuracy": "gold"}

    def compute(self, ctx) -> Dict[str, float]:
        c = self.config
        ctx.require("relearn", "forget")
        attack, evaluate = _split_forget(ctx.loaders["forget"], c.fraction, c.seed)
        model = ctx.adapter.model
        attacked = relearn(model, attack, c.steps, c.lr, c.seed)
        out = {"relearn_forget_accuracy_before": _accuracy(model, evaluate),
               "relearn_forget_accuracy": _accuracy(attacked, evaluate)}
        if ctx.has("retain"):  # benign fine-tuning on retain data only must not bring the forget set back
            out["retain_finetune_forget_accuracy"] = _accuracy(
                relearn(model, ctx.loaders["retain"], c.steps, c.lr, c.seed), evaluate)
        return out


def quantize_weights(model: torch.nn.Module, bits: int) -> torch.nn.Module:
    """A copy of ``model`` with every weight matrix / kernel rounded to ``bits``-bit
    symmetric per-output-channel integers and dequantized (round-to-nearest, the scheme of
    post-training weight quantization); biases and norms stay in full precision."""
    q = copy.deepcopy(model)
    levels = 2 ** (bits - 1) - 1
    with torch.no_grad():
        for name, p in q.named_parameters():
            if p.dim() < 2:
                continue
            w = p.float().reshape(p.shape[0], -1)
            scale = w.abs().amax(1, keepdim=True).clamp_min(1e-12) / levels
            p.copy_((torch.round(w / scale).clamp(-levels, levels) * scale).reshape(p.shape).to(p.dtype))
    return q.eval()


@register("metric", "quantization", aliases=("quantization_recovery",))
class QuantizationAttack(BaseMetric):
    """Quantization recovery attack (Zhang et al., "Catastrophic Failure of LLM Unlearning
    via Quantization", ICLR 2025): unlearning updates are small, and rounding the weights
    to int8 / int4 can undo them. Reports forget accuracy of the int8 and int4 weight
    quantized model (``int8_forget_accuracy``, ``int4_forget_accuracy``), reference
    ``"gold"``: the same quantization of the retrained model."""

    higher_is_better = {"int8_forget_accuracy": None, "int4_forget_accuracy": None}
    reference = {"int8_forget_accuracy": "gold", "int4_forget_accuracy": "gold"}

    def compute(self, ctx) -> Dict[str, float]:
        ctx.require("quantization", "forget")
        m = ctx.adapter.model
        return {f"int{b}_forget_accuracy": _accuracy(quantize_weights(m, b), ctx.loaders["forget"]) for b in (8, 4)}


@dataclass
class ProbeConfig(BaseConfig):
    """``C``: inverse L2 strength of the logistic-regression probe, 1.0; ``seed``."""

    C: float = 1.0
    seed: int = 0

    def validate(self) -> None:
        self._check_positive("C")


@register("metric", "linear_probe", aliases=("probe",))
class LinearProbe(BaseMetric):
    """Linear probe on frozen penultimate features (Alain & Bengio, "Understanding
    intermediate layers using linear classifier probes", 2016; used for unlearning by
    Goel et al., 2022): a logistic regression (scikit-learn) is fitted on the features of
    samples the model never trained on (the held-out and test splits together, so that
    every class is present) and scored on the forget set.

    ``probe_forget_accuracy``, reference ``"gold"``. After class forgetting a model can
    output 0% on the class while its features still separate it perfectly; a retrained
    model's features separate it only as well as unseen-class features generalise.
    """

    config_class = ProbeConfig
    higher_is_better = {"probe_forget_accuracy": None}
    reference = {"probe_forget_accuracy": "gold"}

    def compute(self, ctx) -> Dict[str, float]:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        from ..core.exceptions import DataError

        ctx.require("linear_probe", "forget")
        fit = [collect_features(ctx.adapter, ctx.loaders[s], with_labels=True) for s in ("holdout", "test")
               if ctx.has(s)]
        if not fit:
            ctx.require("linear_probe", "holdout")
        x_fit, y_fit = np.concatenate([f[0] for f in fit]), np.concatenate([f[1] for f in fit])
        if len(np.unique(y_fit)) < 2:
            raise DataError("linear_probe: the held-out and test data hold one class only; expected samples of "
                            "several classes to fit the probe on.")
        x_f, y_f = collect_features(ctx.adapter, ctx.loaders["forget"], with_labels=True)
        scaler = StandardScaler().fit(x_fit)
        probe = LogisticRegression(C=self.config.C, max_iter=2000, random_state=self.config.seed)
        probe.fit(scaler.transform(x_fit), y_fit)
        return {"probe_forget_accuracy": float((probe.predict(scaler.transform(x_f)) == y_f).mean())}


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear centred kernel alignment (Kornblith et al., "Similarity of Neural Network
    Representations Revisited", ICML 2019): ``‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F)`` on centred features."""
    x = x - x.mean(0, keepdims=True)
    y = y - y.mean(0, keepdims=True)
    num = np.linalg.norm(y.T @ x) ** 2
    den = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(num / den) if den > 0 else 0.0


@register("metric", "cka", aliases=("linear_cka",))
class CKAToGold(BaseMetric):
    """Linear CKA (Kornblith et al., ICML 2019) between the model's and the retrained
    model's penultimate features on the forget set (``cka_forget_to_gold``) and on the
    retain set (``cka_retain_to_gold``). Higher is better (1 = the same representation
    up to rotation and scale). Needs ``gold_model``."""

    higher_is_better = {"cka_forget_to_gold": True, "cka_retain_to_gold": True}
    reference = {"cka_forget_to_gold": 1.0, "cka_retain_to_gold": 1.0}

    def compute(self, ctx) -> Dict[str, float]:
        out = {}
        if ctx.gold is None:
            from ..core.exceptions import DataError

            raise DataError("cka needs a gold (retrained) model: pass gold_model=...")
        for split in ("forget", "retain"):
            if ctx.has(split):
                a = collect_features(ctx.adapter, ctx.loaders[split])
                b = collect_features(ctx.gold, ctx.loaders[split])
                out[f"cka_{split}_to_gold"] = linear_cka(a, b)
        return out


def attack_report(model, gold_model, forget, retain=None, test=None, holdout=None,
                  metrics=("relearn", "quantization", "linear_probe"), max_samples: Optional[int] = 2000):
    """Run the attacks on ``model`` and on ``gold_model`` with the same data and seeds;
    returns ``{name: {"model": v, "gold": v}}``."""
    from .suite import MetricSuite

    suite = MetricSuite(list(metrics), max_samples=max_samples)
    mine = suite.run(model, forget, retain, test, holdout)
    gold = suite.run(gold_model, forget, retain, test, holdout)
    return {k: {"model": mine[k], "gold": gold[k]} for k in mine}
