"""Per-example membership and unlearning attacks that train their own shadow models.

* **LiRA** (Carlini, Chien, Nasr, Song, Terzis & Tramèr, "Membership Inference Attacks
  From First Principles", IEEE S&P 2022): for every sample, the logit-scaled confidence
  ``φ = log p_y − log(1 − p_y)`` of shadow models trained with (IN) and without (OUT)
  it is modelled as two Gaussians; the target model's ``φ`` is scored by the likelihood
  ratio (online) or by its likelihood under the OUT Gaussian (offline), as the authors' code
  computes them (:func:`lira_scores`).
* **U-LiRA** (Hayes, Shumailov, Triantafillou, Khalifa & Papernot, "Inexact Unlearning
  Needs More Careful Evaluations to Avoid a False Sense of Privacy", SaTML 2025): the
  same per-example test, but between models that *unlearned* the sample and models
  *retrained* without it. A perfect unlearning method gives AUC 0.5.
* **The NeurIPS 2023 unlearning-challenge forgetting score** (Triantafillou et al., "Are we
  making progress in unlearning? Findings from the first NeurIPS unlearning
  competition", 2024): per forget sample, an ε estimated from the error rates of
  threshold attacks that tell unlearned from retrained models, bucketed and averaged.

Shadow models are trained by a callable the user gives, ``train_fn(indices, seed) ->
nn.Module``, on subsets of a population data set, so the attacks work for any model the
library can wrap. Every AUC and ROC goes through scikit-learn.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from torch.utils.data import DataLoader, Dataset

from ..core.exceptions import ConfigError, DataError
from ..core.stats import split_stats


# ---------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------
def logit_confidence(losses: np.ndarray) -> np.ndarray:
    """``φ = log p − log(1 − p)`` with ``p = exp(−loss)`` (the per-sample cross-entropy),
    computed stably: for a classifier this is ``z_y − logsumexp_{j≠y} z_j``. LiRA's
    statistic: close to Gaussian over training randomness, unlike ``p`` itself."""
    loss = np.clip(np.asarray(losses, dtype=np.float64), 1e-30, None)
    return -loss - np.log(-np.expm1(-loss))


def model_scores(model: torch.nn.Module, data, batch_size: int = 512) -> np.ndarray:
    """LiRA's statistic ``φ`` of ``model`` on every sample of ``data`` (a Dataset or a
    non-shuffling DataLoader), in data-set order. For classifiers ``φ`` comes from the
    logits in float64 (``z_y − logsumexp_{j≠y} z_j``), as in Carlini et al.: going through
    the float32 loss would round every confidently fitted sample's loss to 0 and pile
    them up on one value, exactly where the attack makes its low-FPR calls. For language
    models (no class probability) it is ``logit_confidence`` of the mean answer loss."""
    from ..models import wrap

    loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size, shuffle=False)
    stats = split_stats(wrap(model), loader)
    return stats["phi"] if "phi" in stats else logit_confidence(stats["loss"])


def roc_summary(scores: np.ndarray, is_positive: np.ndarray, fprs: Sequence[float] = (0.001, 0.01)
                ) -> Dict[str, float]:
    """AUC and TPR at fixed low false-positive rates (scikit-learn's ROC), the way LiRA is
    reported: the attack matters where it is confident, not on average."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y = np.asarray(is_positive, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    ok = np.isfinite(s)
    y, s = y[ok], s[ok]
    if y.all() or not y.any():
        raise DataError("An attack needs both positive and negative examples to score; got only one kind.")
    fpr, tpr, _ = roc_curve(y, s)
    out = {"auc": float(roc_auc_score(y, s))}
    for f in fprs:
        out[f"tpr@{100 * f:g}%fpr"] = float(np.interp(f, fpr, tpr))
    return out


def _gauss_logpdf(x, mu, sd):
    return -0.5 * ((x - mu) / sd) ** 2 - np.log(sd) - 0.5 * math.log(2 * math.pi)


def _per_example_gaussians(obs: np.ndarray, mask: np.ndarray, global_sd: bool, min_count: int = 1):
    """Mean and std of ``obs`` over models (axis 0) where ``mask`` holds, per sample;
    with ``global_sd`` the std is pooled over all samples (LiRA's fixed variance, the
    recommended choice when there are few shadow models per sample)."""
    m = mask.astype(np.float64)
    n = m.sum(0)
    mu = np.where(n >= min_count, (obs * m).sum(0) / np.maximum(n, 1), np.nan)
    resid = np.where(mask, obs - mu, 0.0)
    if global_sd:
        dof = max(1.0, float((n - 1).clip(min=0).sum()))
        sd = np.full(obs.shape[1], math.sqrt(float((resid ** 2).sum()) / dof))
    else:
        sd = np.sqrt((resid ** 2).sum(0) / np.maximum(n - 1, 1))
    return mu, np.maximum(sd, 1e-6)


# ---------------------------------------------------------------------------------------
# LiRA
# ---------------------------------------------------------------------------------------
@dataclass
class ShadowModels:
    """Shadow models' statistics on a population: ``scores[m, i]`` is ``φ`` of model ``m``
    on sample ``i``; ``members[m, i]`` whether sample ``i`` was in model ``m``'s training
    set."""

    scores: np.ndarray
    members: np.ndarray
    train_seconds: float = 0.0

    def __post_init__(self):
        self.scores = np.asarray(self.scores, dtype=np.float64)
        self.members = np.asarray(self.members, dtype=bool)
        if self.scores.shape != self.members.shape or self.scores.ndim != 2:
            raise DataError(f"Expected scores and members of the same (n_models, n_samples) shape, got "
                            f"{self.scores.shape} and {self.members.shape}.")

    @property
    def n_models(self) -> int:
        return self.scores.shape[0]

    @staticmethod
    def balanced_membership(n_models: int, n_samples: int, seed: int = 0) -> np.ndarray:
        """Each sample is IN for exactly half of the models (LiRA's split), so every sample
        has both IN and OUT shadows."""
        rng = np.random.default_rng(seed)
        order = rng.random((n_models, n_samples)).argsort(0)
        return order < n_models // 2

    @classmethod
    def train(cls, train_fn: Callable[[np.ndarray, int], torch.nn.Module], population: Dataset,
              n_models: int = 16, seed: int = 0, progress: bool = True) -> "ShadowModels":
        """Train ``n_models`` shadow models, each on a random half of ``population``
        (``train_fn(indices, seed)`` trains one model from scratch on those indices) and
        record their statistic on the whole population."""
        import time

        if n_models < 2:
            raise ConfigError(f"Expected n_models >= 2 (IN and OUT shadows for every sample), got {n_models}.")
        members = cls.balanced_membership(n_models, len(population), seed)
        scores = np.zeros(members.shape)
        t0 = time.perf_counter()
        for m in tqdm(range(n_models), desc="shadow models", disable=not progress, leave=False):
            model = train_fn(np.nonzero(members[m])[0], seed * 1000 + m)
            scores[m] = model_scores(model, population)
        return cls(scores, members, time.perf_counter() - t0)

    def leave_one_out(self, online: bool = True, fix_variance: Optional[bool] = None,
                      convention: str = "reference") -> Dict[str, float]:
        """LiRA's standard evaluation: each shadow model in turn is the target and the
        others are its shadows; the result averages AUC / TPR@FPR over targets
        (``convention``: see :func:`lira_scores`)."""
        rows = []
        for t in range(self.n_models):
            keep = np.arange(self.n_models) != t
            s = lira_scores(self.scores[t], self.scores[keep], self.members[keep], online, fix_variance, convention)
            rows.append(roc_summary(s, self.members[t]))
        return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


LIRA_CONVENTIONS = ("reference", "paper", "erasus")


def _reference_gaussians(obs: np.ndarray, mask: np.ndarray, fix_variance: bool, pooled_from: np.ndarray = None):
    """LiRA's Gaussians as ``research/mi_lira_2021/plot.py`` fits them: per sample, the first
    ``min_count`` shadow values (the smallest count over samples, so every sample has as many),
    their median as the centre and their standard deviation (ddof 0) as the scale; with
    ``fix_variance`` one standard deviation of all those values together (of ``pooled_from``'s
    when given: the online attack uses the IN values' for both sides)."""
    cols = [obs[mask[:, j], j] for j in range(obs.shape[1])]
    size = min(len(c) for c in cols)
    dat = np.array([c[:size] for c in cols])
    mu = np.median(dat, 1)
    if fix_variance:
        sd = np.full(len(mu), float(np.std(dat if pooled_from is None else pooled_from)))
    else:
        sd = np.std(dat, 1)
    return mu, sd, dat


def lira_scores(target: np.ndarray, shadow_scores: np.ndarray, shadow_members: np.ndarray,
                online: bool = True, fix_variance: Optional[bool] = None, convention: str = "reference") -> np.ndarray:
    """LiRA membership scores (higher = member) for a target model's statistic ``target``
    (one value per population sample).

    ``convention="reference"`` (default) computes what the authors' code computes
    (``research/mi_lira_2021/plot.py`` in tensorflow/privacy, reproduced on a fixture by
    ``tests/test_lm_reference.py``): per sample the median and the standard deviation (ddof 0)
    of an equal number of shadow values; online ``log N(φ; μ_in, σ_in²) − log N(φ; μ_out,
    σ_out²)``; offline ``−log N(φ; μ_out, σ_out²)`` (two-sided: far from the OUT models in either
    direction counts as a member); ``fix_variance`` one σ over all IN values for both sides
    online, over all OUT values offline. ``convention="paper"``: the same estimates, with the
    offline test the paper's text describes, one-sided, ``log Φ((φ − μ_out)/σ_out)`` (larger
    than OUT models give); measured on digits MLPs with 8 shadows it is the stronger offline
    attack (AUC 0.58 against the two-sided 0.51; ``tests/test_lira.py``).
    ``convention="erasus"``: the mean and the unbiased standard deviation, ``fix_variance``
    pooling the per-sample residuals, the one-sided offline test (Erasus before 0.2).
    ``fix_variance`` defaults to True when fewer than 32 shadows per side, as the paper
    recommends for few shadows."""
    from scipy.stats import norm

    if convention not in LIRA_CONVENTIONS:
        raise ConfigError(f"Expected convention in {LIRA_CONVENTIONS}, got {convention!r}.")
    shadow_scores = np.asarray(shadow_scores, dtype=np.float64)
    shadow_members = np.asarray(shadow_members, dtype=bool)
    n_in = shadow_members.sum(0)
    n_out = (~shadow_members).sum(0)
    if (n_out < 1).any() or (online and (n_in < 1).any()):
        raise DataError("Every sample needs OUT shadow models (and IN ones for online LiRA); train more shadows "
                        "or use ShadowModels.balanced_membership.")
    if fix_variance is None:
        fix_variance = int(np.median(n_out)) < 32
    target = np.asarray(target, dtype=np.float64)
    if convention in ("reference", "paper"):
        if online:
            mu_in, sd_in, dat_in = _reference_gaussians(shadow_scores, shadow_members, fix_variance)
            mu_out, sd_out, _ = _reference_gaussians(shadow_scores, ~shadow_members, fix_variance,
                                                     pooled_from=dat_in if fix_variance else None)
            return norm.logpdf(target, mu_in, sd_in + 1e-30) - norm.logpdf(target, mu_out, sd_out + 1e-30)
        mu_out, sd_out, _ = _reference_gaussians(shadow_scores, ~shadow_members, fix_variance)
        if convention == "paper":
            return norm.logcdf((target - mu_out) / (sd_out + 1e-30))
        return -norm.logpdf(target, mu_out, sd_out + 1e-30)
    mu_out, sd_out = _per_example_gaussians(shadow_scores, ~shadow_members, fix_variance)
    if not online:
        return norm.logcdf((target - mu_out) / sd_out)
    mu_in, sd_in = _per_example_gaussians(shadow_scores, shadow_members, fix_variance)
    return _gauss_logpdf(target, mu_in, sd_in) - _gauss_logpdf(target, mu_out, sd_out)


def rmia_ratio(target_conf: np.ndarray, ref_conf: np.ndarray, ref_members: Optional[np.ndarray] = None,
               a: float = 0.3, out_only: bool = False) -> np.ndarray:
    """RMIA's ``r(x) = Pr(y|x; θ) / Pr(x)`` (Zarifzadeh et al., ICML 2024) with
    ``Pr(x)`` the mean of the reference models' ``p_y`` (``ref_conf``, models × samples),
    where an OUT reference's ``p`` is replaced by the paper's offline correction
    ``½((1 + a)p + (1 − a))`` and IN references count as they are (``ref_members``;
    default: all OUT). ``out_only``: the offline attack, averaging only each sample's OUT
    references."""
    ref_conf = np.atleast_2d(ref_conf)
    members = np.zeros(ref_conf.shape, dtype=bool) if ref_members is None else np.atleast_2d(ref_members)
    ref = np.where(members, ref_conf, 0.5 * ((1 + a) * ref_conf + (1 - a)))
    w = (~members if out_only else np.ones_like(members)).astype(np.float64)
    if (w.sum(0) == 0).any():
        raise DataError("Offline RMIA needs at least one OUT reference model for every sample.")
    pr_x = (ref * w).sum(0) / w.sum(0)
    return np.asarray(target_conf, dtype=np.float64) / np.maximum(pr_x, 1e-30)


def rmia_scores(ratio_x: np.ndarray, ratio_population: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """RMIA's score: the fraction of population samples ``z`` with ``r(x)/r(z) > γ``."""
    rz = np.sort(np.asarray(ratio_population, dtype=np.float64))
    return np.searchsorted(rz, np.asarray(ratio_x) / gamma, side="left") / len(rz)


# ---------------------------------------------------------------------------------------
# unlearning: U-LiRA and the NeurIPS 2023 forgetting score
# ---------------------------------------------------------------------------------------
@dataclass
class UnlearningShadows:
    """Per-example statistics of unlearned and retrained models on one population.

    ``unlearned[k, i]`` / ``retrained[k, i]``: ``φ`` of the ``k``-th unlearned model and
    of the ``k``-th model retrained without the forget set, on population sample ``i``;
    ``forgotten[k, i]`` whether sample ``i`` was in the ``k``-th forget set (only those
    entries are tested)."""

    unlearned: np.ndarray
    retrained: np.ndarray
    forgotten: np.ndarray
    extra: Dict[str, float] = field(default_factory=dict)

    @classmethod
    def run(cls, train_fn: Callable[[np.ndarray, int], torch.nn.Module],
            unlearn_fn: Callable[[torch.nn.Module, np.ndarray, np.ndarray, int], torch.nn.Module],
            population: Dataset, n_pairs: int = 8, train_fraction: float = 0.5, n_targets: int = 100,
            targets: Optional[np.ndarray] = None, fixed_forget: Optional[np.ndarray] = None, seed: int = 0,
            progress: bool = True) -> "UnlearningShadows":
        """Train ``n_pairs`` (original, unlearned, retrained) triples on one population.

        U-LiRA's design (Hayes et al.): ``targets`` (default ``n_targets`` random
        population samples) are in every original model's training set, and each pair
        forgets a different half of them (each target is forgotten by exactly half of
        the pairs); the rest of the training set is a random ``train_fraction`` of the
        other samples. The NeurIPS-challenge design: ``fixed_forget`` indices are
        forgotten by every pair. Each pair trains ``train_fn(train_idx, seed)``, unlearns
        with ``unlearn_fn(model, forget_idx, retain_idx, seed)`` and retrains
        ``train_fn(retain_idx, seed')`` from scratch."""
        rng = np.random.default_rng(seed)
        n = len(population)
        if fixed_forget is not None:
            pool = np.unique(np.asarray(fixed_forget))
            assign = np.ones((n_pairs, len(pool)), dtype=bool)
        else:
            pool = (np.unique(np.asarray(targets)) if targets is not None
                    else np.sort(rng.choice(n, min(n_targets, n // 4), replace=False)))
            if n_pairs < 4:
                raise ConfigError(f"Expected n_pairs >= 4 (each target forgotten by at least 2 other pairs), got {n_pairs}.")
            assign = ShadowModels.balanced_membership(n_pairs, len(pool), seed)
        others = np.setdiff1d(np.arange(n), pool)
        shape = (n_pairs, n)
        unl, ret, forgotten = np.zeros(shape), np.zeros(shape), np.zeros(shape, dtype=bool)
        for k in tqdm(range(n_pairs), desc="unlearned/retrained pairs", disable=not progress, leave=False):
            forget = pool[assign[k]]
            rest = np.sort(np.r_[pool[~assign[k]], rng.choice(others, int(round(train_fraction * len(others))),
                                                             replace=False)])
            s = seed * 1000 + k
            original = train_fn(np.sort(np.r_[forget, rest]), s)
            unl[k] = model_scores(unlearn_fn(original, forget, rest, s), population)
            ret[k] = model_scores(train_fn(rest, s + 500), population)
            forgotten[k, forget] = True
        return cls(unl, ret, forgotten)

    def ulira(self, fix_variance: Optional[bool] = True) -> Dict[str, float]:
        """U-LiRA, leave-one-pair-out: for each pair ``k`` and each sample it forgot, the
        other pairs' unlearned and retrained statistics on that sample (only from pairs
        that also forgot it) give two Gaussians; the likelihood ratio scores the pair's
        unlearned model (positive) and retrained model (negative). AUC 0.5: unlearned
        models cannot be told from retrained ones, sample by sample."""
        K = self.unlearned.shape[0]
        scores, labels = [], []
        for k in range(K):
            keep = np.arange(K) != k
            mask = self.forgotten[keep]
            cols = np.nonzero(self.forgotten[k] & (mask.sum(0) >= 2))[0]
            if len(cols) == 0:
                continue
            mu_u, sd_u = _per_example_gaussians(self.unlearned[keep][:, cols], mask[:, cols], bool(fix_variance))
            mu_r, sd_r = _per_example_gaussians(self.retrained[keep][:, cols], mask[:, cols], bool(fix_variance))
            for obs, lab in ((self.unlearned[k, cols], 1), (self.retrained[k, cols], 0)):
                scores.append(_gauss_logpdf(obs, mu_u, sd_u) - _gauss_logpdf(obs, mu_r, sd_r))
                labels.append(np.full(len(cols), lab))
        if not scores:
            raise DataError("U-LiRA needs samples forgotten by at least 3 pairs; use more pairs or fixed_forget.")
        return roc_summary(np.concatenate(scores), np.concatenate(labels).astype(bool))

    def forgetting_score(self, delta: float = 0.01, bin_width: float = 0.5) -> "ForgettingScore":
        """The NeurIPS 2023 challenge's forgetting quality over the samples forgotten by every
        pair (the challenge's setting: one fixed forget set; see :func:`forgetting_score`)."""
        cols = np.nonzero(self.forgotten.all(0))[0]
        if len(cols) == 0:
            raise DataError("The forgetting score needs a forget set shared by all pairs: pass fixed_forget=... "
                            "to UnlearningShadows.run.")
        return forgetting_score(self.unlearned[:, cols], self.retrained[:, cols], delta, bin_width)


def per_example_epsilon(unlearned: np.ndarray, retrained: np.ndarray, delta: float = 0.01) -> float:
    """ε of one sample from threshold attacks on the 1-D outputs of ``N`` unlearned and
    ``N`` retrained models: for every threshold (between sorted values, both directions)
    ``ε = max(log((1 − δ − FPR)/FNR), log((1 − δ − FNR)/FPR))`` over the attacks whose
    rates are nonzero; the largest over thresholds. Zero rates cannot be estimated from
    ``N`` models and are skipped, so ε is at most about ``log N``."""
    u, r = np.sort(np.asarray(unlearned, float)), np.sort(np.asarray(retrained, float))
    th = np.unique(np.r_[u, r, -np.inf])
    # rule: "unlearned" if value > t
    fnr = np.searchsorted(u, th, side="right") / len(u)       # unlearned called retrained
    fpr = 1.0 - np.searchsorted(r, th, side="right") / len(r)  # retrained called unlearned
    eps = [0.0]
    for a, b in ((fpr, fnr), (fnr, fpr)):  # both directions of the rule
        with np.errstate(divide="ignore", invalid="ignore"):
            e1 = np.log((1 - delta - a) / b)
            e2 = np.log((1 - delta - b) / a)
        for e, den in ((e1, b), (e2, a)):
            v = e[(den > 0) & np.isfinite(e)]
            if len(v):
                eps.append(float(v.max()))
    return max(eps)


@dataclass
class ForgettingScore:
    """``epsilons`` per forget sample, ``per_example`` = ``2^{-⌊ε / bin_width⌋}`` and
    ``score`` their mean (1 is best: no attack tells unlearned from retrained)."""

    epsilons: np.ndarray
    per_example: np.ndarray
    score: float

    def final(self, retain_acc: float, retain_acc_gold: float, test_acc: float, test_acc_gold: float) -> float:
        """The challenge's final score: forgetting quality times the unlearned/retrained
        ratios of retain and test accuracy."""
        return self.score * (retain_acc / retain_acc_gold) * (test_acc / test_acc_gold)


def forgetting_score(unlearned: np.ndarray, retrained: np.ndarray, delta: float = 0.01,
                     bin_width: float = 0.5) -> ForgettingScore:
    """The NeurIPS 2023 unlearning challenge's forgetting quality (Triantafillou et al.
    2024): ``unlearned`` and ``retrained`` are (N models, n forget samples) statistics;
    per sample an ε (:func:`per_example_epsilon`), bucketed into bins of ``bin_width``
    scored ``2/2^n`` for the ``n``-th bin (1, ½, ¼, …), averaged over samples. Deviation:
    the challenge used 512 models per side; with small ``N`` ε is capped near ``log N``
    and noisier, which is why the small-N setting is documented as such in results."""
    unlearned, retrained = np.atleast_2d(unlearned), np.atleast_2d(retrained)
    if unlearned.shape[1] != retrained.shape[1]:
        raise DataError(f"Expected the same forget samples for both model sets, got {unlearned.shape[1]} and "
                        f"{retrained.shape[1]} columns.")
    if min(unlearned.shape[0], retrained.shape[0]) < 2:
        raise ConfigError("The forgetting score needs at least 2 unlearned and 2 retrained models.")
    eps = np.array([per_example_epsilon(unlearned[:, i], retrained[:, i], delta) for i in range(unlearned.shape[1])])
    per = 2.0 ** (-np.floor(eps / bin_width))
    return ForgettingScore(eps, per, float(per.mean()))
