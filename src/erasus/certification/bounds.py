"""``TheoreticalBounds``: guarantees with their assumptions stated, and a vacuity check.

Only bounds that are theorems under assumptions a user can check are offered; each result
lists those assumptions and says whether the number is *vacuous* (says nothing a trivial
bound would not). A bound is no evidence for a model that violates its assumptions, and
the methods refuse inputs that make the assumptions false (for instance a non-convex
loss cannot be given a strong-convexity constant here: the caller states it).

* :meth:`TheoreticalBounds.membership_inference` — the hypothesis-testing region of
  (ε, δ)-differential privacy (Kairouz, Oh & Viswanath, ICML 2015): any membership attack
  on an (ε, δ)-DP (or (ε, δ)-unlearned) model has ``TPR ≤ min(1, e^ε·FPR + δ,
  1 − e^{−ε}(1 − δ − FPR))``; the result gives the TPR cap at chosen FPRs and the
  largest AUC any attack can reach.
* :meth:`TheoreticalBounds.group_privacy` — a model trained with (ε, δ)-DP needs no
  update to delete ``k`` samples: it is already (kε, k·e^{(k−1)ε}·δ)-indistinguishable
  from one trained without them (Dwork & Roth 2014, Thm 2.2 and its (ε, δ) form). Pair it
  with :func:`erasus.privacy.train_dp`.
* :meth:`TheoreticalBounds.descent_to_delete` — Neel, Roth & Sharifi-Malvajerdi,
  "Descent-to-Delete: Gradient-Based Methods for Machine Unlearning", ALT 2021: for an
  ``m``-strongly convex, ``M``-smooth objective whose per-sample loss is ``L``-Lipschitz,
  deleting ``k`` of ``n`` points moves the optimum by at most ``2kL/(mn)``; ``T`` gradient
  steps of size ``2/(m+M)`` from the old optimum shrink the distance by
  ``((M−m)/(M+m))^T``; Gaussian noise of std ``σ = Δ·sqrt(2 ln(1.25/δ))/ε`` then makes
  the published weights (ε, δ)-indistinguishable from the noised exact retrain (the
  Gaussian mechanism, valid for ε < 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np

from ..core.exceptions import ConfigError


VACUOUS_TPR = 0.99  # a membership bound that allows TPR >= 0.99 at 1% FPR rules out nothing useful


@dataclass
class Bound:
    """A bound's values, the assumptions under which it holds, its source, and whether it
    is vacuous (``vacuous_reason`` says why)."""

    name: str
    values: Dict[str, float]
    assumptions: List[str]
    reference: str
    vacuous: bool = False
    vacuous_reason: str = ""
    notes: List[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.name} ({self.reference})"]
        lines += [f"  {k} = {v:.4g}" for k, v in self.values.items()]
        lines.append("  holds if: " + "; ".join(self.assumptions))
        lines.append("  VACUOUS: " + self.vacuous_reason if self.vacuous else "  non-vacuous")
        return "\n".join(lines)


def _check_eps_delta(eps: float, delta: float) -> None:
    if not eps > 0 or not 0 <= delta < 1:
        raise ConfigError(f"Expected epsilon > 0 and 0 <= delta < 1, got epsilon={eps}, delta={delta}.")


def dp_tpr_cap(eps: float, delta: float, fpr: np.ndarray) -> np.ndarray:
    """Largest TPR any test can reach at false-positive rate ``fpr`` against (ε, δ)-DP."""
    f = np.asarray(fpr, dtype=np.float64)
    return np.clip(np.minimum(np.exp(eps) * f + delta, 1 - np.exp(-eps) * (1 - delta - f)), 0.0, 1.0)


class TheoreticalBounds:
    """Bounds with stated assumptions; see the module docstring."""

    @staticmethod
    def membership_inference(epsilon: float, delta: float, fprs: Sequence[float] = (0.001, 0.01, 0.1)) -> Bound:
        """Cap on membership-inference power against an (ε, δ)-DP / (ε, δ)-unlearned model.
        Vacuous when the cap allows a near-perfect attack (TPR >= 0.99 at FPR 1%)."""
        _check_eps_delta(epsilon, delta)
        grid = np.linspace(0, 1, 20001)
        tpr = dp_tpr_cap(epsilon, delta, grid)
        auc = float(np.sum((tpr[1:] + tpr[:-1]) * np.diff(grid)) / 2)
        values = {f"max_tpr@{100 * f:g}%fpr": float(dp_tpr_cap(epsilon, delta, np.array([f]))[0]) for f in fprs}
        values["max_auc"] = auc
        cap1 = float(dp_tpr_cap(epsilon, delta, np.array([0.01]))[0])
        return Bound("membership inference under (ε, δ)-DP", values,
                     ["the model (or the unlearning output) is (ε, δ)-indistinguishable from one that never saw "
                      "the sample, e.g. trained with DP-SGD under an accountant or certified by removal"],
                     "Kairouz, Oh & Viswanath, ICML 2015", vacuous=cap1 >= VACUOUS_TPR,
                     vacuous_reason=f"at ε={epsilon} an attacker may reach TPR {cap1:.3f} at 1% FPR")

    @staticmethod
    def group_privacy(epsilon: float, delta: float, k: int) -> Bound:
        """(ε, δ)-DP training as deletion of ``k`` samples with no update. Vacuous when the
        group's δ reaches 1 or its ε allows a near-perfect attack (TPR >= 0.99 at 1% FPR)."""
        _check_eps_delta(epsilon, delta)
        if k < 1:
            raise ConfigError(f"Expected k >= 1 deleted samples, got {k}.")
        eps_k = k * epsilon
        delta_k = k * math.exp((k - 1) * epsilon) * delta if delta > 0 else 0.0
        mia = float(dp_tpr_cap(eps_k, min(delta_k, 1.0), np.array([0.01]))[0]) if delta_k < 1 else 1.0
        reason = ("the group's δ is >= 1" if delta_k >= 1 else
                  f"(kε, kδ') = ({eps_k:.3g}, {delta_k:.3g}) allows TPR {mia:.3f} at 1% FPR")
        return Bound("deletion by group privacy", {"epsilon": eps_k, "delta": delta_k, "max_tpr@1%fpr": mia},
                     ["the model was trained with (ε, δ)-DP at sample level (e.g. erasus.privacy.train_dp) and is "
                      "released without further training on the deleted samples"],
                     "Dwork & Roth, The Algorithmic Foundations of Differential Privacy, 2014, Thm 2.2",
                     vacuous=mia >= VACUOUS_TPR, vacuous_reason=reason)

    @staticmethod
    def descent_to_delete(n: int, k: int, lipschitz: float, strong_convexity: float, smoothness: float,
                          steps: int, epsilon: float, delta: float, weight_norm: float = float("nan"),
                          dim: int = 1) -> Bound:
        """Noise needed after ``steps`` gradient steps of size ``2/(m+M)`` from the old optimum
        for (ε, δ) deletion of ``k`` of ``n`` samples (ε < 1). With ``weight_norm`` and
        ``dim`` given, the bound is vacuous when the expected noise norm ``σ·sqrt(dim)``
        exceeds the weights' norm (the noise would drown the model)."""
        _check_eps_delta(epsilon, delta)
        m, M, L = strong_convexity, smoothness, lipschitz
        if not (m > 0 and M >= m and L > 0):
            raise ConfigError(f"Expected strong_convexity m > 0, smoothness M >= m and lipschitz L > 0, got "
                              f"m={m}, M={M}, L={L}: the bound needs a strongly convex, smooth objective.")
        if epsilon >= 1 or delta <= 0:
            raise ConfigError("The Gaussian mechanism bound used here needs 0 < epsilon < 1 and delta > 0.")
        if not 1 <= k < n:
            raise ConfigError(f"Expected 1 <= k < n, got k={k}, n={n}.")
        start = 2.0 * k * L / (m * n)
        rate = (M - m) / (M + m)
        dist = start * rate ** steps
        sigma = dist * math.sqrt(2 * math.log(1.25 / delta)) / epsilon
        noise_norm = sigma * math.sqrt(dim)
        vac = bool(np.isfinite(weight_norm) and noise_norm >= weight_norm)
        return Bound("descent-to-delete (Gaussian mechanism after gradient steps)",
                     {"initial_distance": start, "contraction_per_step": rate, "distance_after_steps": dist,
                      "sigma": sigma, "expected_noise_norm": noise_norm},
                     [f"the objective is {m:g}-strongly convex and {M:g}-smooth (e.g. L2-regularised logistic "
                      "regression with bounded features), each sample's loss is "
                      f"{L:g}-Lipschitz on the feasible set", "the model before deletion is the exact optimum "
                      "and the comparison is the exact optimum without the k samples",
                      "gradient steps of size 2/(m+M) on the remaining data; Gaussian noise of std sigma is added "
                      "to every weight before release"],
                     "Neel, Roth & Sharifi-Malvajerdi, ALT 2021", vacuous=vac,
                     vacuous_reason=f"noise norm {noise_norm:.3g} >= weight norm {weight_norm:.3g}")
