"""Membership-inference metrics: loss-threshold AUC and SalUn's SVC MIA-efficacy."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.base import BaseMetric, MeanMetric
from ..core.config import BaseConfig
from ..core.exceptions import DataError
from ..core.registry import register
from ..core.stats import auc, best_threshold_accuracy, loss_auc
from .context import EvalContext, context_of


def member_losses(ctx, what: str):
    """``(forget losses, held-out losses)`` of a context that has both (members, non-members)."""
    ctx.require(what, "forget", "nonmember")
    return ctx.stats("forget")["loss"], ctx.stats("nonmember")["loss"]


@register("metric", "mia", aliases=("loss_mia", "mia_auc"))
class LossMIAMetric(BaseMetric):
    """Loss-threshold membership inference (Yeom et al., "Privacy Risk in Machine
    Learning", CSF 2018): ``mia_auc`` is the ROC AUC (scikit-learn) of the score ``−loss``
    separating forget samples (label 1) from held-out samples the model never saw
    (label 0; the ``holdout`` split, else ``test``).

    Reference 0.5: a model that never trained on the forget set cannot tell them from
    held-out data. Above 0.5 the forget set is still recognisably "seen"; well below 0.5
    it is *over*-forgotten (its loss is higher than unseen data's), which is itself a
    membership signal (the Streisand effect). Closer to 0.5 is better.
    """

    higher_is_better = {"mia_auc": None}
    reference = {"mia_auc": 0.5}
    resamplable = True

    def compute(self, ctx):
        return {"mia_auc": loss_auc(*member_losses(ctx, "mia"))}


@register("metric", "mia_accuracy", aliases=("loss_mia_accuracy",))
class LossMIAAccuracyMetric(BaseMetric):
    """The accuracy of the loss-threshold attack (Yeom et al., CSF 2018) at its best threshold,
    ``mia_accuracy``: forget samples (members) against held-out samples the model never saw,
    balanced over the two sides, ``0.5 + max_t |TPR(t) − FPR(t)| / 2`` over every loss threshold
    ``t`` and both directions (ROC curve of scikit-learn). The attacker may pick the direction: a
    forget set whose loss rose well above unseen data's (over-forgetting) is as recognisable as
    one whose loss stayed low.

    Reference 0.5 (chance). The threshold is chosen on the data it is scored on, so on small
    sets the value sits above 0.5 even for a model that never saw the forget set: compare it with
    the retrained model's (``gold_model``), or read ``mia_auc``, which needs no threshold."""

    higher_is_better = {"mia_accuracy": None}
    reference = {"mia_accuracy": 0.5}
    resamplable = True

    def compute(self, ctx):
        return {"mia_accuracy": best_threshold_accuracy(*member_losses(ctx, "mia_accuracy"))}


class MIAMetric(LossMIAMetric):
    """The specification's membership metric, the loss-threshold attack of
    :class:`LossMIAMetric`, callable on a model as well::

        MIAMetric().compute(unlearned_model, forget_loader, test_loader)   # {"mia_auc": ...}

    ``unlearned_model``: a model, an adapter or an ``UnlearningResult``; ``test_loader``: data
    the model never trained on (``holdout_loader=`` takes precedence, as in the suite). Given an
    :class:`~erasus.metrics.context.EvalContext` it is :class:`LossMIAMetric`."""

    def compute(self, ctx, forget_loader=None, test_loader=None, *, holdout_loader=None):
        if not isinstance(ctx, EvalContext):
            ctx = context_of(ctx, forget=forget_loader, test=test_loader, holdout=holdout_loader)
        return super().compute(ctx)


@dataclass
class MIAEfficacyConfig(BaseConfig):
    """``max_train``: samples per class used to fit the SVC (default 2000); ``seed``."""

    max_train: int = 2000
    seed: int = 0

    def validate(self) -> None:
        self._check_positive("max_train")


@register("metric", "mia_efficacy", aliases=("svc_mia",))
class MIAEfficacyMetric(MeanMetric):
    """MIA-efficacy of SalUn (Fan et al., ICLR 2024), after Jia et al., "Model Sparsity Can
    Simplify Machine Unlearning", NeurIPS 2023: an RBF SVC (scikit-learn, C=3) is trained
    on the model's confidence in the true label to separate retain samples (members)
    from test samples (non-members); ``mia_efficacy`` is the fraction of forget samples it
    predicts to be non-members. Reference: the retrained model's value (higher means
    more forget samples look unseen; far above the retrained value means over-forgetting).
    """

    config_class = MIAEfficacyConfig
    higher_is_better = {"mia_efficacy": None}
    reference = {"mia_efficacy": "gold"}

    def samples(self, ctx):
        """Per forget sample: 1 when the SVC calls it a non-member (the SVC is fitted once)."""
        from sklearn.svm import SVC

        ctx.require("mia_efficacy", "forget", "retain", "test")
        rng = np.random.default_rng(self.config.seed)
        r, t = ctx.stats("retain")["confidence"], ctx.stats("test")["confidence"]
        n = min(len(r), len(t), self.config.max_train)
        r = r[rng.choice(len(r), n, replace=False)]
        t = t[rng.choice(len(t), n, replace=False)]
        X = np.r_[r, t][:, None]
        y = np.r_[np.ones(n), np.zeros(n)]
        clf = SVC(C=3, gamma="auto", kernel="rbf").fit(X, y)
        pred = clf.predict(ctx.stats("forget")["confidence"][:, None])
        return {"mia_efficacy": 1.0 - pred.astype(np.float64)}


class _ThresholdMIA(BaseMetric):
    """A threshold attack on one per-sample score (higher score = "member"): ROC AUC
    (scikit-learn) of forget samples (1) against held-out samples (0). Reference 0.5;
    closer is better (well below 0.5 is over-forgetting, itself a membership signal)."""

    key = ""
    field = ""
    sign = 1.0
    resamplable = True

    def compute(self, ctx):
        ctx.require(self.registered_name, "forget", "nonmember")
        f, h = ctx.stats("forget"), ctx.stats("nonmember")
        if self.field not in f:
            raise DataError(f"{self.registered_name} needs class probabilities (a classifier), got a "
                            f"{ctx.adapter.family!r} model.")
        return {self.key: auc(self.sign * f[self.field], self.sign * h[self.field])}


@register("metric", "mia_confidence")
class ConfidenceMIAMetric(_ThresholdMIA):
    """Confidence-threshold attack (Song & Mittal, "Systematic Evaluation of Privacy Risks of
    Machine Learning Models", USENIX Security 2021): members get a higher probability on
    their true label. ``mia_confidence_auc``, reference 0.5."""

    key, field, sign = "mia_confidence_auc", "confidence", 1.0
    higher_is_better = {"mia_confidence_auc": None}
    reference = {"mia_confidence_auc": 0.5}


@register("metric", "mia_entropy")
class EntropyMIAMetric(_ThresholdMIA):
    """Entropy-threshold attack (Song & Mittal, USENIX Security 2021): members get
    lower-entropy predictions; label-free. ``mia_entropy_auc``, reference 0.5."""

    key, field, sign = "mia_entropy_auc", "entropy", -1.0
    higher_is_better = {"mia_entropy_auc": None}
    reference = {"mia_entropy_auc": 0.5}


@register("metric", "mia_modified_entropy", aliases=("mia_m_entropy",))
class ModifiedEntropyMIAMetric(_ThresholdMIA):
    """Modified-entropy attack (Song & Mittal, USENIX Security 2021): ``Mentr(p, y) =
    -(1 - p_y) log p_y - Σ_{i≠y} p_i log(1 - p_i)``, which is monotone in the correct-class
    confidence and accounts for wrong-class mass; their strongest threshold attack.
    ``mia_m_entropy_auc``, reference 0.5."""

    key, field, sign = "mia_m_entropy_auc", "m_entropy", -1.0
    higher_is_better = {"mia_m_entropy_auc": None}
    reference = {"mia_m_entropy_auc": 0.5}


@dataclass
class RMIAConfig(BaseConfig):
    """``a``: the offline approximation parameter of ``Pr(x)`` from one OUT reference model,
    0.3; ``gamma``: the likelihood-ratio threshold γ, 1.0."""

    a: float = 0.3
    gamma: float = 1.0

    def validate(self) -> None:
        self._check_range("a", 0.0, 1.0)
        self._check_positive("gamma")


@register("metric", "rmia")
class RMIAMetric(BaseMetric):
    """RMIA (Zarifzadeh, Liu, Mahloujifar & Shokri, "Low-Cost High-Power Membership Inference
    Attacks", ICML 2024), offline with a single reference model: the retrained gold model,
    which never saw the forget set, is the OUT reference.

    For a sample ``x``, ``r(x) = Pr(y|x; θ) / Pr(x)`` with ``Pr(x) ≈ ½((1 + a)·Pr(y|x; θ_ref)
    + (1 − a))`` (the paper's offline approximation). Population samples ``z`` are the
    ``holdout`` split; ``score(x)`` is the fraction of them with ``r(x) / r(z) > γ``.
    ``rmia_auc`` is the ROC AUC of the score on forget samples against the ``test`` split
    (non-members disjoint from the population; for class forgetting, its samples of the
    forgotten classes, or, when it has none, the held-out samples of those classes with the
    other held-out and test samples as the population). Reference 0.5; the retrained model
    scores about 0.5 by construction. Needs ``gold_model`` and ``holdout``.
    """

    config_class = RMIAConfig
    higher_is_better = {"rmia_auc": None}
    reference = {"rmia_auc": 0.5}
    resamplable = True

    def compute(self, ctx):
        ctx.require("rmia", "forget", "holdout")
        if ctx.gold is None:
            raise DataError("rmia uses the retrained model as its reference: pass gold_model=...")
        from .lira import rmia_ratio, rmia_scores

        def ratio(split, rows=None):
            s, g = ctx.stats(split)["confidence"], ctx.stats(split, gold=True)["confidence"]
            if rows is not None:
                s, g = s[rows], g[rows]
            return rmia_ratio(s, g, a=self.config.a)

        mode, _, classes = ctx.mode()
        test_rows = None
        if ctx.has("test"):
            labels = ctx.stats("test")["label"]
            test_rows = np.nonzero(np.isin(labels, classes))[0] if mode == "class" else np.arange(len(labels))
        if test_rows is not None and len(test_rows):
            rz, rt = ratio("holdout"), ratio("test", test_rows)
        elif mode == "class":  # non-members: held-out samples of the forgotten classes; population: the rest
            rows = ctx.nonmember_rows()
            rest = np.setdiff1d(np.arange(len(ctx.stats("holdout")["label"])), rows)
            pop = [ratio("holdout", rest)] + ([ratio("test")] if ctx.has("test") else [])
            rz, rt = np.concatenate(pop), ratio("holdout", rows)
            if len(rt) < 2 or len(rz) == 0:
                raise DataError("rmia: class forgetting needs held-out samples of the forgotten classes (non-members) "
                                "and other unseen samples (the population).")
        f = rmia_scores(ratio("forget"), rz, self.config.gamma)
        t = rmia_scores(rt, rz, self.config.gamma)
        return {"rmia_auc": auc(f, t)}
