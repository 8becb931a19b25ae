"""Certified removal for L2-regularised logistic regression (Guo et al., ICML 2020).

Guo, Goldstein, Hannun & van der Maaten, "Certified Data Removal from Machine Learning
Models", ICML 2020. Training minimises the *perturbed* objective

    L_b(w; D) = Σ_i ℓ(y_i wᵀx_i) + (λ n / 2) ‖w‖² + bᵀw,     b ~ N(0, σ² I),

with the logistic loss ℓ(z) = log(1 + e^{-z}) and labels y ∈ {−1, +1}. Removing a set R
of m samples is one Newton step on the remaining data D' = D \\ R:

    Δ = Σ_{i∈R} ∇ℓ_i(w*) + λ m w*,     H = ∇²L(w*; D'),     w⁻ = w* + H⁻¹Δ.

The step leaves a gradient residual ‖∇L_b(w⁻; D')‖ bounded by the data-dependent bound
(their Corollary 1 with γ = 1/4, the Lipschitz constant of ℓ'')
``γ ‖X'‖₂ ‖H⁻¹Δ‖₂ ‖X' H⁻¹Δ‖₂``. While the residuals accumulated over all removals stay
within ``ε' = σ ε / c`` with ``c = sqrt(2 log(1.5/δ))``, the model is (ε, δ)-certified: its
distribution is (ε, δ)-indistinguishable from that of a model trained without R. Beyond
the budget the guarantee is gone and the model must be retrained.

Multi-class problems use one-vs-rest heads (as in the paper's experiments); the heads form
one parameter vector, the noise covers all of it, and the residual bound is the Euclidean
norm of the per-head bounds (the gradient of a sum of independent heads' losses is their
concatenation). For a network, fit this on frozen features of an extractor that was not
trained on the private data (the paper's "public feature extractor" setting): the
certificate covers the linear layer only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import torch


def _c(delta: float) -> float:
    return math.sqrt(2.0 * math.log(1.5 / delta))


@dataclass
class RemovalRecord:
    n_removed: int
    residual_bound: float


@dataclass
class CertifiedLogisticRegression:
    """One-vs-rest L2-regularised logistic regression trained with loss perturbation.

    ``lam``: λ (the regulariser is ``λ n / 2 ‖w‖²``); ``sigma``: standard deviation of the
    objective perturbation ``b`` (0 disables it, and with it any certificate); ``seed`` of
    ``b``; ``fit_intercept`` appends a constant-1 feature (regularised like the others,
    as in the paper). Works in float64.
    """

    lam: float = 1e-3
    sigma: float = 1.0
    seed: int = 0
    fit_intercept: bool = True
    max_iter: int = 500
    W: Optional[torch.Tensor] = None             # (d, K)
    classes_: Optional[np.ndarray] = None
    n_train: int = 0
    fit_gradient_norm: float = 0.0
    removals: List[RemovalRecord] = field(default_factory=list)
    _X: Optional[torch.Tensor] = None
    _Y: Optional[torch.Tensor] = None            # (n, K) in {-1, +1}
    _b: Optional[torch.Tensor] = None
    _alive: Optional[np.ndarray] = None

    def _design(self, X) -> torch.Tensor:
        X = torch.as_tensor(np.asarray(X), dtype=torch.float64)
        if self.fit_intercept:
            X = torch.cat([X, torch.ones(len(X), 1, dtype=torch.float64)], 1)
        return X

    def _objective(self, W, X, Y, n):
        z = Y * (X @ W)
        return torch.nn.functional.softplus(-z).sum() + 0.5 * self.lam * n * (W * W).sum() + (self._b * W).sum()

    def fit(self, X, y) -> "CertifiedLogisticRegression":
        X = self._design(X)
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(f"Expected at least 2 classes, got {len(self.classes_)}.")
        K = 1 if len(self.classes_) == 2 else len(self.classes_)
        pos = [self.classes_[1]] if K == 1 else list(self.classes_)
        Y = torch.stack([torch.as_tensor(np.where(y == c, 1.0, -1.0)) for c in pos], 1).double()
        g = torch.Generator().manual_seed(self.seed)
        self._b = self.sigma * torch.randn(X.shape[1], K, generator=g, dtype=torch.float64)
        self._X, self._Y, self._alive, self.n_train = X, Y, np.ones(len(X), dtype=bool), len(X)
        W = torch.zeros(X.shape[1], K, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([W], lr=1.0, max_iter=self.max_iter, tolerance_grad=1e-12, tolerance_change=1e-14,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = self._objective(W, X, Y, len(X))
            loss.backward()
            return loss

        opt.step(closure)
        self.W = W.detach()
        self.removals = []
        self.fit_gradient_norm = self.gradient_norm()
        return self

    # ------------------------------------------------------------------------------------
    def gradient_norm(self) -> float:
        """‖∇L_b(W; D_alive)‖ at the current weights (0 at an exact minimiser)."""
        W = self.W.clone().requires_grad_(True)
        m = torch.as_tensor(self._alive)
        loss = self._objective(W, self._X[m], self._Y[m], int(m.sum()))
        (g,) = torch.autograd.grad(loss, W)
        return float(g.norm())

    def remove(self, indices) -> float:
        """Remove training samples ``indices`` (positions in the data given to ``fit``) with
        one Newton step; returns the data-dependent bound on the gradient residual it adds."""
        idx = np.unique(np.asarray(indices, dtype=np.int64))
        if len(idx) == 0:
            raise ValueError("Expected at least one index to remove.")
        if not self._alive[idx].all():
            raise ValueError(f"Samples {idx[~self._alive[idx]].tolist()[:5]} were already removed.")
        keep = self._alive.copy()
        keep[idx] = False
        Xr, Yr = self._X[idx], self._Y[idx]
        Xk, Yk = self._X[torch.as_tensor(keep)], self._Y[torch.as_tensor(keep)]
        n_keep, m = int(keep.sum()), len(idx)
        bounds, W_new = [], self.W.clone()
        norm_X = float(torch.linalg.matrix_norm(Xk, ord=2))
        for k in range(self.W.shape[1]):
            w = self.W[:, k]
            zr = Yr[:, k] * (Xr @ w)
            grad_loss = -(torch.sigmoid(-zr) * Yr[:, k])[:, None] * Xr     # ∇ℓ_i for the removed samples
            delta = grad_loss.sum(0) + self.lam * m * w
            zk = Yk[:, k] * (Xk @ w)
            s = torch.sigmoid(zk) * torch.sigmoid(-zk)                      # ℓ''
            H = Xk.T @ (s[:, None] * Xk) + self.lam * n_keep * torch.eye(len(w), dtype=torch.float64)
            step = torch.linalg.solve(H, delta)
            W_new[:, k] = w + step
            bounds.append(0.25 * norm_X * float(step.norm()) * float((Xk @ step).norm()))
        self.W = W_new
        self._alive = keep
        bound = float(np.sqrt(np.sum(np.square(bounds))))
        self.removals.append(RemovalRecord(m, bound))
        return bound

    @property
    def residual_used(self) -> float:
        """The accumulated residual bound β: the removals' bounds plus the optimiser's own
        gradient norm at the end of training (conservative: the theorem assumes 0)."""
        return float(self.fit_gradient_norm + sum(r.residual_bound for r in self.removals))

    def epsilon(self, delta: float) -> float:
        """The ε certified at ``delta`` for the removals so far: ``c·β/σ`` (β: the
        accumulated residual bound); ``inf`` without perturbation."""
        if self.sigma <= 0:
            return math.inf
        return _c(delta) * self.residual_used / self.sigma

    # ------------------------------------------------------------------------------------
    def decision_function(self, X) -> np.ndarray:
        return (self._design(X) @ self.W).numpy()

    def predict(self, X) -> np.ndarray:
        s = self.decision_function(X)
        if s.shape[1] == 1:
            return np.where(s[:, 0] > 0, self.classes_[1], self.classes_[0])
        return self.classes_[s.argmax(1)]


class CertifiedRemovalVerifier:
    """Says whether an (ε, δ) certified-removal guarantee holds, and refuses when it does not.

    ``verify(model)`` accepts a :class:`CertifiedLogisticRegression`. It returns
    ``{"certified": bool, "reason": str, "epsilon": target, "delta": δ, "epsilon_achieved":
    ε for the removals made, "residual_used", "residual_budget", "removals"}``. It refuses
    (``certified=False`` with the reason) when the model is not a certifiable model (any
    other model: no guarantee exists), was trained without loss perturbation (σ = 0), no
    removal was applied (nothing was certified: an untouched model is not "unlearned"),
    the optimiser did not reach the minimiser the guarantee assumes, or the accumulated
    gradient residual exceeds the budget ``σ ε / c`` (retrain).
    """

    def __init__(self, epsilon: float = 1.0, delta: float = 1e-5, optimum_tolerance: float = 1e-6):
        if epsilon <= 0 or not 0 < delta < 1:
            raise ValueError(f"Expected epsilon > 0 and delta in (0, 1), got epsilon={epsilon}, delta={delta}.")
        self.epsilon, self.delta, self.optimum_tolerance = epsilon, delta, optimum_tolerance

    def verify(self, model) -> dict:
        out = {"certified": False, "epsilon": self.epsilon, "delta": self.delta}
        if not isinstance(model, CertifiedLogisticRegression) or model.W is None:
            out["reason"] = (f"{type(model).__name__} is not a certifiable model: certified removal (Guo et al. "
                             "2020) holds only for a strongly convex model trained with loss perturbation, e.g. "
                             "CertifiedLogisticRegression (on raw inputs or frozen public features).")
            return out
        budget = model.sigma * self.epsilon / _c(self.delta) if model.sigma > 0 else 0.0
        out.update(residual_used=model.residual_used, residual_budget=budget, removals=len(model.removals),
                   epsilon_achieved=model.epsilon(self.delta))
        if model.sigma <= 0:
            out["reason"] = "trained without loss perturbation (sigma = 0): no removal can be certified"
        elif not model.removals:
            out["reason"] = "no removal was applied: there is nothing to certify"
        elif model.residual_used > budget:
            out["reason"] = (f"the accumulated gradient residual {model.residual_used:.3g} exceeds the budget "
                             f"{budget:.3g} for (epsilon={self.epsilon}, delta={self.delta}): retrain the model")
        elif model.fit_gradient_norm > self.optimum_tolerance:
            out["reason"] = (f"training did not reach the minimiser (gradient norm {model.fit_gradient_norm:.3g} > "
                             f"{self.optimum_tolerance}): the guarantee assumes an exact optimum")
        else:
            out["certified"] = True
            out["reason"] = (f"{sum(r.n_removed for r in model.removals)} samples removed by Newton steps; "
                             f"residual {model.residual_used:.3g} <= budget {budget:.3g}")
        return out

