"""Gradient- and error-based scoring selectors: ``gradient_norm``, ``el2n``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np
import torch

from ..core.base import BaseSelector
from ..core.config import BaseConfig
from ..core.registry import register
from ._common import _require_classifier, auto_last_layer, collect_probs_labels, per_sample_grad_norms
from .lm_gradients import GRADIENT_FAMILIES, TOKEN_FAMILIES, per_sample_gradients, token_el2n, token_uncertainty


@dataclass
class GradientNormConfig(BaseConfig):
    """``last_layer``: ``"auto"`` (exact per-sample gradients up to 5M parameters, the
    closed-form last-layer gradient above), ``True`` or ``False`` (classifiers);
    ``params``: which parameters of a language model (see
    :func:`~erasus.selectors.lm_gradients.gradient_parameters`: ``"auto"`` = LoRA adapters,
    else all up to 2M parameters, else the last block)."""

    last_layer: Union[bool, str] = "auto"
    params: Union[str, list] = "auto"

    def validate(self) -> None:
        self._check_choice("last_layer", ("auto", True, False))


@register("selector", "gradient_norm", aliases=("grad_norm", "gradnorm"))
class GradientNormSelector(BaseSelector):
    """Samples with the largest per-sample loss-gradient norm ``‖∇_θ ℓ(x, y; θ)‖₂``: the
    samples whose removal moves the parameters most (the GraNd score of Paul, Ganguli &
    Dziugaite, "Deep Learning on a Data Diet", NeurIPS 2021, computed at the trained model)."""

    config_class = GradientNormConfig
    supports = ("classifier",) + GRADIENT_FAMILIES

    def score(self, adapter, loader):
        if adapter.family in GRADIENT_FAMILIES:  # exact norms over the chosen parameters, one backward per sample
            return per_sample_gradients(adapter, loader, self.config.params, norms=True).numpy()
        return per_sample_grad_norms(adapter, loader, auto_last_layer(adapter, self.config.last_layer))


@register("selector", "el2n")
class EL2NSelector(BaseSelector):
    """EL2N score ``‖softmax(f(x)) − onehot(y)‖₂`` (Paul, Ganguli & Dziugaite, "Deep
    Learning on a Data Diet", NeurIPS 2021). Deviation: the paper averages the score over
    several networks early in training; here it is computed with the given model (pass an
    early checkpoint to reproduce the paper's setting). For language models the error norm
    is taken at each answer token (teacher forcing) and averaged over the sample's answer
    tokens (:func:`~erasus.selectors.lm_gradients.token_el2n`). CLIP: for labelled images the
    zero-shot class distribution; for image-text pairs the in-batch retrieval distribution
    (the softmax of a pair's row of similarities, whose label is its own text, as in CLIP's
    loss), the error norm averaged over the image→text and text→image directions."""

    supports = ("classifier", "clip") + TOKEN_FAMILIES
    unsupported_note = ("EL2N is the error of a predicted class distribution, and a diffusion model predicts noise; "
                        "use gradient_norm, influence or tracin")

    def score(self, adapter, loader):
        if adapter.family in TOKEN_FAMILIES:
            return token_el2n(adapter, loader).numpy()
        if adapter.family == "clip" and adapter.split(next(iter(loader)))[1] is not None:
            return _clip_pair_el2n(adapter, loader)
        if adapter.family != "clip":
            _require_classifier(adapter, "EL2N")
        probs, y = collect_probs_labels(adapter, loader)
        probs[np.arange(len(y)), y] -= 1.0
        return probs.norm(dim=1).numpy()


@torch.no_grad()
def _clip_pair_el2n(adapter, loader) -> np.ndarray:
    """EL2N of CLIP image-text pairs against the other pairs of their batch, both directions."""
    out = []
    for b in loader:
        lg = adapter.pair_logits(b).float()
        eye = torch.eye(len(lg), device=lg.device)
        out.append(0.5 * ((lg.softmax(1) - eye).norm(dim=1) + (lg.T.softmax(1) - eye).norm(dim=1)).cpu())
    return torch.cat(out).numpy()


@dataclass
class ActiveLearningConfig(BaseConfig):
    """``method``: ``"entropy"`` (prediction entropy), ``"least_confidence"`` (1 − max
    probability) or ``"margin"`` (minus the gap between the two largest probabilities)."""

    method: str = "entropy"

    def validate(self) -> None:
        self._check_choice("method", ("entropy", "least_confidence", "margin"))


@register("selector", "active_learning", aliases=("uncertainty",))
class ActiveLearningSelector(BaseSelector):
    """Uncertainty sampling (Settles, "Active Learning Literature Survey", 2009; least
    confidence, margin (Scheffer et al., 2001) and entropy (Shannon) scores): the samples the
    model is least sure about. Label-free; for unlearning they are the forget samples on
    the decision boundary, the cheapest to move. Language models: the score at each answer
    token (teacher forcing), averaged over the answer
    (:func:`~erasus.selectors.lm_gradients.token_uncertainty`)."""

    config_class = ActiveLearningConfig
    supports = ("classifier",) + TOKEN_FAMILIES

    def score(self, adapter, loader):
        if adapter.family in TOKEN_FAMILIES:  # per answer token, averaged over the answer
            return token_uncertainty(adapter, loader, self.config.method).numpy()
        _require_classifier(adapter, "active_learning")
        probs, _ = collect_probs_labels(adapter, loader)
        probs = probs.double()
        if self.config.method == "entropy":
            return -(probs * probs.clamp_min(1e-12).log()).sum(1).numpy()
        top2 = probs.topk(2, dim=1).values
        if self.config.method == "least_confidence":
            return (1.0 - top2[:, 0]).numpy()
        return -(top2[:, 0] - top2[:, 1]).numpy()
