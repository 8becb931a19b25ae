"""Verdicts that need evidence: one rule, shared by every verification entry point.

A verdict about unlearning is a claim about a difference (the model's value minus its
reference's) measured on finite samples, so it is judged by the difference's confidence
interval, never by the point estimate alone:

* **PASS** only when the *whole* interval lies inside the pass region (a request too
  small to pin the difference down cannot pass, however close the point estimate is);
* **FAIL** when the whole interval lies outside the partial region (clear evidence), or
  when it rules PASS out and the point estimate lies beyond the partial region;
* **PARTIAL** when the whole interval lies inside the partial region but not inside the pass
  region;
* **INCONCLUSIVE** otherwise: the interval reaches from the pass region past the partial one.
  When its half-width exceeds half the pass tolerance the metric is *underpowered*: even a
  model equal to its reference would pass less than 95% of the time on this much data. The
  note then says about how many samples would do (intervals shrink like ``1/sqrt(n)``), and
  the entry points leave the metric out of the overall verdict, which is INCONCLUSIVE when no
  forgetting metric has the power to judge.

Regions are intervals of the difference: two-sided ``[-t, t]`` (over- and
under-forgetting both count), one-sided ``(-inf, t]`` (only one direction is a failure,
e.g. utility lost or knowledge recovered), or "at least" ``[t, inf)`` (a required drop).
Several metrics combine as: FAIL if any fails, else INCONCLUSIVE if any is (underpowered
ones aside), else PASS if all pass, else PARTIAL (:func:`combine_judged`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Optional, Sequence, Tuple

import numpy as np

PASS, PARTIAL, FAIL, INCONCLUSIVE = "PASS", "PARTIAL", "FAIL", "INCONCLUSIVE"
VERDICTS = (PASS, PARTIAL, FAIL, INCONCLUSIVE)


@dataclass(frozen=True)
class Region:
    """Where a difference must lie: ``kind`` ``"two_sided"`` (``|d| <= t``), ``"at_most"``
    (``d <= t``) or ``"at_least"`` (``d >= t``), with the pass and the partial threshold."""

    kind: str
    pass_tol: float
    partial_tol: float

    def __post_init__(self):
        if self.kind not in ("two_sided", "at_most", "at_least"):
            raise ValueError(f"Expected kind 'two_sided', 'at_most' or 'at_least', got {self.kind!r}.")
        looser = self.partial_tol <= self.pass_tol if self.kind == "at_least" else self.partial_tol >= self.pass_tol
        if not looser:
            raise ValueError(f"Expected the partial threshold to be looser than the pass threshold, got "
                             f"{self.pass_tol} / {self.partial_tol} for a {self.kind} region.")

    def bounds(self, tol: float) -> Tuple[float, float]:
        if self.kind == "two_sided":
            return -tol, tol
        return (-math.inf, tol) if self.kind == "at_most" else (tol, math.inf)

    def describe(self) -> str:
        if self.kind == "two_sided":
            return f"|d| <= {self.pass_tol:g} (partial {self.partial_tol:g})"
        op = "<=" if self.kind == "at_most" else ">="
        return f"d {op} {self.pass_tol:g} (partial {self.partial_tol:g})"


def two_sided(pass_tol: float, partial_tol: float) -> Region:
    return Region("two_sided", pass_tol, partial_tol)


def at_most(pass_tol: float, partial_tol: float) -> Region:
    return Region("at_most", pass_tol, partial_tol)


def at_least(pass_tol: float, partial_tol: float) -> Region:
    return Region("at_least", pass_tol, partial_tol)


def _inside(lo: float, hi: float, b: Tuple[float, float]) -> bool:
    return b[0] <= lo and hi <= b[1]


def _disjoint(lo: float, hi: float, b: Tuple[float, float]) -> bool:
    return hi < b[0] or lo > b[1]


def _distance_outside(lo: float, hi: float, b: Tuple[float, float]) -> float:
    """How far the interval reaches past ``b`` on its worse side (0 when inside)."""
    return max(0.0, b[0] - lo, hi - b[1])


@dataclass(frozen=True)
class Judgement:
    """A verdict with its reason; ``underpowered`` when the interval overlaps the pass region
    but its half-width exceeds half the pass tolerance: then even a model whose true
    difference is zero would pass less than 95% of the time (its estimate must lie within
    ``tol - half-width`` of zero, which is 1.96 standard errors only when the half-width is at
    most ``tol / 2``), so the metric cannot say PASS on this much data."""

    verdict: str
    note: str = ""
    underpowered: bool = False
    #: (underpowered results) the interval reaches past the partial region: a failing
    #: difference is as consistent with the data as a passing one
    could_fail: bool = False

    def __iter__(self):  # (verdict, note) unpacking
        return iter((self.verdict, self.note))


def judge(point: float, ci: Tuple[float, float], region: Region, n: Optional[int] = None) -> Judgement:
    """The :class:`Judgement` of a difference with estimate ``point`` and interval ``ci``
    (see the module docstring). ``n``: the sample size behind the interval, for the note on
    how many samples an inconclusive result would need."""
    lo, hi = float(ci[0]), float(ci[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and math.isfinite(point)):
        return Judgement(INCONCLUSIVE, "the difference could not be measured (not a finite number)", True, True)
    p_b, q_b = region.bounds(region.pass_tol), region.bounds(region.partial_tol)
    if _inside(lo, hi, p_b):
        return Judgement(PASS)
    if _disjoint(lo, hi, q_b):
        return Judgement(FAIL)
    if _disjoint(lo, hi, p_b):  # PASS ruled out; partial or fail by where the interval sits
        if _inside(lo, hi, q_b) or q_b[0] <= point <= q_b[1]:
            return Judgement(PARTIAL)
        return Judgement(FAIL)
    # the interval overlaps the pass region without lying inside it
    half = (hi - lo) / 2.0
    if half > region.pass_tol / 2:  # too wide: a model equal to its reference would pass < 95% of the time
        note = f"too few samples: the interval [{lo:+.3f}, {hi:+.3f}] is wider than the tolerance allows"
        need = needed_samples(n, half, region.pass_tol / 2)
        if need is not None:
            note += f"; about {need} samples would do"
        return Judgement(INCONCLUSIVE, note, True, not _inside(lo, hi, q_b))
    if _inside(lo, hi, q_b):
        return Judgement(PARTIAL, "the interval reaches past the pass threshold")
    return Judgement(INCONCLUSIVE, f"the interval [{lo:+.3f}, {hi:+.3f}] spans pass and fail")


def needed_samples(n: Optional[int], half_width: float, target: float) -> Optional[int]:
    """Samples needed for an interval of half-width ``target`` where ``n`` samples gave
    ``half_width`` (intervals shrink like ``1/sqrt(n)``)."""
    if not n or half_width <= 0 or target <= 0:
        return None
    return int(math.ceil(n * (half_width / target) ** 2))


def combine(verdicts: Iterable[str]) -> str:
    """FAIL if any fails, else INCONCLUSIVE if any is, else PASS if all pass, else PARTIAL;
    INCONCLUSIVE when there is nothing to judge."""
    v = list(verdicts)
    if not v:
        return INCONCLUSIVE
    if FAIL in v:
        return FAIL
    if INCONCLUSIVE in v:
        return INCONCLUSIVE
    return PASS if all(x == PASS for x in v) else PARTIAL


def combine_judged(results: Sequence, forgetting: Optional[Sequence[str]] = None,
                   utility: Optional[Sequence[str]] = None, power_checked: bool = True) -> Tuple[str, str]:
    """The overall verdict of results with ``name``, ``verdict`` and ``underpowered``
    attributes: FAIL if any fails; underpowered INCONCLUSIVE results (too few samples, or no
    power on this request) are left out; INCONCLUSIVE when no forgetting result (``forgetting``:
    their names; any result when ``None``) or, when ``utility`` names are given, no utility
    result is left to judge; else :func:`combine` of the rest. Returns ``(verdict, note)``.

    ``power_checked``: whether the untouched original was judged the same way (the entry points'
    ``original_model=``), so that a forgetting metric left out does not hide that the others
    cannot tell unlearning from doing nothing. Without that check a PASS (or PARTIAL) that left
    out a forgetting metric whose interval reaches past its partial tolerance (``could_fail``: a
    failing difference is as consistent with the data as a passing one) is INCONCLUSIVE: measured, the untouched original of scikit-learn
    digits passed the loss-MIA comparison with a retrained model on a random 10% request
    (AUC 0.559 vs 0.540) while forget accuracy (1.000 vs 0.972), the one metric that separates
    them, was too uncertain on 180 samples to be judged."""
    if any(r.verdict == FAIL for r in results):
        return FAIL, ""
    judged = [r for r in results if not (r.verdict == INCONCLUSIVE and getattr(r, "underpowered", False))]
    left = [r.name for r in results if r not in judged]
    if not any(forgetting is None or r.name in forgetting for r in judged):
        return INCONCLUSIVE, ("no forgetting metric has the power to judge this request"
                              + (f" ({', '.join(left)} too uncertain)" if left else ""))
    if utility is not None and not any(r.name in utility for r in judged):
        return INCONCLUSIVE, "nothing shows the model still works: a destroyed model would look forgotten"
    verdict = combine(r.verdict for r in judged)
    left_forgetting = [r.name for r in results if r not in judged and (forgetting is None or r.name in forgetting)
                       and getattr(r, "could_fail", True)]
    if not power_checked and left_forgetting and verdict in (PASS, PARTIAL):
        return INCONCLUSIVE, (f"{', '.join(left_forgetting)} could not be judged on this request (too few samples), "
                              "and nothing shows the metrics that passed can tell unlearning from doing nothing: "
                              "pass original_model= (the model before unlearning) to check, or a larger request")
    note = (f"not judged, too few samples: {', '.join(left)}" if left else "")
    return verdict, note


def percentile_ci(replicates: Sequence[float], confidence: float) -> Tuple[float, float]:
    x = np.asarray(replicates, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), float("nan")
    a = (1 - confidence) / 2
    return float(np.quantile(x, a)), float(np.quantile(x, 1 - a))


def bootstrap(stat: Callable[[Dict[str, np.ndarray]], float], sizes: Dict[str, int], n_boot: int, seed: int,
              confidence: float) -> Tuple[float, Tuple[float, float], np.ndarray]:
    """``(point, ci, replicates)`` of ``stat(idx)``, where ``idx`` maps each name in
    ``sizes`` to sample indices: the identity for the point estimate, and independent
    resamples with replacement (one draw per name, shared by every array ``stat`` reads
    under that name: paired comparisons stay paired) for the replicates. Percentile
    interval; the generator is seeded from ``seed`` alone."""
    rng = np.random.default_rng(seed)
    point = float(stat({k: np.arange(n) for k, n in sizes.items()}))
    reps = np.empty(n_boot)
    for b in range(n_boot):
        reps[b] = stat({k: rng.integers(0, n, n) if n else np.arange(0) for k, n in sizes.items()})
    return point, percentile_ci(reps, confidence), reps


def t_interval(values: Sequence[float], confidence: float) -> Tuple[float, float]:
    """Student-t interval of the mean over independent runs."""
    from scipy import stats as st

    x = np.asarray(values, dtype=np.float64)
    if len(x) < 2:
        return float(x.mean()), float(x.mean())
    h = st.t.ppf(1 - (1 - confidence) / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean() - h), float(x.mean() + h)


def fast_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """:func:`erasus.core.stats.auc` (kept under this name for the benchmark)."""
    from .stats import auc

    return auc(pos, neg)
