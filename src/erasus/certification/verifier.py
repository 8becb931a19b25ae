"""``UnlearningVerifier``: hypothesis tests that a model treats the forget set as unseen data."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional


from ..core.exceptions import DataError
from ..core.trainer import split_stats
from ..utils.data import check_nonempty, subsample_loader


@dataclass
class TestResult:
    name: str
    statistic: float
    p_value: float
    passed: bool
    meaning: str

    def to_dict(self) -> dict:
        return {"name": self.name, "statistic": self.statistic, "p_value": self.p_value, "passed": self.passed,
                "meaning": self.meaning}


@dataclass
class VerificationReport:
    """What was tested, each test's statistic and p-value, and the overall verdict
    (``passed`` only if every test passed)."""

    significance: float
    tests: List[TestResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.tests) and all(t.passed for t in self.tests)

    def __getitem__(self, name: str) -> TestResult:
        return next(t for t in self.tests if t.name == name)

    def to_dict(self) -> dict:
        return {"significance": self.significance, "passed": self.passed, "tests": [t.to_dict() for t in self.tests]}

    def __str__(self) -> str:
        lines = [f"Unlearning verification at significance {self.significance}: "
                 f"{'PASSED' if self.passed else 'FAILED'}"]
        for t in self.tests:
            lines.append(f"  [{'pass' if t.passed else 'FAIL'}] {t.name}: statistic {t.statistic:.4g}, "
                         f"p = {t.p_value:.3g}. {t.meaning}")
        return "\n".join(lines)


class UnlearningVerifier:
    """Hypothesis tests at level ``significance`` (scipy) on per-sample losses.

    ``verify_all(model, forget_loader, retain_loader, holdout_loader=None, gold_model=None)``:

    * ``forget_vs_holdout_ks`` (needs held-out data): two-sample Kolmogorov-Smirnov test of
      the forget-set losses against held-out losses. H0: same distribution, i.e. the forget
      set looks like data the model never saw. Passes when H0 is *not* rejected; a memorising
      model fails (its forget losses are far lower), and so does an over-forgetting one.
    * ``forget_above_retain_mw``: one-sided Mann-Whitney U test that forget losses are larger
      than retain losses. Passes when they are (p < significance); an untouched model
      fails, since it fits both alike. Skipped for class forgetting's held-out comparison
      only through the KS test above.
    * ``forget_accuracy_vs_gold_mcnemar`` (needs ``gold_model``): exact McNemar test on the
      forget samples the two models classify differently. H0: same accuracy. Passes when
      not rejected.
    * ``retain_accuracy_vs_gold_mcnemar`` (needs ``gold_model``): one-sided exact McNemar
      test that retain accuracy is below the retrained model's (utility). Passes when not
      rejected; a model that forgot by breaking itself fails here.

    The tests read ``max_samples`` samples per split (fixed seed). Failing to reject H0 is
    evidence only up to the test's power: the report gives the statistics and p-values.
    """

    def __init__(self, significance: float = 0.05, max_samples: Optional[int] = 2000):
        if not 0.0 < significance < 1.0:
            raise ValueError(f"Expected significance in (0, 1), got {significance}.")
        self.significance = significance
        self.max_samples = max_samples

    def _stats(self, adapter, loader, seed):
        return split_stats(adapter, subsample_loader(loader, self.max_samples, seed=seed))

    def verify_all(self, model, forget_loader, retain_loader, holdout_loader=None, gold_model=None) -> VerificationReport:
        from scipy.stats import binomtest, ks_2samp, mannwhitneyu

        from ..models import wrap

        adapter = wrap(model)
        a = self.significance
        forget_loader = check_nonempty(forget_loader, "forget")
        f = self._stats(adapter, forget_loader, 11)
        r = self._stats(adapter, check_nonempty(retain_loader, "retain"), 12)
        report = VerificationReport(a)
        if holdout_loader is not None:
            h = self._stats(adapter, holdout_loader, 13)
            ks = ks_2samp(f["loss"], h["loss"])
            report.tests.append(TestResult(
                "forget_vs_holdout_ks", float(ks.statistic), float(ks.pvalue), bool(ks.pvalue >= a),
                "Forget losses are distributed like held-out losses (H0 not rejected)." if ks.pvalue >= a else
                "Forget losses differ from held-out losses: the model still treats the forget set differently "
                "from unseen data (lower losses: remembered; higher: over-forgotten)."))
        mw = mannwhitneyu(f["loss"], r["loss"], alternative="greater")
        report.tests.append(TestResult(
            "forget_above_retain_mw", float(mw.statistic), float(mw.pvalue), bool(mw.pvalue < a),
            "Forget losses are larger than retain losses." if mw.pvalue < a else
            "Forget losses are not larger than retain losses: the forget set is fitted like training data."))
        if gold_model is not None:
            g = split_stats(adapter.with_model(gold_model), subsample_loader(forget_loader, self.max_samples, seed=11))
            if len(g["correct"]) != len(f["correct"]):
                raise DataError("The gold model saw a different number of forget samples.")
            b = int(((f["correct"] == 1) & (g["correct"] == 0)).sum())
            c = int(((f["correct"] == 0) & (g["correct"] == 1)).sum())
            p = float(binomtest(b, b + c, 0.5).pvalue) if b + c > 0 else 1.0
            report.tests.append(TestResult(
                "forget_accuracy_vs_gold_mcnemar", float(b - c), p, bool(p >= a),
                f"Forget accuracy matches the retrained model's ({b} vs {c} discordant samples)." if p >= a else
                f"Forget accuracy differs from the retrained model's ({b} samples right only here, {c} only there)."))
            gr = split_stats(adapter.with_model(gold_model), subsample_loader(retain_loader, self.max_samples, seed=12))
            worse = int(((r["correct"] == 0) & (gr["correct"] == 1)).sum())
            better = int(((r["correct"] == 1) & (gr["correct"] == 0)).sum())
            p = float(binomtest(worse, worse + better, 0.5, alternative="greater").pvalue) if worse + better else 1.0
            report.tests.append(TestResult(
                "retain_accuracy_vs_gold_mcnemar", float(worse - better), p, bool(p >= a),
                f"Retain accuracy is not worse than the retrained model's ({worse} vs {better} discordant samples)."
                if p >= a else f"Utility lost: retain accuracy is below the retrained model's ({worse} samples wrong "
                               f"only here, {better} only there)."))
        return report

    def verify(self, model, forget_loader, retain_loader, holdout_loader=None, gold_model=None) -> Dict[str, object]:
        """``verify_all`` as a plain dict."""
        return self.verify_all(model, forget_loader, retain_loader, holdout_loader, gold_model).to_dict()
