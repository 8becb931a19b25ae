"""Data-valuation selectors: ``representer``, ``glister``, ``data_shapley``,
``valuation_network``.

A selector sees the model and the forget set only, so each method values forget samples
*for the forget set itself*: which samples carry the forget set's effect on the model
(``representer``, ``glister``) or are most valuable to a learner of the forget set's
labels (``data_shapley``, ``valuation_network``, on the model's frozen penultimate
features). Each docstring states where that differs from the paper's setting, where a
separate validation set is used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np
import torch

from ..core.base import BaseSelector
from ..core.config import BaseConfig
from ..core.registry import register
from ..core.exceptions import ConfigError
from ._common import _require_classifier, collect_features, last_layer_grad_factors
from .lm_gradients import GRADIENT_FAMILIES, per_sample_gradients
from .submodular import greedy_picks, pairwise_sq_dists


# ---------------------------------------------------------------------------------------
@register("selector", "representer", aliases=("representer_point",))
class RepresenterSelector(BaseSelector):
    """Representer point selection (Yeh, Kim, Yen & Ravikumar, "Representer Point Selection
    for Explaining Deep Neural Networks", NeurIPS 2018): with an L2-regularised last layer,
    every logit decomposes as ``Φ(x_t) = Σ_i α_i f_iᵀ f_t`` with representer values
    ``α_i = −1/(2λn) · ∂L(x_i, y_i)/∂Φ(x_i) = −(p_i − e_{y_i})/(2λn)`` (``f``: penultimate
    features with a bias 1). A forget sample's score is its total absolute contribution to
    the true-class logits of the forget set, ``Σ_t |α_{i, y_t}| · |f_iᵀ f_t|`` (``λ, n``
    are constant factors and do not change the ranking). Deviation: the paper first refits
    the last layer with L2 regularisation so the stationarity condition holds exactly; the
    trained head is used as is.
    """

    unsupported_note = (
        "it decomposes a softmax classifier's pre-activations over its last linear layer (Yeh "
        "et al.), which a language model's next-token head over a sequence does not reduce to; "
        "use influence or tracin")
    supports = ("classifier",)

    def score(self, adapter, loader):
        _require_classifier(adapter, "representer")
        R, H = last_layer_grad_factors(adapter, loader)            # R = p − e_y (n, C), H = [f, 1]
        y = R.argmin(1)                                             # the true class is the only negative entry
        n = len(R)
        out = torch.zeros(n, dtype=torch.float64)
        for s in range(0, n, 1024):                                 # memory: a 1024 × n block at a time
            K = (H[s:s + 1024] @ H.T).abs()                         # |f_iᵀ f_t|
            A = R[s:s + 1024][:, y].abs()                           # |α_{i, y_t}| up to the constant
            out[s:s + 1024] = (A * K).sum(1)
        return out.numpy()


# ---------------------------------------------------------------------------------------
@dataclass
class GlisterConfig(BaseConfig):
    """``eta``: step size of the one-step update GLISTER looks ahead with, 0.1; for language,
    CLIP and diffusion models ``params`` and ``project_dim`` of their per-sample gradients
    (:func:`~erasus.selectors.lm_gradients.per_sample_gradients`)."""

    eta: float = 0.1
    params: Union[str, list] = "auto"
    project_dim: int = 2048

    def validate(self) -> None:
        self._check_positive("eta", "project_dim")


def glister_gram(K: torch.Tensor, k: int, eta: float):
    """GLISTER's greedy selection in the Gram space of per-sample gradients with the
    Gauss-Newton Taylor step (see :class:`GlisterSelector`): ``(chosen, gains)``."""
    n = len(K)
    base = K.sum(1)                                                 # (K1)_e = g_eᵀ Σ_j g_j
    v = torch.zeros(n, dtype=K.dtype)                               # K[:, S] 1

    def add(j):
        v.add_(K[:, j])

    return greedy_picks(n, k, lambda: ((base - eta * (K @ v)) / n).numpy(), add)


@register("selector", "glister")
class GlisterSelector(BaseSelector):
    """GLISTER (Killamsetty, Sivasubramanian, Ramakrishnan & Iyer, "GLISTER: Generalization
    based Data Subset Selection for Efficient and Robust Learning", AAAI 2021), the greedy
    Taylor-approximated version on the last layer (the paper's own approximation for deep
    models): the subset ``S`` is grown greedily by the sample whose gradient best aligns
    with the validation gradient *after* a step of size ``eta`` on the current subset,
    ``argmax_e  ∇ℓ_e(θ)ᵀ ∇L_V(θ − η Σ_{s∈S} ∇ℓ_s(θ))``, and the validation gradient is
    recomputed (exactly, through the softmax of the last layer on frozen features) after
    every addition. The validation set is the whole forget set: the coreset is the subset
    whose update best carries the forget set's own loss signal. Scores: the marginal gain
    at the time each sample was chosen.

    Language, CLIP and diffusion models (``GRADIENT_FAMILIES``), where no closed-form last
    layer exists: the per-sample gradients are the projected ones of
    :func:`~erasus.selectors.lm_gradients.per_sample_gradients` (``params``, ``project_dim``),
    and the validation gradient after the step is its second-order Taylor expansion with the
    Gauss-Newton Hessian of the forget set, ``∇L_V(θ − ηΣ_S g_s) ≈ ḡ − η F Σ_S g_s``,
    ``F = GᵀG/n`` (the paper's Taylor approximation taken one order further, since the exact
    recomputation needs the last layer); in the Gram matrix ``K = GGᵀ`` the gain of ``e`` is
    ``((K1)_e − η (K K_{:,S} 1)_e) / n``. ``eta`` is a step in parameter units there too.
    """

    config_class = GlisterConfig
    unsupported_note = "it needs per-sample gradients, which this family's adapter does not give"
    supports = ("classifier",) + GRADIENT_FAMILIES

    def _select(self, adapter, loader, k):
        if adapter.family in GRADIENT_FAMILIES:
            c = self.config
            G = per_sample_gradients(adapter, loader, c.params, dim=c.project_dim).double()
            return glister_gram(G @ G.T, k, c.eta)
        _require_classifier(adapter, "glister")
        R, H = last_layer_grad_factors(adapter, loader)             # per-sample grad = R_i ⊗ H_i
        n, C = R.shape
        Y = torch.zeros_like(R)
        Y[torch.arange(n), R.argmin(1)] = 1.0
        P0 = R + Y                                                  # softmax probabilities
        logits0 = torch.log(P0.clamp_min(1e-300))                   # logits up to a per-row constant
        G_S = torch.zeros(C, H.shape[1], dtype=torch.float64)       # Σ_{s∈S} R_s ⊗ H_s
        taken = torch.zeros(n, dtype=torch.bool)
        chosen, gains = [], []
        for _ in range(k):
            logits = logits0 - self.config.eta * (H @ G_S.T)        # last layer after the step on S
            P = torch.softmax(logits, 1)
            G_V = (P - Y).T @ H / n                                 # validation gradient (C, d)
            gain = ((R @ G_V) * H).sum(1)                           # ∇ℓ_eᵀ ∇L_V
            gain[taken] = -torch.inf
            j = int(torch.argmax(gain))
            chosen.append(j)
            gains.append(float(gain[j]))
            taken[j] = True
            G_S += torch.outer(R[j], H[j])
        return np.array(chosen), np.array(gains)


# ---------------------------------------------------------------------------------------
def knn_shapley(X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, K: int = 5,
                exclude_self: bool = False) -> np.ndarray:
    """Exact Shapley values of training points for a K-nearest-neighbour classifier's
    validation accuracy (Jia et al., "Efficient Task-Specific Data Valuation for Nearest
    Neighbor Algorithms", VLDB 2019, Theorem 1): for each validation point, with training
    points sorted by distance ``α_1 … α_N``,
    ``s_{α_N} = 1[y_{α_N} = y]/N`` and
    ``s_{α_i} = s_{α_{i+1}} + (1[y_{α_i} = y] − 1[y_{α_{i+1}} = y])/K · min(K, i)/i``;
    values are averaged over validation points. ``exclude_self``: the validation set is
    the training set and each point is left out of its own neighbour list."""
    N = len(X_train)
    values = np.zeros(N)
    sq = (X_train ** 2).sum(1)
    for v in range(len(X_val)):
        d = sq - 2 * X_train @ X_val[v] + (X_val[v] ** 2).sum()
        order = np.argsort(d, kind="stable")
        if exclude_self:
            order = order[order != v]
        match = (y_train[order] == y_val[v]).astype(np.float64)
        m = len(order)
        s = np.zeros(m)
        s[m - 1] = match[m - 1] / m
        i = np.arange(1, m)                                         # 1-based positions 1 … m−1
        step = (match[:-1] - match[1:]) / K * np.minimum(K, i) / i
        s[:-1] = s[m - 1] + np.cumsum(step[::-1])[::-1]
        values[order] += s
    return values / len(X_val)


@dataclass
class DataShapleyConfig(BaseConfig):
    """``method``: ``"tmc"`` (truncated Monte Carlo, the paper's algorithm) or ``"knn"``
    (exact KNN-Shapley for class labels, fast); ``n_neighbors`` K of the KNN learner, 5;
    ``permutations`` for TMC, 50; ``truncation``: stop a permutation once the prefix's
    performance is within this of the full set's, 0.01; ``seed``."""

    method: str = "tmc"
    n_neighbors: int = 5
    permutations: int = 50
    truncation: float = 0.01
    seed: int = 0

    def validate(self) -> None:
        self._check_choice("method", ("tmc", "knn"))
        self._check_positive("n_neighbors", "permutations")
        self._check_positive("truncation", allow_zero=True)


@register("selector", "data_shapley", aliases=("shapley", "tmc_shapley"))
class DataShapleySelector(BaseSelector):
    """Data Shapley (Ghorbani & Zou, "Data Shapley: Equitable Valuation of Data for Machine
    Learning", ICML 2019): the Shapley value of each sample for the performance of a learner
    trained on the data, estimated by truncated Monte Carlo over random permutations (each
    sample's marginal gain when added to the prefix; a permutation is truncated once the
    prefix performs within ``truncation`` of the full set, the rest get zero); or exactly
    for a KNN learner (``method="knn"``, Jia et al. 2019). Learner and performance: a
    K-nearest-neighbour classifier on the model's frozen penultimate features, scored by
    leave-one-out accuracy on the forget set's own labels (the paper uses a separate
    validation set; a selector only has the forget set). Deviation: TMC uses the same KNN
    learner, updated incrementally per added sample, instead of retraining a model per
    prefix. High value: samples typical of their class in the model's representation.

    Language, CLIP and diffusion models, whose samples have no class label: the learner is a
    KNN *regressor* on the model's embeddings (``adapter.features``: a language model's mean
    last hidden state) of the model's own per-sample loss (standardised), with Jia et al.'s
    KNN-regression utility ``−(1/K Σ_{k≤K} y_{α_k} − y_v)²`` averaged over the forget set
    (leave-one-out), by TMC (the exact recursion of Jia et al. is for class labels: ``method``
    must be ``"tmc"``). High value: samples whose neighbours in the model's representation are
    fitted as they are, the ones that stand for the rest of the request.
    """

    config_class = DataShapleyConfig
    unsupported_note = "its learner needs the model's features and per-sample loss, which this family does not give"
    supports = ("classifier",) + GRADIENT_FAMILIES

    def score(self, adapter, loader):
        if adapter.family in GRADIENT_FAMILIES:
            from ..core.stats import split_stats

            if self.config.method == "knn":
                raise ConfigError("data_shapley on a language, CLIP or diffusion model values samples for a KNN "
                                  "regressor of the model's loss; the exact KNN recursion is for class labels: use "
                                  "method='tmc'.")
            X = collect_features(adapter, loader).astype(np.float64)
            loss = split_stats(adapter, loader)["loss"].astype(np.float64)
            return self._tmc(X, (loss - loss.mean()) / (loss.std() + 1e-12), regression=True)
        X, y = collect_features(adapter, loader, with_labels=True)
        X = X.astype(np.float64)
        if self.config.method == "knn":
            return knn_shapley(X, y, X, y, self.config.n_neighbors, exclude_self=True)
        return self._tmc(X, y)

    def _tmc(self, X, y, regression: bool = False):
        c = self.config
        n, K = len(X), c.n_neighbors
        D = loo_distances(X)
        utility = knn_regression_utility if regression else knn_utility
        full = utility(D, y, np.arange(n), K)
        rng = np.random.default_rng(c.seed)
        values = np.zeros(n)
        rows = np.arange(n)
        for _ in range(c.permutations):
            perm = rng.permutation(n)
            # incremental KNN over the prefix: each validation point's K nearest members so far
            nd = np.full((n, K), np.inf)
            hit = np.zeros((n, K))      # classes: 1 where that neighbour's label matches; regression: its target
            prev = utility(D, y, [], K)
            for j in perm:
                if abs(full - prev) < c.truncation:
                    break
                worst = nd.argmax(1)
                upd = np.nonzero(D[:, j] < nd[rows, worst])[0]
                w = worst[upd]
                nd[upd, w] = D[upd, j]
                hit[upd, w] = y[j] if regression else (y[upd] == y[j])
                cur = (-float(((hit.sum(1) / K - y) ** 2).mean()) if regression
                       else float(hit.sum()) / (K * n))
                values[j] += cur - prev
                prev = cur
        return values / c.permutations


def loo_distances(X: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances with inf on the diagonal (leave-one-out: a point is not
    its own neighbour)."""
    D = pairwise_sq_dists(X)
    np.fill_diagonal(D, np.inf)
    return D


def knn_utility(D, y, members, K) -> float:
    """The KNN utility of Jia et al. (2019): for every validation row of the distance
    matrix ``D`` (inf on the diagonal: leave-one-out), the fraction of its ``K`` nearest
    ``members`` that share its label, averaged over rows."""
    members = np.asarray(members)
    if len(members) == 0:
        return 0.0
    sub = D[:, members]
    k = min(K, len(members))
    idx = np.argpartition(sub, k - 1, axis=1)[:, :k]
    ok = np.isfinite(np.take_along_axis(sub, idx, 1))
    return float(((y[members][idx] == y[:, None]) & ok).sum() / (K * len(D)))


def knn_regression_utility(D, y, members, K) -> float:
    """Jia et al.'s (2019) KNN-regression utility: for every validation row of ``D`` (inf on
    the diagonal: leave-one-out), minus the squared error of ``1/K Σ`` of the targets of its
    ``K`` nearest ``members`` (fewer than ``K`` members: the missing ones count 0), averaged."""
    members = np.asarray(members, dtype=np.int64)
    if len(members) == 0:
        return -float((y ** 2).mean())
    sub = D[:, members]
    k = min(K, len(members))
    idx = np.argpartition(sub, k - 1, axis=1)[:, :k]
    ok = np.isfinite(np.take_along_axis(sub, idx, 1))
    pred = (y[members][idx] * ok).sum(1) / K
    return -float(((pred - y) ** 2).mean())


# ---------------------------------------------------------------------------------------
@dataclass
class ValuationNetworkConfig(BaseConfig):
    """``iterations`` of REINFORCE, 1000; ``hidden`` width of the value estimator, 64;
    ``lr`` 1e-3 (Adam); ``batch_size`` candidates per iteration, 256; ``n_neighbors`` of
    the predictor, 5; ``entropy``: the exploration term, 1e-3; ``seed``."""

    iterations: int = 1000
    hidden: int = 64
    lr: float = 1e-3
    batch_size: int = 256
    n_neighbors: int = 5
    entropy: float = 1e-3
    seed: int = 0

    def validate(self) -> None:
        self._check_positive("iterations", "hidden", "lr", "batch_size", "n_neighbors")
        self._check_positive("entropy", allow_zero=True)


@register("selector", "valuation_network", aliases=("dvrl",))
class ValuationNetworkSelector(BaseSelector):
    """A learned data-value estimator: DVRL (Yoon, Arik & Pfister, "Data Valuation using
    Reinforcement Learning", ICML 2020). A small network ``h_φ(f, y, loss)`` (penultimate
    features, one-hot label, the model's loss) outputs selection probabilities; each
    iteration samples a selection ``s ~ Bernoulli(h_φ)`` on a batch of candidates, fits
    the predictor on the selected samples, and rewards the selection with the predictor's
    performance on the forget set minus a moving-average baseline; ``φ`` follows the
    REINFORCE gradient. Scores: the trained ``h_φ`` on every forget sample. Deviations:
    the predictor is a KNN classifier on frozen features (refit in closed form every
    iteration instead of training a network), the reward is its KNN utility (Jia et al.
    2019) on the forget set's other samples (the paper uses a separate validation set),
    and a small entropy
    bonus keeps the policy from collapsing early.
    """

    config_class = ValuationNetworkConfig
    unsupported_note = (
        "its reward is a KNN classifier's accuracy on class labels, and a language model's "
        "samples have none")
    supports = ("classifier",)

    def score(self, adapter, loader):
        from ..core.stats import split_stats

        c = self.config
        X, y = collect_features(adapter, loader, with_labels=True)
        loss = split_stats(adapter, loader)["loss"]
        X = X.astype(np.float64)
        n = len(X)
        C = int(y.max()) + 1
        Xs = (X - X.mean(0)) / (X.std(0) + 1e-8)
        inp = torch.tensor(np.c_[Xs, np.eye(C)[y], np.log1p(loss)[:, None]], dtype=torch.float32)
        g = torch.Generator().manual_seed(c.seed)
        torch.manual_seed(c.seed)
        net = torch.nn.Sequential(torch.nn.Linear(inp.shape[1], c.hidden), torch.nn.ReLU(),
                                  torch.nn.Linear(c.hidden, 1))
        opt = torch.optim.Adam(net.parameters(), lr=c.lr)
        D = loo_distances(X)
        baseline = None
        for _ in range(c.iterations):
            cand = torch.randperm(n, generator=g)[: min(c.batch_size, n)]
            p = torch.sigmoid(net(inp[cand]).squeeze(1)).clamp(1e-4, 1 - 1e-4)
            s = torch.bernoulli(p.detach(), generator=g)
            chosen = cand[s.bool()].numpy()
            reward = knn_utility(D, y, chosen, c.n_neighbors)
            baseline = reward if baseline is None else 0.9 * baseline + 0.1 * reward
            logp = (s * torch.log(p) + (1 - s) * torch.log(1 - p)).sum()
            ent = -(p * torch.log(p) + (1 - p) * torch.log(1 - p)).sum()
            loss_pg = -(reward - baseline) * logp - c.entropy * ent
            opt.zero_grad()
            loss_pg.backward()
            opt.step()
        with torch.no_grad():
            return torch.sigmoid(net(inp).squeeze(1)).numpy().astype(np.float64)


# ---------------------------------------------------------------------------------------
@dataclass
class AutoSelectorConfig(BaseConfig):
    """``budget``: ``"low"`` (one forward pass), ``"medium"`` (about one forward+backward
    pass) or ``"high"`` (several); ``min_forget``: below this forget-set size selection is
    skipped (random), 200; ``max_ratio``: at or above this ``k/n`` selection is skipped, 0.5."""

    budget: str = "medium"
    min_forget: int = 200
    max_ratio: float = 0.5

    def validate(self) -> None:
        self._check_choice("budget", ("low", "medium", "high"))
        self._check_positive("min_forget")
        self._check_range("max_ratio", 0.0, 1.0)


@register("selector", "auto")
class AutoSelector(BaseSelector):
    """Picks a selector by a fixed, documented rule from the forget-set size, the model and
    the compute budget, and records its choice in the coreset's provenance
    (``provenance["auto_choice"]``).

    1. ``random`` when scoring cannot pay off: a non-classifier model (the scoring
       selectors need class probabilities), a forget set smaller than ``min_forget``, or
       ``k/n >= max_ratio`` (the coreset saves at most half of the unlearning passes, and
       a scoring pass costs about one of them).
    2. Otherwise by ``budget``, using the measured costs in ``benchmarks/results/selectors.md``
       (seconds per 1,000 samples relative to one forward+backward pass): ``low`` →
       ``el2n`` (one forward pass); ``medium`` → ``gradient_norm`` (exact per-sample
       gradients up to 5M parameters, the closed-form last-layer gradient, ≈1× a
       forward+backward pass, above); ``high`` → ``craig`` (facility location on
       last-layer gradients, which also covers the forget set's gradient diversity).
    """

    config_class = AutoSelectorConfig

    def choose(self, adapter, n: int, k: int) -> str:
        c = self.config
        if adapter.family != "classifier" or n < c.min_forget or k / n >= c.max_ratio:
            return "random"
        return {"low": "el2n", "medium": "gradient_norm", "high": "craig"}[c.budget]

    def _select(self, adapter, loader, k):
        from ..core.registry import build

        n = len(loader.dataset)
        self.choice_ = self.choose(adapter, n, k)
        return build("selector", self.choice_)._select(adapter, loader, k)

    def select(self, model, data, k=None, prune_ratio=None):
        coreset = super().select(model, data, k=k, prune_ratio=prune_ratio)
        coreset.provenance["auto_choice"] = self.choice_
        return coreset
