"""``UnlearningVerifier``: hypothesis tests that a model treats the forget set as unseen data."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from ..core.evidence import FAIL, INCONCLUSIVE, PASS, combine_judged
from ..core.exceptions import DataError
from ..utils.data import check_nonempty
from ..utils.misc import ModelMemo, isolated_rng

#: tests that judge forgetting (the others judge utility)
FORGETTING_TESTS = ("forget_vs_holdout_ks", "forget_above_retain_mw", "forget_accuracy_vs_gold_mcnemar",
                    "refit_recovery")


@dataclass
class TestResult:
    name: str
    statistic: float
    p_value: float
    passed: bool
    meaning: str
    status: str = ""
    underpowered: bool = False

    def __post_init__(self):
        if not self.status:
            self.status = PASS if self.passed else FAIL

    @property
    def verdict(self) -> str:
        return self.status

    def to_dict(self) -> dict:
        return {"name": self.name, "statistic": self.statistic, "p_value": self.p_value, "passed": self.passed,
                "status": self.status, "meaning": self.meaning}


@dataclass
class VerificationReport:
    """What was tested, each test's statistic, p-value and status (PASS, FAIL or
    INCONCLUSIVE, with the reason), and the overall ``verdict``: FAIL if any test fails;
    tests without the power to judge this request are left out (and named), and the verdict
    is INCONCLUSIVE when no forgetting test can judge it; ``passed`` means PASS."""

    significance: float
    tests: List[TestResult] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    #: whether the untouched original was judged too (``original_model=``): see combine_judged
    power_checked: bool = False

    def _combined(self):
        utility = [t.name for t in self.tests if t.name.startswith("retain_accuracy")] or ["retain_accuracy"]
        return combine_judged(self.tests, FORGETTING_TESTS, utility, power_checked=self.power_checked)

    @property
    def verdict(self) -> str:
        return self._combined()[0]

    @property
    def verdict_note(self) -> str:
        return self._combined()[1]

    @property
    def passed(self) -> bool:
        return self.verdict == PASS

    def __getitem__(self, name: str) -> TestResult:
        for t in self.tests:
            if t.name == name:
                return t
        raise KeyError(f"No test {name!r} in this report; it holds {[t.name for t in self.tests]}.")

    def to_dict(self) -> dict:
        return {"significance": self.significance, "verdict": self.verdict, "passed": self.passed,
                "notes": list(self.notes), "tests": [t.to_dict() for t in self.tests]}

    def __str__(self) -> str:
        lines = [f"Unlearning verification at significance {self.significance}: {self.verdict}"]
        for t in self.tests:
            lines.append(f"  [{t.status}] {t.name}: statistic {t.statistic:.4g}, p = {t.p_value:.3g}. {t.meaning}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _ks_detectable(n: int, m: int, alpha: float) -> float:
    """The smallest Kolmogorov-Smirnov distance the two-sample test detects at level
    ``alpha`` (asymptotic critical value ``c(α) sqrt((n + m) / (n m))``)."""
    return math.sqrt(-0.5 * math.log(alpha / 2)) * math.sqrt((n + m) / (n * m))


class UnlearningVerifier:
    """Hypothesis tests at level ``significance`` (scipy) on per-sample statistics.

    ``verify_all(model, splits_or_forget_loader, retain_loader=None, holdout_loader=None, *,
    gold_model=None, original_model=None)``:

    * ``forget_vs_holdout_ks`` (needs held-out data): two-sample Kolmogorov-Smirnov test of
      the forget-set losses against held-out losses (for class forgetting, held-out samples
      of the forgotten classes). H0: same distribution, i.e. the forget set looks like data
      the model never saw. Passes when H0 is *not* rejected; a memorising model fails (its
      forget losses are far lower), and so does an over-forgetting one.
    * ``forget_above_retain_mw``: one-sided Mann-Whitney U test that forget losses are larger
      than retain losses. Passes when they are (p < significance); an untouched model
      fails, since it fits both alike.
    * ``forget_accuracy_vs_gold_mcnemar`` (needs ``gold_model``): equivalence of forget accuracy with
      the retrained model's within ``tolerance`` (two one-sided tests: the ``1 − 2α``
      paired-bootstrap interval of the difference inside ``±tolerance``); fails when the exact
      McNemar test rejects equal accuracy and the difference exceeds the tolerance.
    * ``retain_accuracy_vs_gold_mcnemar`` (needs ``gold_model``): non-inferiority of retain accuracy
      (utility): the ``1 − 2α`` upper bound of the accuracy lost against the retrained model
      within ``tolerance``; fails when the one-sided exact McNemar test finds the model worse
      by more than the tolerance.
    * ``refit_recovery`` (classifiers, ``refit=True``): the last-layer re-fit attack
      (:class:`erasus.metrics.LastLayerRefit`): with ``gold_model``, recovery no higher than
      the retrained model's by more than ``refit_tolerance`` (default 0.05, 0.10 for class
      forgetting: the benchmark's re-fit tolerances; one-sided Wilcoxon signed-rank
      test on the paired per-sample recoveries for the failure); without it, for sample
      forgetting, forget recovery no higher than held-out recovery, and for class
      forgetting (needs ``original_model``), recovery at least ``refit_tolerance`` below the
      original's. This is the test that fails a model hiding the forget data behind its
      output layer.

    Power, so that a test that cannot see anything does not pass (or fail) anything:
    with ``gold_model`` every test also runs on the retrained model, and a test the
    retrained model itself does not pass is INCONCLUSIVE (it lacks power or validity on this
    request: a well-generalising retrained model fits unseen digits almost as well as
    training digits, so forget losses are not above retain losses); with ``original_model``
    every forgetting test also runs on the untouched original, and a test the original
    passes is INCONCLUSIVE (it cannot tell unlearning from doing nothing). Without the
    original, the KS test reports the smallest distance it can detect, and is INCONCLUSIVE
    when that exceeds 0.2.

    The tests read ``max_samples`` samples per split (fixed seeds), run with their own
    random state (the caller's is untouched), and give the same result whatever ran before.
    """

    def __init__(self, significance: float = 0.05, max_samples: Optional[int] = 2000, tolerance: float = 0.03,
                 refit_tolerance: Optional[float] = None, forget_mode: str = "auto", refit: bool = True,
                 seed: int = 0):
        if not 0.0 < significance < 0.5:
            raise ValueError(f"Expected significance in (0, 0.5), got {significance}.")
        if not 0.0 < tolerance < 1.0:
            raise ValueError(f"Expected tolerance in (0, 1), got {tolerance}.")
        if refit_tolerance is not None and not 0.0 < refit_tolerance < 1.0:
            raise ValueError(f"Expected refit_tolerance in (0, 1), got {refit_tolerance}.")
        if forget_mode not in ("auto", "sample", "class"):
            raise ValueError(f"Expected forget_mode 'auto', 'sample' or 'class', got {forget_mode!r}.")
        self.significance, self.max_samples, self.tolerance = significance, max_samples, tolerance
        self.refit_tolerance, self.forget_mode, self.refit, self.seed = refit_tolerance, forget_mode, refit, seed
        self._memo = ModelMemo(8)

    # ------------------------------------------------------------------------------------
    def _context(self, model, forget, retain, holdout):
        from ..metrics.context import EvalContext
        from ..models import wrap

        return EvalContext(wrap(model), forget, retain, None, holdout, max_samples=self.max_samples,
                           forget_mode=self.forget_mode)

    def _measure(self, ctx) -> Dict[str, object]:
        """Every statistic the tests read, for one model."""
        from ..metrics.attacks import LastLayerRefit

        out: Dict[str, object] = {"forget": ctx.stats("forget")}
        if ctx.has("retain"):
            out["retain"] = ctx.stats("retain")
        if ctx.has("nonmember"):
            try:
                out["nonmember"] = ctx.stats("nonmember")
            except DataError as e:
                out["nonmember_error"] = str(e)
        if self.refit and ctx.adapter.family == "classifier" and (ctx.has("retain") or ctx.has("nonmember")):
            try:
                out["refit"] = LastLayerRefit(seed=self.seed).samples(ctx)
            except DataError as e:
                out["refit_error"] = str(e)
        return out

    def verify_all(self, model, forget_loader, retain_loader=None, holdout_loader=None, *legacy, gold_model=None,
                   original_model=None, test_loader=None) -> VerificationReport:
        """Run every test on ``model``. The data as a :class:`~erasus.data.Splits` or loaders one
        by one (``test_loader`` stands in for held-out data when there is none); ``gold_model``
        and ``original_model`` by keyword."""
        from ..data.splits import legacy_positional, unpack

        forget_loader, retain_loader, test_loader, holdout_loader = unpack(
            forget_loader, retain_loader, test_loader, holdout_loader, "verify_all")
        if holdout_loader is None:
            holdout_loader = test_loader
        kw = legacy_positional("verify_all", legacy, ["gold_model", "original_model"],
                               {"gold_model": gold_model, "original_model": original_model})
        gold_model, original_model = kw["gold_model"], kw["original_model"]
        forget_loader = check_nonempty(forget_loader, "forget")
        if retain_loader is not None:
            retain_loader = check_nonempty(retain_loader, "retain")
        with isolated_rng(self.seed):
            ctx = self._context(model, forget_loader, retain_loader, holdout_loader)
            mode, why, classes = ctx.mode()
            extra = (id(forget_loader), id(retain_loader), id(holdout_loader), self.max_samples, self.forget_mode,
                     self.refit, self.seed)
            measure = lambda mdl: self._memo.get(  # noqa: E731
                mdl, extra, lambda: self._measure(self._context(mdl, forget_loader, retain_loader, holdout_loader)))
            m = measure(model)
            g = measure(gold_model) if gold_model is not None else None
            o = measure(original_model) if original_model is not None else None
            report = VerificationReport(self.significance, power_checked=original_model is not None)
            report.notes.append(f"{mode} forgetting: {why}")
            for key in ("nonmember_error", "refit_error"):
                if key in m:
                    report.notes.append(str(m[key]))
            for test in (self._ks, self._mw, self._forget_acc, self._retain_acc, self._refit):
                res = test(m, g, o, mode)
                if res is not None:
                    report.tests.append(res)
        return report

    def verify(self, model, forget_loader, retain_loader=None, holdout_loader=None, *legacy, gold_model=None,
               original_model=None, test_loader=None) -> Dict[str, object]:
        """``verify_all`` as a plain dict."""
        from ..data.splits import legacy_positional

        kw = legacy_positional("verify", legacy, ["gold_model", "original_model"],
                               {"gold_model": gold_model, "original_model": original_model})
        return self.verify_all(model, forget_loader, retain_loader, holdout_loader, test_loader=test_loader,
                               **kw).to_dict()

    # tests ------------------------------------------------------------------------------
    def _powered(self, res: TestResult, name: str, g, o, rerun) -> TestResult:
        """Apply the power rules of the class docstring to a test's result."""
        if g is not None and res.status != INCONCLUSIVE:
            gr = rerun(g)
            if gr is not None and gr.status != PASS:
                res.status, res.passed, res.underpowered = INCONCLUSIVE, False, True
                res.meaning += (f" Not judged: the retrained model does not pass this test either ({gr.status}, "
                                f"p = {gr.p_value:.3g}), so it has no power on this request.")
                return res
        if o is not None and name in FORGETTING_TESTS and res.status != FAIL:
            orr = rerun(o)
            if orr is not None and orr.status != FAIL:
                res.status, res.passed, res.underpowered = INCONCLUSIVE, False, True
                res.meaning += (f" Not judged: the untouched original does not fail this test either ({orr.status}), "
                                "so it cannot tell unlearning from doing nothing on this request.")
        return res

    def _ks(self, m, g, o, mode, raw: bool = False):
        from scipy.stats import ks_2samp

        if "nonmember" not in m:
            return None
        a = self.significance
        f, h = m["forget"]["loss"], m["nonmember"]["loss"]
        ks = ks_2samp(f, h)
        detect = _ks_detectable(len(f), len(h), a)
        ok = bool(ks.pvalue >= a)
        res = TestResult(
            "forget_vs_holdout_ks", float(ks.statistic), float(ks.pvalue), ok,
            ("Forget losses are distributed like held-out losses (H0 not rejected)." if ok else
             "Forget losses differ from held-out losses: the model still treats the forget set differently from "
             "unseen data (lower losses: remembered; higher: over-forgotten).")
            + f" The test detects KS distances above {detect:.2f}.")
        if raw:
            return res
        if ok and o is None and detect > 0.2:
            res.status, res.passed, res.underpowered = INCONCLUSIVE, False, True
            res.meaning += " Not judged: with this few samples only large differences would show."
            return res
        return self._powered(res, "forget_vs_holdout_ks", g, o, lambda x: self._ks(x, None, None, mode, raw=True))

    def _mw(self, m, g, o, mode, raw: bool = False):
        from scipy.stats import mannwhitneyu

        if "retain" not in m:
            return None
        a = self.significance
        mw = mannwhitneyu(m["forget"]["loss"], m["retain"]["loss"], alternative="greater")
        ok = bool(mw.pvalue < a)
        res = TestResult(
            "forget_above_retain_mw", float(mw.statistic), float(mw.pvalue), ok,
            "Forget losses are larger than retain losses." if ok else
            "Forget losses are not larger than retain losses: the forget set is fitted like training data.")
        if raw:
            return res
        if "nonmember" in m:
            # would truly unseen data, as many as the forget set, pass this test? (its power, estimated by
            # drawing held-out subsets of the forget set's size)
            h, r = m["nonmember"]["loss"], m["retain"]["loss"]
            k = min(len(h), len(m["forget"]["loss"]))
            rng = np.random.default_rng(self.seed)
            draws = [mannwhitneyu(h[rng.choice(len(h), k, replace=False)], r, alternative="greater").pvalue < a
                     for _ in range(40)]
            power = float(np.mean(draws))
            res.meaning += f" Held-out samples as many as the forget set pass it {100 * power:.0f}% of the time."
            if power < 0.8 and res.status != INCONCLUSIVE:
                res.status, res.passed, res.underpowered = INCONCLUSIVE, False, True
                res.meaning += (" Not judged: below 80% power, the model fits unseen data too much like training "
                                "data for this test to tell them apart.")
                return res
        return self._powered(res, "forget_above_retain_mw", g, o, lambda x: self._mw(x, None, None, mode, raw=True))

    def _paired_interval(self, d: np.ndarray, level: float):
        from ..core.evidence import bootstrap

        if len(d) == 0:
            return float("nan"), (float("nan"), float("nan"))
        point, ci, _ = bootstrap(lambda i: float(d[i["x"]].mean()), {"x": len(d)}, 1000, self.seed, level)
        return point, ci

    def _forget_acc(self, m, g, o, mode):
        from scipy.stats import binomtest

        if g is None:
            return None
        a, tol = self.significance, self.tolerance
        f, gf = m["forget"]["correct"], g["forget"]["correct"]
        b, c = int(((f == 1) & (gf == 0)).sum()), int(((f == 0) & (gf == 1)).sum())
        p = float(binomtest(b, b + c, 0.5).pvalue) if b + c > 0 else 1.0
        point, (lo, hi) = self._paired_interval(f - gf, 1 - 2 * a)
        if -tol <= lo and hi <= tol:
            status, text = PASS, (f"Forget accuracy is within {tol} of the retrained model's (difference {point:+.3f}, "
                                  f"{100 * (1 - 2 * a):.0f}% interval [{lo:+.3f}, {hi:+.3f}]).")
        elif p < a and abs(point) > tol:
            status, text = FAIL, (f"Forget accuracy differs from the retrained model's by {point:+.3f} ({b} samples "
                                  f"right only here, {c} only there).")
        else:
            status, text = INCONCLUSIVE, (f"Forget accuracy neither shown within {tol} of the retrained model's nor "
                                          f"shown to differ (difference {point:+.3f}, interval [{lo:+.3f}, {hi:+.3f}]"
                                          f"): too few samples.")
        res = TestResult("forget_accuracy_vs_gold_mcnemar", float(b - c), p, status == PASS, text, status,
                         status == INCONCLUSIVE)
        if o is not None and status != FAIL:  # power: does the untouched original fail this test?
            orr = self._forget_acc(o, g, None, mode)
            if orr.status != FAIL:
                res.status, res.passed, res.underpowered = INCONCLUSIVE, False, True
                res.meaning += (f" Not judged: the untouched original does not fail this test either ({orr.status}), "
                                "so it cannot tell unlearning from doing nothing on this request.")
        return res

    def _retain_acc(self, m, g, o, mode):
        from scipy.stats import binomtest

        ref = g if g is not None else o
        if ref is None or "retain" not in m:
            return None
        a, tol = self.significance, self.tolerance
        r, gr = m["retain"]["correct"], ref["retain"]["correct"]
        who = "the retrained model's" if g is not None else "the original's"
        worse, better = int(((r == 0) & (gr == 1)).sum()), int(((r == 1) & (gr == 0)).sum())
        p = float(binomtest(worse, worse + better, 0.5, alternative="greater").pvalue) if worse + better else 1.0
        point, (lo, hi) = self._paired_interval(gr - r, 1 - 2 * a)  # accuracy lost
        if hi <= tol:
            status, text = PASS, f"Retain accuracy is not worse than {who} by more than {tol}."
        elif p < a and point > tol:
            status, text = FAIL, (f"Utility lost: retain accuracy is {point:.3f} below {who} ({worse} samples wrong "
                                  f"only here, {better} only there).")
        else:
            status, text = INCONCLUSIVE, f"Retain accuracy lost {point:+.3f} (interval up to {hi:+.3f}): too few samples."
        name = "retain_accuracy_vs_gold_mcnemar" if g is not None else "retain_accuracy_vs_original_mcnemar"
        return TestResult(name, float(worse - better), p, status == PASS, text, status, False)

    def _refit(self, m, g, o, mode, raw: bool = False):
        from scipy.stats import mannwhitneyu, wilcoxon

        if "refit" not in m:
            return None
        a = self.significance
        tol = self.refit_tolerance if self.refit_tolerance is not None else (0.10 if mode == "class" else 0.05)
        rf = m["refit"]["refit_forget_accuracy"]
        if g is not None:
            d = rf - g["refit"]["refit_forget_accuracy"]
            point, (lo, hi) = self._paired_interval(d, 1 - 2 * a)
            nz = d[d != 0]
            p = float(wilcoxon(nz, alternative="greater").pvalue) if len(nz) else 1.0
            res = self._refit_result(point, hi, p, tol, "the retrained model's", a)
            if raw or o is None or res.status == FAIL:
                return res
            orr = self._refit(o, g, None, mode, raw=True)
        elif mode == "sample" and "refit_nonmember_accuracy" in m["refit"]:
            h = m["refit"]["refit_nonmember_accuracy"]
            point = float(rf.mean() - h.mean())
            p = float(mannwhitneyu(rf, h, alternative="greater").pvalue)
            hi = point + _z(1 - a) * math.sqrt(rf.var() / len(rf) + h.var() / len(h))
            res = self._refit_result(point, hi, p, tol, "held-out samples'", a)
            if raw or o is None or res.status == FAIL:
                return res
            orr = self._refit(o, None, None, mode, raw=True)
        elif mode == "class" and o is not None:
            d = o["refit"]["refit_forget_accuracy"] - rf  # the drop from the original's recovery
            point, (lo, hi) = self._paired_interval(d, 1 - 2 * a)
            nz = d[d != 0]
            p = float(wilcoxon(nz, alternative="less").pvalue) if len(nz) else 1.0  # H1: no real drop
            if lo >= tol:
                status, text = PASS, (f"The forgotten classes are {point:.3f} harder to recover from the features than "
                                      f"from the original's (at least {tol}).")
            elif hi < tol / 2:
                status, text = FAIL, (f"A new output layer recovers the forgotten classes about as well as from the "
                                      f"original's features (drop {point:+.3f}): the knowledge is still there.")
            else:
                status, text = INCONCLUSIVE, f"Recovery dropped {point:+.3f} (interval [{lo:+.3f}, {hi:+.3f}])."
            return TestResult("refit_recovery", point, p, status == PASS, text, status, status == INCONCLUSIVE)
        else:
            return None
        if orr is not None and orr.status != FAIL:
            res.status, res.passed, res.underpowered = INCONCLUSIVE, False, True
            res.meaning += f" Not judged: the untouched original does not fail this test either ({orr.status})."
        return res

    @staticmethod
    def _refit_result(point, hi, p, tol, ref_text, a) -> TestResult:
        if hi <= tol:
            status, text = PASS, (f"A new output layer recovers the forget data no better than from {ref_text} "
                                  f"features (difference {point:+.3f}, upper bound {hi:+.3f} <= {tol}).")
        elif p < a and point > tol:
            status, text = FAIL, (f"A new output layer, trained on retain data and a few forget samples, recovers "
                                  f"the forget data {point:+.3f} better than from {ref_text} features: the knowledge "
                                  "is still in the representation (hidden, not removed).")
        else:
            status, text = INCONCLUSIVE, (f"Re-fit recovery {point:+.3f} against {ref_text} (upper bound {hi:+.3f}): "
                                          "too few samples to tell.")
        return TestResult("refit_recovery", float(point), float(p), status == PASS, text, status,
                          status == INCONCLUSIVE)


def _z(q: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(q))
