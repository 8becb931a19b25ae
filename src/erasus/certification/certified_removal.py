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


def _digest(*arrays) -> str:
    import hashlib

    h = hashlib.sha1()
    for a in arrays:
        a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _finite_positive(name: str, value, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"Expected {name} to be a number, got {value!r}.") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"Expected {name} to be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}.")
    return v


@dataclass
class CertifiedLogisticRegression:
    """One-vs-rest L2-regularised logistic regression trained with loss perturbation.

    ``lam``: λ > 0 (the regulariser is ``λ n / 2 ‖w‖²``; the certificate needs the strong
    convexity it gives); ``sigma``: standard deviation of the objective perturbation ``b``
    (0 disables it, and with it any certificate); ``seed`` of ``b``; ``fit_intercept``
    appends a constant-1 feature (regularised like the others, as in the paper). Works in
    float64. What the certificate depends on (λ, σ, the perturbation, the data and the
    weights each removal produced) is recorded privately when training and checked by
    :class:`CertifiedRemovalVerifier`: changing ``lam``, ``sigma`` or ``W`` by hand afterwards
    voids the certificate.
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
    _record: Optional[dict] = None               # what the certificate was computed for

    def __post_init__(self):
        _finite_positive("lam", self.lam)
        _finite_positive("sigma", self.sigma, allow_zero=True)
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, int) or self.max_iter < 1:
            raise ValueError(f"Expected max_iter to be a positive integer, got {self.max_iter!r}.")

    def _design(self, X) -> torch.Tensor:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"Expected X as a 2-D array (samples, features), got shape {X.shape}.")
        if not np.isfinite(X).all():
            raise ValueError("Expected finite features, got NaN or inf values in X: clean or impute them first.")
        X = torch.as_tensor(X, dtype=torch.float64)
        if self.fit_intercept:
            X = torch.cat([X, torch.ones(len(X), 1, dtype=torch.float64)], 1)
        return X

    def _objective(self, W, X, Y, n, lam):
        z = Y * (X @ W)
        return torch.nn.functional.softplus(-z).sum() + 0.5 * lam * n * (W * W).sum() + (self._b * W).sum()

    def fit(self, X, y) -> "CertifiedLogisticRegression":
        lam = _finite_positive("lam", self.lam)
        sigma = _finite_positive("sigma", self.sigma, allow_zero=True)
        X = self._design(X)
        y = np.asarray(y)
        if len(y) != len(X):
            raise ValueError(f"Expected one label per sample, got {len(y)} labels for {len(X)} samples.")
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(f"Expected at least 2 classes, got {len(self.classes_)}.")
        K = 1 if len(self.classes_) == 2 else len(self.classes_)
        pos = [self.classes_[1]] if K == 1 else list(self.classes_)
        Y = torch.stack([torch.as_tensor(np.where(y == c, 1.0, -1.0)) for c in pos], 1).double()
        g = torch.Generator().manual_seed(int(self.seed))
        self._b = sigma * torch.randn(X.shape[1], K, generator=g, dtype=torch.float64)
        self._X, self._Y, self._alive, self.n_train = X, Y, np.ones(len(X), dtype=bool), len(X)
        W = torch.zeros(X.shape[1], K, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([W], lr=1.0, max_iter=self.max_iter, tolerance_grad=1e-12, tolerance_change=1e-14,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = self._objective(W, X, Y, len(X), lam)
            loss.backward()
            return loss

        opt.step(closure)
        self.W = W.detach()
        if not torch.isfinite(self.W).all():
            raise ValueError("Training diverged (non-finite weights): check the data scale and lam.")
        self.removals = []
        self._record = {"lam": lam, "sigma": sigma, "seed": int(self.seed), "fit_intercept": bool(self.fit_intercept),
                        "b": _digest(self._b), "data": _digest(self._X, self._Y)}
        self.fit_gradient_norm = self.gradient_norm()
        self._record["W"] = _digest(self.W)
        return self

    # ------------------------------------------------------------------------------------
    def gradient_norm(self) -> float:
        """‖∇L_b(W; D_alive)‖ at the current weights (0 at an exact minimiser)."""
        if self.W is None:
            raise ValueError("The model is not trained: call fit(X, y) first.")
        W = self.W.clone().requires_grad_(True)
        m = torch.as_tensor(self._alive)
        loss = self._objective(W, self._X[m], self._Y[m], int(m.sum()), self._record["lam"])
        (g,) = torch.autograd.grad(loss, W)
        return float(g.norm())

    def _indices(self, indices) -> np.ndarray:
        """Validated positions of training samples: integers in ``[0, n)``, at least one."""
        arr = np.asarray(indices)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.size == 0:
            raise ValueError("Expected at least one index to remove.")
        if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise ValueError(f"Expected integer sample positions, got {arr.dtype} values.")
        if np.issubdtype(arr.dtype, np.floating):
            if not np.isfinite(arr).all() or (arr != np.round(arr)).any():
                raise ValueError(f"Expected integer sample positions, got {arr[arr != np.round(arr)][:5].tolist() or arr[:5].tolist()}.")
        idx = arr.astype(np.int64)
        bad = idx[(idx < 0) | (idx >= self.n_train)]
        if len(bad):
            raise ValueError(f"Expected positions in [0, {self.n_train}) (the training data given to fit), got "
                             f"{bad[:5].tolist()}.")
        return np.unique(idx)

    def remove(self, indices) -> float:
        """Remove training samples ``indices`` (positions in the data given to ``fit``) with
        one Newton step; returns the data-dependent bound on the gradient residual it adds."""
        if self.W is None:
            raise ValueError("The model is not trained: call fit(X, y) first.")
        idx = self._indices(indices)
        if not self._alive[idx].all():
            raise ValueError(f"Samples {idx[~self._alive[idx]].tolist()[:5]} were already removed.")
        keep = self._alive.copy()
        keep[idx] = False
        if not keep.any():
            raise ValueError("Removing these samples would leave no training data: retrain instead.")
        lam = self._record["lam"]
        Xr, Yr = self._X[idx], self._Y[idx]
        Xk, Yk = self._X[torch.as_tensor(keep)], self._Y[torch.as_tensor(keep)]
        n_keep, m = int(keep.sum()), len(idx)
        bounds, W_new = [], self.W.clone()
        norm_X = float(torch.linalg.matrix_norm(Xk, ord=2))
        for k in range(self.W.shape[1]):
            w = self.W[:, k]
            zr = Yr[:, k] * (Xr @ w)
            grad_loss = -(torch.sigmoid(-zr) * Yr[:, k])[:, None] * Xr     # ∇ℓ_i for the removed samples
            delta = grad_loss.sum(0) + lam * m * w
            zk = Yk[:, k] * (Xk @ w)
            s = torch.sigmoid(zk) * torch.sigmoid(-zk)                      # ℓ''
            H = Xk.T @ (s[:, None] * Xk) + lam * n_keep * torch.eye(len(w), dtype=torch.float64)
            step = torch.linalg.solve(H, delta)
            W_new[:, k] = w + step
            bounds.append(0.25 * norm_X * float(step.norm()) * float((Xk @ step).norm()))
        bound = float(np.sqrt(np.sum(np.square(bounds))))
        if not math.isfinite(bound) or not torch.isfinite(W_new).all():
            raise ValueError("The Newton step is not finite (ill-conditioned data): this removal cannot be "
                             "certified; retrain without the samples.")
        self.W = W_new
        self._alive = keep
        self.removals.append(RemovalRecord(m, bound))
        self._record["W"] = _digest(self.W)
        return bound

    @property
    def residual_used(self) -> float:
        """The accumulated residual bound β: the removals' bounds plus the optimiser's own
        gradient norm at the end of training (conservative: the theorem assumes 0)."""
        return float(self.fit_gradient_norm + sum(r.residual_bound for r in self.removals))

    def epsilon(self, delta: float) -> float:
        """The ε certified at ``delta`` for the removals so far: ``c·β/σ`` (β: the
        accumulated residual bound); ``inf`` without perturbation."""
        if not (isinstance(delta, (int, float)) and 0 < delta < 1):
            raise ValueError(f"Expected delta in (0, 1), got {delta!r}.")
        sigma = self._record["sigma"] if self._record else self.sigma
        if sigma <= 0:
            return math.inf
        return _c(delta) * self.residual_used / sigma

    def tampered(self) -> List[str]:
        """What changed since training that the certificate depends on (empty when nothing)."""
        if self._record is None:
            return ["the model was never trained"]
        out = []
        for f in ("lam", "sigma", "seed", "fit_intercept"):
            if getattr(self, f) != self._record[f]:
                out.append(f"{f} ({self._record[f]!r} at training, {getattr(self, f)!r} now)")
        if self._b is None or _digest(self._b) != self._record["b"]:
            out.append("the loss perturbation b")
        if self._X is None or _digest(self._X, self._Y) != self._record["data"]:
            out.append("the training data")
        if self.W is None or _digest(self.W) != self._record["W"]:
            out.append("the weights W (not the result of fit and remove)")
        return out

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
    other model: no guarantee exists), anything the certificate depends on changed after
    training (λ, σ, the perturbation, the data, or weights not produced by ``fit`` and
    ``remove``), it was trained without loss perturbation (σ = 0), no removal was applied
    (nothing was certified: an untouched model is not "unlearned"), a residual or the
    budget is not a finite number, the optimiser did not reach the minimiser the guarantee
    assumes, or the accumulated gradient residual exceeds the budget ``σ ε / c`` (retrain).
    ``epsilon`` must be finite and positive and ``delta`` in (0, 1).
    """

    def __init__(self, epsilon: float = 1.0, delta: float = 1e-5, optimum_tolerance: float = 1e-6):
        self.epsilon = _finite_positive("epsilon", epsilon)
        if not (isinstance(delta, (int, float)) and math.isfinite(delta) and 0 < delta < 1):
            raise ValueError(f"Expected delta in (0, 1), got {delta!r}.")
        self.delta = float(delta)
        self.optimum_tolerance = _finite_positive("optimum_tolerance", optimum_tolerance, allow_zero=True)

    def verify(self, model, retrained_model=None, n_total: Optional[int] = None, n_forget: Optional[int] = None) -> dict:
        """The certificate of ``model`` (see the class docstring). ``n_total`` and ``n_forget``,
        when given, must match what the model was trained on and what was removed (a mismatch
        is refused: the certificate would describe another request). ``retrained_model``, a
        :class:`CertifiedLogisticRegression` retrained without the removed samples with the same
        perturbation, adds ``distance_to_retrained`` (‖W − W′‖) and the distance the
        certificate allows (``certified_distance``, from λ(n − m)-strong convexity)."""
        out = {"certified": False, "epsilon": self.epsilon, "delta": self.delta}
        if not isinstance(model, CertifiedLogisticRegression) or model.W is None:
            out["reason"] = (f"{type(model).__name__} is not a certifiable model: certified removal (Guo et al. "
                             "2020) holds only for a strongly convex model trained with loss perturbation, e.g. "
                             "CertifiedLogisticRegression (on raw inputs or frozen public features).")
            return out
        changed = model.tampered()
        if changed:
            out["reason"] = ("changed after training, so the certificate no longer describes the model: "
                             + "; ".join(changed) + ". Retrain (fit) to certify again.")
            return out
        sigma = model._record["sigma"]
        budget = sigma * self.epsilon / _c(self.delta) if sigma > 0 else 0.0
        used = model.residual_used
        out.update(residual_used=used, residual_budget=budget, removals=len(model.removals),
                   epsilon_achieved=model.epsilon(self.delta))
        if sigma <= 0:
            out["reason"] = "trained without loss perturbation (sigma = 0): no removal can be certified"
        elif not model.removals:
            out["reason"] = "no removal was applied: there is nothing to certify"
        elif not (math.isfinite(used) and math.isfinite(budget)) or any(
                not math.isfinite(r.residual_bound) for r in model.removals):
            out["reason"] = f"a residual or the budget is not finite (residual {used}, budget {budget}): no certificate"
        elif used > budget:
            out["reason"] = (f"the accumulated gradient residual {used:.3g} exceeds the budget "
                             f"{budget:.3g} for (epsilon={self.epsilon}, delta={self.delta}): retrain the model")
        elif not math.isfinite(model.fit_gradient_norm) or model.fit_gradient_norm > self.optimum_tolerance:
            out["reason"] = (f"training did not reach the minimiser (gradient norm {model.fit_gradient_norm:.3g} > "
                             f"{self.optimum_tolerance}): the guarantee assumes an exact optimum")
        elif n_total is not None and int(n_total) != model.n_train:
            out["reason"] = f"n_total={n_total}, but the model was trained on {model.n_train} samples"
        elif n_forget is not None and int(n_forget) != sum(r.n_removed for r in model.removals):
            out["reason"] = (f"n_forget={n_forget}, but {sum(r.n_removed for r in model.removals)} samples were removed "
                             "by Newton steps")
        else:
            out["certified"] = True
            out["reason"] = (f"{sum(r.n_removed for r in model.removals)} samples removed by Newton steps; "
                             f"residual {used:.3g} <= budget {budget:.3g}")
        if retrained_model is not None:
            if not isinstance(retrained_model, CertifiedLogisticRegression) or retrained_model.W is None:
                raise TypeError("Expected retrained_model to be a trained CertifiedLogisticRegression (retrained "
                                f"without the removed samples), got {type(retrained_model).__name__}.")
            m = sum(r.n_removed for r in model.removals)
            out["distance_to_retrained"] = float((model.W - retrained_model.W).norm())
            out["certified_distance"] = float((used + retrained_model.fit_gradient_norm)
                                              / (model._record["lam"] * max(1, model.n_train - m)))
        return out
