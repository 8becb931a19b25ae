"""Forget-set discovery: from a few examples (or a text) to a scored candidate forget set.

A deletion request rarely comes as a list of training indices. It comes as "everything
about this author", a handful of examples, a concept. :func:`discover` ranks a candidate
pool (the training set, or the part of it that may hold the concept) by the evidence that
each sample carries what the examples carry, under the model's own view of the data:

* ``"embedding"``: cosine similarity of the model's features (a classifier's penultimate
  layer; a language model's last hidden state averaged over the tokens) to the examples'
  mean feature direction;
* ``"gradient"``: cosine similarity of projected per-sample loss gradients to the
  examples' (LESS, Xia et al., ICML 2024, select training data by exactly this score for a
  target task; here the target is the request): samples whose training pushed the model the
  way the examples did;
* ``"both"``: the mean of the two scores' ranks (as a fraction of the pool).

The result is a ranking, scores, and a recommended cut-off: the samples a Gaussian mixture
on the scores assigns to its highest component (a data-driven threshold; it
is a proposal for the user to confirm, not a decision; the number of components is chosen
by BIC, and when one explains the scores best nothing is recommended). ``result.indices`` plugs into
``UnlearningDataset(..., forget_indices=...)`` and the selectors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from ..core.exceptions import ConfigError, DataError


@dataclass
class Discovery:
    """``scores`` (one per candidate, in the candidates' order; higher = more evidence),
    ``order`` (candidates by decreasing score), ``cutoff`` (the recommended size) and
    ``indices`` (the top ``cutoff``), ``method``, and per-method scores in ``parts``."""

    scores: np.ndarray
    order: np.ndarray
    cutoff: int
    method: str
    parts: dict = field(default_factory=dict)

    @property
    def indices(self) -> np.ndarray:
        return self.order[:self.cutoff]

    def top(self, k: int) -> np.ndarray:
        """The ``k`` best-scored candidates."""
        return self.order[:k]

    def subset(self, dataset) -> torch.utils.data.Subset:
        """The recommended candidates of ``dataset`` (the pool ``discover`` scored)."""
        return torch.utils.data.Subset(dataset, self.indices.tolist())

    def summary(self) -> str:
        s = self.scores[self.order]
        if self.cutoff == 0:
            return (f"discover ({self.method}): no group of candidates stands out in the scores (one mixture component "
                    f"fits them best); score {s[0]:.3f} at the top, {s[-1]:.3f} at the bottom: inspect the ranking")
        return (f"discover ({self.method}): {self.cutoff} of {len(self.scores)} candidates recommended; score "
                f"{s[0]:.3f} at the top, {s[max(self.cutoff - 1, 0)]:.3f} at the cut-off, {s[-1]:.3f} at the bottom")


def _features(adapter, loader) -> np.ndarray:
    from ._common import collect_features

    X = collect_features(adapter, loader)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def _gradients(adapter, loader, params, dim, seed) -> np.ndarray:
    from .lm_gradients import GRADIENT_FAMILIES, per_sample_gradients

    if adapter.family in GRADIENT_FAMILIES:
        G = per_sample_gradients(adapter, loader, params, dim=dim, seed=seed).numpy()
    elif adapter.family == "classifier":
        from .influence import ParamView, choose_last_layer

        G = ParamView(adapter, choose_last_layer(adapter, loader, "auto")).per_sample_grads(loader).numpy()
    else:
        raise ConfigError(f"Gradient evidence is not available for a {adapter.family!r} model: use "
                          "method='embedding'.")
    return G / np.maximum(np.linalg.norm(G, axis=1, keepdims=True), 1e-12)


def _similarity(X: np.ndarray, E: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``X`` to the mean of ``E``, both centred on the mean
    of ``X`` first: what every sample shares (a prompt template, the average gradient) is
    removed, so the score measures what the examples have that the pool at large has not."""
    mu = X.mean(0, keepdims=True)
    Xc, d = X - mu, (E - mu).mean(0)
    Xc = Xc / np.maximum(np.linalg.norm(Xc, axis=1, keepdims=True), 1e-12)
    return Xc @ (d / max(np.linalg.norm(d), 1e-12))


def recommended_cutoff(scores: np.ndarray, seed: int = 0, max_components: int = 5) -> int:
    """How many of the best-scored samples form the top group of the scores: a 1-D Gaussian
    mixture with 1 to ``max_components`` components, the number chosen by BIC (Schwarz,
    1978), and the run of best-scored samples assigned to the component with the highest
    mean. 0 when one component explains the scores best (no group stands out: inspect the
    ranking instead)."""
    from sklearn.mixture import GaussianMixture

    x = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
    if len(x) < 4 or np.ptp(x) == 0:
        return 0
    fits = [GaussianMixture(k, random_state=seed, n_init=3).fit(x) for k in range(1, min(max_components, len(x) - 1) + 1)]
    gm = min(fits, key=lambda m: m.bic(x))
    if gm.n_components == 1:
        return 0
    high = int(np.argmax(gm.means_.ravel()))
    order = np.argsort(-x.ravel(), kind="stable")
    member = gm.predict(x[order]) == high
    return int(np.argmin(member)) if not member.all() else len(member)


def _text_loader(adapter, query: str, tokenizer):
    if tokenizer is None:
        raise ConfigError("discover(query=...) on a language model needs tokenizer=.")
    ids = tokenizer(query)["input_ids"]
    t = torch.tensor([ids])
    return [{"input_ids": t, "attention_mask": torch.ones_like(t), "labels": t.clone()}]


def discover(model, candidates, examples=None, query: Optional[str] = None, method: str = "auto",
             tokenizer=None, params="auto", dim: int = 2048, seed: int = 0) -> Discovery:
    """Rank ``candidates`` (a loader or dataset in the model's batch format) by the evidence
    that each carries what ``examples`` (a few samples of the request, same format) or
    ``query`` (a text, for language models; needs ``tokenizer``) carry. ``method``:
    ``"embedding"``, ``"gradient"``, ``"both"`` or ``"auto"`` (both with examples, embedding
    with a text query). ``params`` / ``dim``: the parameters and projection of the gradient
    evidence (:func:`~erasus.selectors.lm_gradients.per_sample_gradients`). See the module
    docstring for the scores and the cut-off."""
    from ..models import wrap
    from ..utils.data import check_nonempty, ordered_loader

    if (examples is None) == (query is None):
        raise ConfigError("Expected examples= (a few samples of what to find) or query= (a text), not both or neither.")
    if method not in ("auto", "embedding", "gradient", "both"):
        raise ConfigError(f"Expected method 'auto', 'embedding', 'gradient' or 'both', got {method!r}.")
    if method == "auto":
        method = "embedding" if query is not None else "both"
    if query is not None and method != "embedding":
        raise ConfigError("A text query has no label to take a gradient of: use method='embedding', or pass examples.")
    adapter = wrap(model)
    pool = ordered_loader(check_nonempty(candidates, "candidate"))
    if query is not None:
        probe = _text_loader(adapter, query, tokenizer)
    else:
        probe = ordered_loader(check_nonempty(examples, "example"))
    kinds = ("embedding", "gradient") if method == "both" else (method,)
    return rank(evidence(adapter, pool, kinds, params, dim, seed), evidence(adapter, probe, kinds, params, dim, seed),
                method, seed)


def evidence(adapter, loader, kinds, params="auto", dim: int = 2048, seed: int = 0) -> dict:
    """Per-sample evidence of ``loader``'s samples (in order), one row each: ``"embedding"``
    (features) and/or ``"gradient"`` (projected per-sample gradients), unit-normalised."""
    was = adapter.model.training
    adapter.model.eval()
    try:
        out = {}
        if "embedding" in kinds:
            out["embedding"] = _features(adapter, loader)
        if "gradient" in kinds:
            out["gradient"] = _gradients(adapter, loader, params, dim, seed)
        return out
    finally:
        adapter.model.train(was)


def rank(pool: dict, probe: dict, method: str, seed: int = 0) -> Discovery:
    """Score the pool's evidence against the probe's (:func:`evidence` of both): each kind's
    :func:`_similarity`, combined by mean rank (as a fraction of the pool) when there are
    several; the ranking and the :func:`recommended_cutoff`."""
    parts = {k: _similarity(pool[k], probe[k]) for k in pool}
    if not parts:
        raise DataError("Nothing was scored.")
    if len(parts) == 1:
        scores = next(iter(parts.values()))
    else:  # the mean rank, as a fraction of the pool (1 = the best-scored sample)
        n = len(next(iter(parts.values())))
        scores = np.mean([np.argsort(np.argsort(v, kind="stable"), kind="stable") / max(n - 1, 1)
                          for v in parts.values()], axis=0)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    return Discovery(scores, order, recommended_cutoff(scores, seed), method, parts)
