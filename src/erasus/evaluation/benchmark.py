"""``UnlearningBenchmark``: a named protocol, a gold standard, confidence intervals, a verdict.

Protocol ``"general"`` (classifiers). Metrics and their reference values:

============== ======================================= =========== ==========
metric         reference (gold standard)                PASS within PARTIAL
============== ======================================= =========== ==========
forget_acc     retrained model's (``retrain``), or     3 points    5 points
               held-out accuracy (``holdout``; 0 for
               class forgetting)
retain_acc     retrained / original model's, one-sided  3 points    5 points
test_acc       retrained / original model's, one-sided  3 points    5 points
mia_auc        retrained model's, or 0.5 (``holdout``)  0.05        0.10
============== ======================================= =========== ==========

Why these tolerances: across seeds, models retrained on the same data differ by about
0.5-1.5 points in accuracy and 0.01-0.03 in loss-MIA AUC on Fashion-MNIST and digits
(``tests/test_benchmark.py`` checks it), so 3 points / 0.05 keep an honestly retrained model
inside PASS. PARTIAL (5 points) means at least about half of the forget set's excess
accuracy is gone: on the Fashion-MNIST protocol an untouched model's forget accuracy
exceeds the retrained model's by the whole generalisation gap (~9 points with the
20k-image CNN, ~13 with the bundled MLP), and a model collapsed to chance is far outside.
Utility metrics are one-sided: being *better* than the reference on retain or test data is
never a failure.

A metric PASSes when the confidence interval of (value − reference) comes within the
PASS tolerance of zero, PARTIALs within the PARTIAL tolerance, else FAILs; the overall
verdict is FAIL if any metric fails, PASS if all pass, else PARTIAL.

Confidence intervals: for a list of models (independent runs) a Student-t interval over
runs; for one model a paired bootstrap over evaluation samples (``n_bootstrap``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np

from ..core.exceptions import ConfigError, DataError
from ..core.trainer import loss_auc
from ..metrics.context import EvalContext
from ..utils.data import is_class_forgetting

PASS, PARTIAL, FAIL = "PASS", "PARTIAL", "FAIL"

# name: (pass tolerance, partial tolerance, one_sided_utility, scale for display)
GENERAL_TOLERANCES = {
    "forget_acc": (0.03, 0.05, False),
    "retain_acc": (0.03, 0.05, True),
    "test_acc": (0.03, 0.05, True),
    "mia_auc": (0.05, 0.10, False),
}


def _forget_acc(s):
    return s["forget"]["correct"].mean()


def _retain_acc(s):
    return s["retain"]["correct"].mean()


def _test_acc(s):
    return s["test"]["correct"].mean()


def _holdout_acc(s):
    return s["holdout"]["correct"].mean()


def _mia(s):
    return loss_auc(s["forget"]["loss"], s["nonmember"]["loss"])


_FUNCS: Dict[str, Callable] = {"forget_acc": _forget_acc, "retain_acc": _retain_acc, "test_acc": _test_acc,
                               "mia_auc": _mia}


@dataclass
class MetricResult:
    name: str
    value: float
    ci: tuple
    reference: float
    reference_label: str
    delta_ci: tuple
    tolerance: tuple
    verdict: str


@dataclass
class BenchmarkReport:
    """Per-metric values with confidence intervals and verdicts, plus the overall verdict."""

    protocol: str
    gold_standard: str
    confidence_level: float
    results: List[MetricResult] = field(default_factory=list)
    n_models: int = 1

    @property
    def verdict(self) -> str:
        v = [r.verdict for r in self.results]
        if not v:
            return FAIL
        if FAIL in v:
            return FAIL
        return PASS if all(x == PASS for x in v) else PARTIAL

    @property
    def metrics(self) -> Dict[str, float]:
        return {r.name: r.value for r in self.results}

    def to_dict(self) -> dict:
        return {"protocol": self.protocol, "gold_standard": self.gold_standard, "verdict": self.verdict,
                "confidence_level": self.confidence_level,
                "metrics": {r.name: {"value": r.value, "ci": list(r.ci), "reference": r.reference,
                                     "delta_ci": list(r.delta_ci), "tolerance": list(r.tolerance),
                                     "verdict": r.verdict} for r in self.results}}

    def summary(self) -> str:
        pct = int(round(100 * self.confidence_level))
        head = f"{'metric':<11} {'value':>7} {pct}% CI{'':<9} {'reference':<22} {'pass/partial':>12}  verdict"
        lines = [f"UnlearningBenchmark protocol={self.protocol} gold={self.gold_standard} "
                 f"({self.n_models} model{'s' if self.n_models > 1 else ''})", head, "-" * len(head)]
        for r in self.results:
            ref = f"{r.reference:.3f} ({r.reference_label})"
            lines.append(f"{r.name:<11} {r.value:>7.3f} [{r.ci[0]:.3f}, {r.ci[1]:.3f}]  {ref:<22} "
                         f"{r.tolerance[0]:>5.2f}/{r.tolerance[1]:<5.2f}  {r.verdict}")
        lines.append(f"overall verdict: {self.verdict}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


class UnlearningBenchmark:
    """Evaluate an unlearned model against a gold standard with confidence intervals.

    ``protocol``: ``"general"`` (classifiers; see the module docstring), ``"tofu"``
    (causal LMs on a TOFU request: :func:`erasus.evaluation.tofu.tofu_protocol`), ``"muse"``
    or ``"wmdp"`` (:mod:`erasus.evaluation.muse_wmdp`); the LM protocols take ``tokenizer=``. Extensions add more through :meth:`register_protocol`.
    ``gold_standard``: ``"retrain"`` (compare with ``gold_model``, a model retrained
    without the forget data), ``"holdout"`` (compare forget data with held-out data
    and utility with ``original_model``), or ``"auto"`` (retrain if a gold model is given).
    ``n_runs``: how many models (seeds) a list passed to ``evaluate`` is expected to
    hold; ``n_bootstrap``: bootstrap replicates for a single model.
    """

    PROTOCOLS = ("general",)
    #: protocols added by extensions: name -> evaluate(benchmark, unlearned_model, **data) -> report
    _extra_protocols: Dict[str, Callable] = {}

    @classmethod
    def register_protocol(cls, name: str, evaluate: Callable) -> None:
        """The hook through which an extension adds a protocol (the LLM package registers
        ``tofu``, ``muse`` and ``wmdp``): ``evaluate(benchmark, unlearned_model, **data)``
        returns a report with ``verdict``, ``results`` and ``summary()``; the benchmark's
        ``n_runs``, ``confidence_level`` and ``tolerances`` are available to it."""
        if name in cls.PROTOCOLS:
            raise ConfigError(f"Protocol {name!r} is built in and cannot be replaced.")
        cls._extra_protocols[name] = evaluate

    @classmethod
    def protocols(cls) -> tuple:
        return cls.PROTOCOLS + tuple(sorted(cls._extra_protocols))

    def __init__(self, protocol: str = "general", gold_standard: str = "auto", n_runs: int = 1,
                 confidence_level: float = 0.95, n_bootstrap: int = 500, max_samples: Optional[int] = 5000,
                 tolerances: Optional[Dict[str, tuple]] = None, seed: int = 0):
        if protocol not in self.protocols():
            import difflib

            close = difflib.get_close_matches(str(protocol), self.protocols(), n=1)
            raise ConfigError(f"Expected protocol in {self.protocols()}, got {protocol!r}."
                              + (f" Did you mean {close[0]!r}?" if close else ""))
        if gold_standard not in ("auto", "retrain", "holdout"):
            raise ConfigError(f"Expected gold_standard 'auto', 'retrain' or 'holdout', got {gold_standard!r}.")
        if not 0.5 <= confidence_level < 1.0:
            raise ConfigError(f"Expected confidence_level in [0.5, 1), got {confidence_level}.")
        if n_runs < 1 or n_bootstrap < 10:
            raise ConfigError(f"Expected n_runs >= 1 and n_bootstrap >= 10, got {n_runs}, {n_bootstrap}.")
        self.protocol, self.gold_standard, self.n_runs = protocol, gold_standard, n_runs
        self.confidence_level, self.n_bootstrap, self.max_samples = confidence_level, n_bootstrap, max_samples
        self.tolerances = {**GENERAL_TOLERANCES, **(tolerances or {})}
        self.seed = seed

    # ------------------------------------------------------------------------------------
    def _stats(self, adapter, loaders) -> Dict[str, Dict[str, np.ndarray]]:
        ctx = EvalContext(adapter, *[loaders.get(k) for k in ("forget", "retain", "test", "holdout")],
                          max_samples=self.max_samples)
        s = {k: ctx.stats(k) for k in ctx.loaders}
        s["nonmember"] = s["holdout"] if "holdout" in s else s.get("test")
        return s

    def evaluate(self, unlearned_model, forget_data=None, retain_data=None, test_data=None, holdout_data=None,
                 gold_model=None, original_model=None, **protocol_kwargs) -> BenchmarkReport:
        """Compare ``unlearned_model`` (one model, or a list of models from independent runs)
        with the gold standard. ``holdout_data``: samples never trained on, from the forget
        set's distribution (for class forgetting: held-out samples of the forgotten
        classes); defaults to ``test_data``."""
        from ..models import wrap

        if self.protocol in self._extra_protocols:
            return self._extra_protocols[self.protocol](
                self, unlearned_model, forget_data=forget_data, retain_data=retain_data, test_data=test_data,
                holdout_data=holdout_data, gold_model=gold_model, original_model=original_model, **protocol_kwargs)
        if protocol_kwargs:
            raise ConfigError(f"Unexpected argument(s) {sorted(protocol_kwargs)} for protocol {self.protocol!r}.")
        if forget_data is None:
            raise DataError("Expected forget_data (the data that was unlearned), got None.")
        gold_standard = self.gold_standard
        if gold_standard == "auto":
            gold_standard = "retrain" if gold_model is not None else "holdout"
        if gold_standard == "retrain" and gold_model is None:
            raise DataError("gold_standard='retrain' needs gold_model (a model retrained without the forget data). "
                            "Pass gold_model=..., or use gold_standard='holdout' with holdout_data and original_model.")
        loaders = {"forget": forget_data, "retain": retain_data, "test": test_data, "holdout": holdout_data}
        loaders = {k: v for k, v in loaders.items() if v is not None}
        if "holdout" not in loaders and "test" not in loaders:
            raise DataError("Expected holdout_data or test_data: membership inference needs data the model never saw.")
        if gold_standard == "holdout" and original_model is None:
            raise DataError("gold_standard='holdout' needs original_model (the model before unlearning) as the "
                            "utility reference; or pass gold_model for gold_standard='retrain'.")
        models = list(unlearned_model) if isinstance(unlearned_model, (list, tuple)) else [unlearned_model]
        runs = [self._stats(wrap(m), loaders) for m in models]
        class_mode = "retain" in runs[0] and is_class_forgetting(runs[0]["forget"]["label"],
                                                                  runs[0]["retain"]["label"])
        ref_stats = self._stats(wrap(gold_model if gold_standard == "retrain" else original_model), loaders)
        names = [n for n in ("forget_acc", "retain_acc", "test_acc", "mia_auc")
                 if all(req in runs[0] for req in {"forget_acc": ["forget"], "retain_acc": ["retain"],
                                                   "test_acc": ["test"], "mia_auc": ["forget", "nonmember"]}[n])
                 and runs[0].get("nonmember") is not None]
        report = BenchmarkReport(self.protocol, gold_standard, self.confidence_level, n_models=len(models))
        for name in names:
            report.results.append(self._metric(name, runs, ref_stats, gold_standard, class_mode))
        return report

    def _reference(self, name, ref_stats, gold_standard, class_mode):
        if gold_standard == "retrain":
            return _FUNCS[name](ref_stats), "retrained"
        if name == "forget_acc" and class_mode:
            return 0.0, "class never seen"
        if name == "forget_acc":
            key = "holdout" if "holdout" in ref_stats else "test"
            return None, f"{key} acc"
        if name == "mia_auc":
            return 0.5, "unseen data"
        return _FUNCS[name](ref_stats), "original"

    def _metric(self, name, runs, ref_stats, gold_standard, class_mode) -> MetricResult:
        from scipy import stats as st

        ref, label = self._reference(name, ref_stats, gold_standard, class_mode)
        alpha = 1 - self.confidence_level

        def ref_of(s):  # reference for one run's own data (held-out accuracy of the same model)
            if ref is None:
                return (_holdout_acc(s) if "holdout" in s else _test_acc(s))
            return ref

        values = np.array([_FUNCS[name](s) for s in runs])
        deltas = np.array([_FUNCS[name](s) - ref_of(s) for s in runs])
        if len(runs) > 1:
            def t_ci(x):
                h = st.t.ppf(1 - alpha / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
                return (float(x.mean() - h), float(x.mean() + h))
            ci, dci = t_ci(values), t_ci(deltas)
        else:
            ci, dci = self._bootstrap(name, runs[0], ref_stats, ref is None, gold_standard, ref)
        pass_tol, partial_tol, one_sided = self.tolerances[name]
        if one_sided:  # only falling below the reference counts
            dist = max(0.0, -dci[1])
        else:
            dist = 0.0 if dci[0] <= 0 <= dci[1] else min(abs(dci[0]), abs(dci[1]))
        verdict = PASS if dist <= pass_tol else PARTIAL if dist <= partial_tol else FAIL
        shown_ref = float(np.mean([ref_of(s) for s in runs]))
        return MetricResult(name, float(values.mean()), ci, shown_ref, label, dci, (pass_tol, partial_tol), verdict)

    def _bootstrap(self, name, s, ref_stats, ref_is_holdout, gold_standard, fixed_ref=0.5):
        """Paired bootstrap: the same resampled evaluation samples for model and reference."""
        rng = np.random.default_rng(self.seed)
        alpha = 1 - self.confidence_level
        vals, deltas = [], []
        paired = gold_standard == "retrain" or name in ("retain_acc", "test_acc")
        for _ in range(self.n_bootstrap):
            idx = {k: rng.integers(0, len(v["loss"]), len(v["loss"])) for k, v in s.items()
                   if k != "nonmember" and len(v["loss"])}
            if "nonmember" in s:
                idx["nonmember"] = idx["holdout"] if "holdout" in s else idx["test"]
            rs = {k: {f: a[idx[k]] for f, a in v.items()} for k, v in s.items() if k in idx}
            v = _FUNCS[name](rs)
            if ref_is_holdout:
                r = _holdout_acc(rs) if "holdout" in rs else _test_acc(rs)
            elif paired:
                rr = {k: {f: a[idx[k]] for f, a in ref_stats[k].items()} for k in idx if k in ref_stats}
                rr["nonmember"] = rr["holdout"] if "holdout" in rr else rr.get("test")
                r = _FUNCS[name](rr)
            else:
                r = fixed_ref
            vals.append(v)
            deltas.append(v - r)
        q = lambda x: (float(np.quantile(x, alpha / 2)), float(np.quantile(x, 1 - alpha / 2)))
        return q(np.array(vals)), q(np.array(deltas))
