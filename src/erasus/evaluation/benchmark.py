"""``UnlearningBenchmark``: a named protocol, a gold standard, confidence intervals, a verdict.

Protocol ``"general"`` (classifiers). Every metric is a *difference* with a confidence
interval, judged by :mod:`erasus.core.evidence`: PASS only when the whole interval lies
inside the pass tolerance, FAIL when it lies wholly outside the partial one, INCONCLUSIVE
when it reaches from one to the other (the request is too small to tell; the note says
about how many samples would), PARTIAL in between. The untouched original of a 10-sample
random request is 100% right on the forget set where the retrained model is 70% right, and
the interval of the difference, [0.00, 0.60], touches zero: that is INCONCLUSIVE, not PASS.

=============== ============================================ ================= ============
metric          difference judged                            PASS / PARTIAL    sides
=============== ============================================ ================= ============
forget_acc      forget accuracy − retrained model's          3 / 5 points      both
                (``holdout``: − held-out accuracy of the
                same model; class forgetting: − 0)           (class: at most)
retain_acc      reference's − model's (utility lost)          3 / 5 points      one
test_acc        reference's − model's; for class forgetting  3 / 5 points      one
                on the other classes only
holdout_acc     as test_acc, on held-out data, when neither  3 / 5 points      one
                retain nor test data is given (``holdout``)
mia_auc         loss-MIA AUC forget vs held-out − the        0.05 / 0.10       both
                retrained model's (``holdout``: − 0.5); for
                class forgetting against held-out samples of
                the forgotten classes
forget_loss_auc ``retrain`` without held-out data, sample     0.05 / 0.10       both
                forgetting: AUC of the model's forget
                losses against the retrained model's, − 0.5
refit_acc       last-layer re-fit attack: recovery of the    5 / 8 points;     one
                forget data by a new head trained on retain  class forgetting
                data + 5 forget samples − the retrained      10 / 15 points
                model's (``holdout``, samples: − recovery of
                held-out data; classes: the original's −
                the model's must be *at least* 10 points)
=============== ============================================ ================= ============

Why these tolerances: across seeds, models retrained on the same data differ by about
0.5-1.5 points in accuracy and 0.01-0.03 in loss-MIA AUC on Fashion-MNIST and digits
(``tests/test_benchmark.py`` checks it), so 3 points / 0.05 keep an honestly retrained model
inside PASS. The re-fit attack's recovery varies more between retrained models (up to 2
points on random requests, where the untouched original recovers 11-13 points more; up to 5
on an unseen class, where a model that hides the class behind its output layer recovers it
50-75 points better: :class:`erasus.metrics.LastLayerRefit`), hence its wider tolerances. Utility metrics are one-sided: being *better* than
the reference on retain or test data is never a failure.

Power: an interval wider than a metric's tolerance allows leaves it INCONCLUSIVE and out of
the overall verdict (:mod:`erasus.core.evidence`); when no forgetting metric can judge, the
verdict is INCONCLUSIVE. Given ``original_model`` (always with ``gold_standard="holdout"``,
optionally with ``"retrain"``), the benchmark also judges the untouched original, and a
forgetting metric the original does not FAIL cannot tell unlearning from doing nothing on this
request: the model's PASS or PARTIAL on it becomes INCONCLUSIVE, with that reason.

Class forgetting (no forget label in the retain data, or, without retain data, a forget set
that lacks classes a random sample would hold; or ``forget_mode="class"``) changes the
references: test accuracy on the other classes, membership against held-out samples of the
forgotten classes. The report's notes say which mode was used and why.

Confidence intervals: for a list of models (independent runs) a Student-t interval over
runs; for one model a paired bootstrap over evaluation samples (``n_bootstrap``). Every
random choice is seeded from ``seed``; the caller's global random state is left as it was.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ..core.evidence import (FAIL, INCONCLUSIVE, PARTIAL, PASS, Region, at_least, at_most, bootstrap, combine_judged,
                             fast_auc, judge, t_interval, two_sided)
from ..core.exceptions import ConfigError, DataError
from ..metrics.context import EvalContext
from ..utils.misc import ModelMemo, isolated_rng

__all__ = ["UnlearningBenchmark", "BenchmarkReport", "MetricResult", "PASS", "PARTIAL", "FAIL", "INCONCLUSIVE",
           "GENERAL_TOLERANCES"]

#: name: (pass tolerance, partial tolerance)
GENERAL_TOLERANCES = {
    "forget_acc": (0.03, 0.05),
    "retain_acc": (0.03, 0.05),
    "test_acc": (0.03, 0.05),
    "holdout_acc": (0.03, 0.05),
    "mia_auc": (0.05, 0.10),
    "forget_loss_auc": (0.05, 0.10),
    "refit_acc": (0.05, 0.08),
    "refit_acc_class": (0.10, 0.15),
    "registered": (0.05, 0.10),   # metrics named in metrics= (the verification suite's tolerance)
}
FORGETTING = ("forget_acc", "mia_auc", "forget_loss_auc", "refit_acc")


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
    note: str = ""
    n: int = 0
    underpowered: bool = False
    could_fail: bool = True


@dataclass
class BenchmarkReport:
    """Per-metric values with confidence intervals and verdicts, plus the overall verdict
    (:func:`erasus.core.evidence.combine`) and notes (forget mode, power, missing data)."""

    protocol: str
    gold_standard: str
    confidence_level: float
    results: List[MetricResult] = field(default_factory=list)
    n_models: int = 1
    notes: List[str] = field(default_factory=list)
    forget_mode: str = ""
    #: whether the untouched original was judged too (``original_model=``): see combine_judged
    power_checked: bool = False
    #: the names of the metrics that judge forgetting (default :data:`FORGETTING`, the general
    #: protocol's); a protocol with other metrics (TOFU, MUSE, WMDP) names its own, or no
    #: result of it could ever count as judging forgetting and every verdict would be
    #: INCONCLUSIVE
    forgetting: Optional[tuple] = None

    @property
    def verdict(self) -> str:
        return combine_judged(self.results, self.forgetting or FORGETTING, power_checked=self.power_checked)[0]

    @property
    def verdict_note(self) -> str:
        """Why the overall verdict is what it is, when metrics were left out or nothing could
        be judged."""
        return combine_judged(self.results, self.forgetting or FORGETTING, power_checked=self.power_checked)[1]

    @property
    def metrics(self) -> Dict[str, float]:
        return {r.name: r.value for r in self.results}

    def to_dict(self) -> dict:
        return {"protocol": self.protocol, "gold_standard": self.gold_standard, "verdict": self.verdict,
                "verdict_note": self.verdict_note, "confidence_level": self.confidence_level,
                "forget_mode": self.forget_mode, "notes": list(self.notes),
                "metrics": {r.name: {"value": r.value, "ci": list(r.ci), "reference": r.reference,
                                     "delta_ci": list(r.delta_ci), "tolerance": list(r.tolerance),
                                     "verdict": r.verdict, "note": r.note, "n": r.n,
                                     "underpowered": r.underpowered} for r in self.results}}

    def summary(self) -> str:
        pct = int(round(100 * self.confidence_level))
        w = max([15] + [len(r.name) for r in self.results])
        head = (f"{'metric':<{w}} {'value':>7} {'reference':<24} {'difference, ' + str(pct) + '% CI':<24} "
                f"{'pass/partial':>12}  verdict")
        lines = [f"UnlearningBenchmark protocol={self.protocol} gold={self.gold_standard} "
                 f"({self.n_models} model{'s' if self.n_models > 1 else ''}"
                 + (f", {self.forget_mode} forgetting" if self.forget_mode else "") + ")", head, "-" * len(head)]
        for r in self.results:
            ref = f"{r.reference:.3f} ({r.reference_label})"
            d = f"[{r.delta_ci[0]:+.3f}, {r.delta_ci[1]:+.3f}]" if np.isfinite(r.delta_ci).all() else "not measured"
            lines.append(f"{r.name:<{w}} {r.value:>7.3f} {ref:<24} {d:<24} "
                         f"{r.tolerance[0]:>5.2f}/{r.tolerance[1]:<5.2f}  {r.verdict}" + (f"  ({r.note})" if r.note else ""))
        vnote = self.verdict_note
        lines.append(f"overall verdict: {self.verdict}" + (f" ({vnote})" if vnote else ""))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


@dataclass
class _Spec:
    """One metric: ``value(arrays, idx)`` on one model's arrays; the difference judged is
    ``delta(model_arrays, ref_arrays, idx)``; ``groups`` are the array groups it reads."""

    name: str
    groups: tuple
    value: Callable
    delta: Callable
    region: Region
    ref_label: str
    ref_value: Callable


class UnlearningBenchmark:
    """Evaluate an unlearned model against a gold standard with confidence intervals.

    ``protocol``: ``"general"`` (classifiers; see the module docstring), ``"tofu"``
    (causal LMs on a TOFU request: :func:`erasus.evaluation.tofu.tofu_protocol`), ``"muse"``
    or ``"wmdp"`` (:mod:`erasus.evaluation.muse_wmdp`); the LM protocols take ``tokenizer=``.
    Extensions add more through :meth:`register_protocol`.
    ``gold_standard``: ``"retrain"`` (compare with ``gold_model``, a model retrained
    without the forget data), ``"holdout"`` (compare forget data with held-out data
    and utility with ``original_model``), or ``"auto"`` (retrain if a gold model is given).
    ``n_runs``: how many models (seeds) a list passed to ``evaluate`` is expected to
    hold; ``n_bootstrap``: bootstrap replicates for a single model; ``forget_mode``:
    ``"auto"`` (inferred from the labels), ``"sample"`` or ``"class"``; ``refit``: run the
    last-layer re-fit attack (the check that catches knowledge hidden behind the output
    layer; about a second per model on the bundled data sets).
    """

    PROTOCOLS = ("general",)

    @classmethod
    def register_protocol(cls, name: str, evaluate: Callable) -> None:
        """The hook through which an extension adds a protocol (the LLM package registers
        ``tofu``, ``muse`` and ``wmdp``); the same as ``register("protocol", name)(evaluate)``:
        ``evaluate(benchmark, unlearned_model, **data)`` returns a report with ``verdict``,
        ``results`` and ``summary()``; the benchmark's ``n_runs``, ``confidence_level`` and
        ``tolerances`` are available to it."""
        from ..core.registry import register

        if name in cls.PROTOCOLS:
            raise ConfigError(f"Protocol {name!r} is built in and cannot be replaced.")
        register("protocol", name)(evaluate)

    @classmethod
    def protocols(cls) -> tuple:
        from ..core.registry import list_registered

        return cls.PROTOCOLS + tuple(list_registered("protocol"))

    def __init__(self, protocol: str = "general", gold_standard: str = "auto", n_runs: int = 1,
                 confidence_level: float = 0.95, n_bootstrap: int = 500, max_samples: Optional[int] = 5000,
                 tolerances: Optional[Dict[str, tuple]] = None, seed: int = 0, forget_mode: str = "auto",
                 refit: bool = True, metrics: Sequence = ()):
        if protocol not in self.protocols():
            import difflib

            close = difflib.get_close_matches(str(protocol), self.protocols(), n=1)
            raise ConfigError(f"Expected protocol in {self.protocols()}, got {protocol!r}."
                              + (f" Did you mean {close[0]!r}?" if close else ""))
        if gold_standard not in ("auto", "retrain", "holdout"):
            raise ConfigError(f"Expected gold_standard 'auto', 'retrain' or 'holdout', got {gold_standard!r}.")
        if not 0.5 <= confidence_level < 1.0:
            raise ConfigError(f"Expected confidence_level in [0.5, 1), got {confidence_level}.")
        if isinstance(n_runs, bool) or not isinstance(n_runs, int) or n_runs < 1 or n_bootstrap < 10:
            raise ConfigError(f"Expected n_runs >= 1 and n_bootstrap >= 10, got {n_runs}, {n_bootstrap}.")
        if forget_mode not in ("auto", "sample", "class"):
            raise ConfigError(f"Expected forget_mode 'auto', 'sample' or 'class', got {forget_mode!r}.")
        tol = dict(GENERAL_TOLERANCES)
        for k, v in (tolerances or {}).items():
            if k not in GENERAL_TOLERANCES:
                raise ConfigError(f"Unknown tolerance {k!r}; expected some of {sorted(GENERAL_TOLERANCES)}.")
            v = tuple(v)[:2]
            if len(v) != 2 or not 0 <= v[0] <= v[1]:
                raise ConfigError(f"Expected tolerance {k!r} as (pass, partial) with 0 <= pass <= partial, got {v}.")
            tol[k] = (float(v[0]), float(v[1]))
        self.protocol, self.gold_standard, self.n_runs = protocol, gold_standard, n_runs
        self.confidence_level, self.n_bootstrap, self.max_samples = confidence_level, n_bootstrap, max_samples
        self.tolerances = tol
        self.seed, self.forget_mode, self.refit = seed, forget_mode, refit
        self.metrics = list(metrics)
        if self.metrics:
            from ..core.registry import build

            for m in self.metrics:  # unknown names fail here, before any measuring
                build("metric", m) if isinstance(m, str) else m
        self._memo = ModelMemo(8)  # per-sample arrays of recently evaluated models

    # ------------------------------------------------------------------------------------
    def evaluate(self, unlearned_model, forget_data=None, retain_data=None, test_data=None, holdout_data=None,
                 *legacy, gold_model=None, original_model=None, **protocol_kwargs) -> BenchmarkReport:
        """Compare ``unlearned_model`` (one model, or a list of models from independent runs)
        with the gold standard. ``holdout_data``: samples never trained on, from the forget
        set's distribution (for class forgetting: including held-out samples of the
        forgotten classes); defaults to ``test_data``. ``original_model``: the model before
        unlearning (the utility reference with ``gold_standard="holdout"``; with a gold
        model it adds the power check of the module docstring). The data: a
        :class:`~erasus.data.Splits` or the loaders one by one; the models by keyword."""
        from ..data.splits import legacy_positional, unpack

        forget_data, retain_data, test_data, holdout_data = unpack(
            forget_data, retain_data, test_data, holdout_data, "UnlearningBenchmark.evaluate")
        kw = legacy_positional("UnlearningBenchmark.evaluate", legacy, ["gold_model", "original_model"],
                               {"gold_model": gold_model, "original_model": original_model})
        gold_model, original_model = kw["gold_model"], kw["original_model"]
        if self.protocol not in self.PROTOCOLS:
            from ..core.registry import get

            return get("protocol", self.protocol)(
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
        if gold_standard == "holdout":
            if holdout_data is None and test_data is None:
                raise DataError("gold_standard='holdout' compares the forget set with data the model never saw: pass "
                                "holdout_data (or test_data), or pass gold_model for gold_standard='retrain'.")
            if original_model is None:
                raise DataError("gold_standard='holdout' needs original_model (the model before unlearning) as the "
                                "utility reference; or pass gold_model for gold_standard='retrain'.")
        models = list(unlearned_model) if isinstance(unlearned_model, (list, tuple)) else [unlearned_model]
        if not models:
            raise DataError("Expected at least one unlearned model, got an empty list.")
        loaders = dict(forget=forget_data, retain=retain_data, test=test_data, holdout=holdout_data)
        with isolated_rng(self.seed):
            return self._evaluate(models, loaders, gold_standard, gold_model, original_model)

    # ------------------------------------------------------------------------------------
    def _arrays(self, model, loaders) -> dict:
        """Every per-sample array the metrics read, for one model (remembered for the last
        few models by a fingerprint of their weights and the loaders, so that a gold or
        original model judged against many candidates is measured once)."""
        extra = (tuple(id(v) for v in loaders.values()), self.max_samples, self.forget_mode, self.refit, self.seed)
        return self._memo.get(model, extra, lambda: self._measure(model, loaders))

    def _measure(self, model, loaders) -> dict:
        from ..metrics.attacks import LastLayerRefit
        from ..models import wrap

        ctx = EvalContext(wrap(model), loaders["forget"], loaders["retain"], loaders["test"], loaders["holdout"],
                          max_samples=self.max_samples, forget_mode=self.forget_mode)
        mode, why, classes = ctx.mode()
        arr = {"_mode": (mode, why, classes)}
        for s in ("forget", "retain"):
            if ctx.has(s):
                arr[s] = ctx.stats(s)
        for s in ("test", "holdout"):
            if ctx.has(s):
                st = ctx.stats(s)
                if mode == "class":  # utility on the classes that were kept
                    st = {k: v[~np.isin(st["label"], classes)] for k, v in st.items()}
                if len(st["loss"]):
                    arr[s] = st
        if ctx.has("nonmember"):
            try:
                arr["nonmember"] = ctx.stats("nonmember")
            except DataError as e:
                arr["_nonmember_error"] = str(e)
        if self.refit and (ctx.has("retain") or ctx.has("nonmember")):
            try:
                r = LastLayerRefit(seed=self.seed).samples(ctx)
                arr["refit"] = {"v": r["refit_forget_accuracy"]}
                if "refit_nonmember_accuracy" in r:
                    arr["refit_nm"] = {"v": r["refit_nonmember_accuracy"]}
            except DataError as e:
                arr["_refit_error"] = str(e)
        return arr

    def _specs(self, arr: dict, gold_standard: str, mode: str, has_gold_forget: bool) -> List[_Spec]:
        t = self.tolerances
        specs: List[_Spec] = []
        acc = lambda key: (lambda a, i: float(a[key]["correct"][i[key]].mean()))  # noqa: E731
        auc = lambda a, i: fast_auc(-a["forget"]["loss"][i["forget"]], -a["nonmember"]["loss"][i["nonmember"]])  # noqa
        refit = lambda key: (lambda a, i: float(a[key]["v"][i[key]].mean()))  # noqa: E731
        paired = lambda fn: (lambda m, r, i: fn(m, i) - fn(r, i))  # noqa: E731
        drop = lambda fn: (lambda m, r, i: fn(r, i) - fn(m, i))  # noqa: E731
        retrain = gold_standard == "retrain"
        ref_label = "retrained" if retrain else "original"
        # forgetting ----------------------------------------------------------------------
        if retrain:
            specs.append(_Spec("forget_acc", ("forget",), acc("forget"), paired(acc("forget")),
                               two_sided(*t["forget_acc"]), "retrained", acc("forget")))
        elif mode == "class":
            specs.append(_Spec("forget_acc", ("forget",), acc("forget"), lambda m, r, i: acc("forget")(m, i),
                               at_most(*t["forget_acc"]), "class never seen", lambda r, i: 0.0))
        elif "nonmember" in arr:
            specs.append(_Spec("forget_acc", ("forget", "nonmember"), acc("forget"),
                               lambda m, r, i: acc("forget")(m, i) - acc("nonmember")(m, i),
                               two_sided(*t["forget_acc"]), "held-out acc", None))
        if "nonmember" in arr:
            if retrain:
                specs.append(_Spec("mia_auc", ("forget", "nonmember"), auc, paired(auc), two_sided(*t["mia_auc"]),
                                   "retrained", auc))
            else:
                specs.append(_Spec("mia_auc", ("forget", "nonmember"), auc, lambda m, r, i: auc(m, i) - 0.5,
                                   two_sided(*t["mia_auc"]), "unseen data", lambda r, i: 0.5))
        elif retrain and has_gold_forget and mode == "sample":
            # (class forgetting: how confidently two retrained models are wrong on a class neither saw is
            # not a property of the request: measured, two digits models differ by AUC 0.05; forget_acc and
            # the re-fit attack judge it)
            lauc = lambda m, r, i: fast_auc(-m["forget"]["loss"][i["forget"]], -r["forget"]["loss"][i["forget"]])  # noqa
            specs.append(_Spec("forget_loss_auc", ("forget",), None, lambda m, r, i: lauc(m, r, i) - 0.5,
                               two_sided(*t["forget_loss_auc"]), "0.5: as the retrained", lambda r, i: 0.5))
        if "refit" in arr:
            tol = t["refit_acc_class"] if mode == "class" else t["refit_acc"]
            if retrain:
                specs.append(_Spec("refit_acc", ("refit",), refit("refit"), paired(refit("refit")), at_most(*tol),
                                   "retrained", refit("refit")))
            elif mode == "class":  # no retrained model: the class must be markedly harder to recover than before
                specs.append(_Spec("refit_acc", ("refit",), refit("refit"), drop(refit("refit")),
                                   at_least(tol[0], tol[0] / 2), "original's, less", refit("refit")))
            elif "refit_nm" in arr:
                specs.append(_Spec("refit_acc", ("refit", "refit_nm"), refit("refit"),
                                   lambda m, r, i: refit("refit")(m, i) - refit("refit_nm")(m, i), at_most(*tol),
                                   "held-out recovery", None))
        # utility -------------------------------------------------------------------------
        for key in ("retain", "test"):
            if key in arr:
                specs.append(_Spec(f"{key}_acc", (key,), acc(key), drop(acc(key)), at_most(*t[f"{key}_acc"]),
                                   ref_label, acc(key)))
        if "retain" not in arr and "test" not in arr and "holdout" in arr:
            specs.append(_Spec("holdout_acc", ("holdout",), acc("holdout"), drop(acc("holdout")),
                               at_most(*t["holdout_acc"]), ref_label, acc("holdout")))
        return specs

    def _judge(self, spec: _Spec, runs: List[dict], ref: dict) -> MetricResult:
        """One metric over the runs: a t interval over several, a bootstrap for one."""
        sizes = {g: len(next(iter(runs[0][g].values()))) for g in spec.groups}
        full = {g: np.arange(n) for g, n in sizes.items()}
        if len(runs) > 1:
            deltas = [spec.delta(r, ref, {g: np.arange(len(next(iter(r[g].values())))) for g in spec.groups})
                      for r in runs]
            point, dci = float(np.mean(deltas)), t_interval(deltas, self.confidence_level)
            vals = [spec.value(r, {g: np.arange(len(next(iter(r[g].values())))) for g in spec.groups})
                    if spec.value else np.nan for r in runs]
            value, ci = float(np.mean(vals)), t_interval(vals, self.confidence_level)
        else:
            point, dci, _ = bootstrap(lambda i: spec.delta(runs[0], ref, i), sizes, self.n_bootstrap, self.seed,
                                      self.confidence_level)
            if spec.value is not None:
                value, ci, _ = bootstrap(lambda i: spec.value(runs[0], i), sizes, self.n_bootstrap, self.seed,
                                         self.confidence_level)
            else:
                value, ci = point + 0.5, (dci[0] + 0.5, dci[1] + 0.5)
        j = judge(point, dci, spec.region, n=min(sizes.values()))
        if spec.ref_value is not None:
            reference = float(spec.ref_value(ref, full))
        else:  # a reference measured on the model itself (held-out accuracy or recovery)
            reference = float(np.mean([value - spec.delta(r, ref, full) for r in runs[:1]]))
        return MetricResult(spec.name, float(value), tuple(ci), reference, spec.ref_label, tuple(dci),
                            (spec.region.pass_tol, spec.region.partial_tol), j.verdict, j.note, min(sizes.values()),
                            j.underpowered, j.could_fail)

    def _evaluate(self, models, loaders, gold_standard, gold_model, original_model) -> BenchmarkReport:
        runs = [self._arrays(m, loaders) for m in models]
        mode, why, classes = runs[0]["_mode"]
        ref_model = gold_model if gold_standard == "retrain" else original_model
        ref = self._arrays(ref_model, loaders)
        report = BenchmarkReport(self.protocol, gold_standard, self.confidence_level, n_models=len(models),
                                 forget_mode=mode)
        report.notes.append(f"{mode} forgetting: {why}" + (f" (classes {list(classes)})" if classes else ""))
        for key in ("_nonmember_error", "_refit_error"):
            if key in runs[0]:
                report.notes.append(runs[0][key])
        specs = self._specs(runs[0], gold_standard, mode, "forget" in ref)
        specs = [s for s in specs if all(g in r for r in runs + [ref] for g in s.groups)]
        report.results = [self._judge(s, runs, ref) for s in specs]
        if not any(r.name in ("retain_acc", "test_acc", "holdout_acc") for r in report.results):
            report.results.append(MetricResult("utility", float("nan"), (np.nan, np.nan), float("nan"), "none",
                                               (np.nan, np.nan), (np.nan, np.nan), INCONCLUSIVE,
                                               "no retain, test or held-out data of the kept classes to measure "
                                               "utility on: a destroyed model would look forgotten"))
        # utility cannot be skipped for lack of data: a missing measurement is not underpowered
        if self.metrics:
            report.results += self._registered(models[0], loaders, gold_model, original_model, gold_standard)
        if original_model is not None:
            self._power_check(report, specs, ref, loaders, gold_standard, original_model)
            report.power_checked = True
        return report

    def _registered(self, model, loaders, gold_model, original_model, gold_standard) -> List[MetricResult]:
        """The registered metrics named in ``metrics=``, each judged against the retrained model
        the way the verification suite judges it (per-sample values bootstrapped, paired with the
        retrained model's on the same samples, where the metric gives them; the tolerance
        ``tolerances["registered"]``), so that a new metric joins the verdict by its name."""
        from ..certification.suite import UnlearningVerificationSuite

        if gold_standard != "retrain":
            raise ConfigError("metrics= are judged against a retrained model: pass gold_model=.")
        pass_tol, partial_tol = self.tolerances["registered"]
        suite = UnlearningVerificationSuite(families=(), metrics=self.metrics, tolerance=pass_tol,
                                            max_samples=self.max_samples, n_bootstrap=max(10, self.n_bootstrap // 2),
                                            confidence_level=self.confidence_level, forget_mode=self.forget_mode,
                                            seed=self.seed)
        rep = suite.run(model, loaders["forget"], loaders["retain"], loaders["test"], loaders["holdout"],
                        gold_model=gold_model, original_model=original_model)
        out = [MetricResult(r.value_name, r.model, (np.nan, np.nan), r.reference, "retrained", r.delta_ci,
                            (pass_tol, partial_tol), r.verdict, r.note, 0, r.underpowered, r.could_fail)
               for r in rep.results]
        for name, why in rep.skipped.items():
            out.append(MetricResult(name, float("nan"), (np.nan, np.nan), float("nan"), "none", (np.nan, np.nan),
                                    (pass_tol, partial_tol), INCONCLUSIVE, f"not measured: {why}"))
        return out

    def _power_check(self, report, specs, ref, loaders, gold_standard, original_model) -> None:
        """Judge the untouched original the same way. A forgetting metric the original does
        not FAIL cannot tell unlearning from doing nothing on this request: the model's
        result on it is not evidence (INCONCLUSIVE, left out of the verdict) unless it FAILs."""
        orig = ref if gold_standard == "holdout" else self._arrays(original_model, loaders)
        verdicts = {s.name: self._judge(s, [orig], ref).verdict for s in specs if s.name in FORGETTING}
        failed = [k for k, v in verdicts.items() if v == FAIL]
        idle = {k: v for k, v in verdicts.items() if v != FAIL}
        if failed:
            report.notes.append(f"power: the untouched original FAILs {', '.join(failed)}: a PASS there means the "
                                "model moved away from it")
        if idle:
            why = (f"the untouched original does not fail it either ({', '.join(f'{k} {v}' for k, v in idle.items())})"
                   ": it cannot tell unlearning from doing nothing on this request")
            if not failed:
                report.notes.append("power: no forgetting metric separates the untouched original from the "
                                    "reference: this request cannot tell unlearning from doing nothing")
            for r in report.results:
                if r.name in idle and r.verdict != FAIL:
                    r.verdict, r.note, r.underpowered = INCONCLUSIVE, why, True
