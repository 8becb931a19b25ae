"""``UnlearningVerificationSuite``: every attack in one call, each next to the retrained model.

The conceptual guide's third principle: a passing accuracy is necessary but not
sufficient, so the suite attacks the unlearned model the way an adversary would and
runs the *same* attack, with the same data and seeds, on the model retrained without
the forget set. Every row is the difference between the two on the same samples, with a
paired-bootstrap confidence interval, judged by :mod:`erasus.core.evidence`: PASS when the
whole interval lies within the tolerance, FAIL when it lies wholly beyond twice the
tolerance, INCONCLUSIVE when the data cannot tell (rows whose interval is too wide for the
tolerance are named and left out of the overall verdict, which is INCONCLUSIVE when no row
can judge). Membership rows are two-sided (a model that *over*-forgets is as recognisable
as one that remembers); recovery attacks are one-sided (only recovering more than the
retrained model counts against the model).

Attack families (registered metrics; each row of the report names the metric, its
configuration and what it does):

* ``membership``: loss, confidence, entropy and modified-entropy threshold attacks, SalUn's
  SVC MIA-efficacy, RMIA with the retrained model as reference.
* ``extraction``: int8 / int4 weight quantization (rounding undoes small updates).
* ``representation``: a linear probe on frozen features and the last-layer re-fit attack
  (a new output layer trained on retain data and a few forget samples): knowledge hidden
  behind the output layer is still in the features, and these find it.
* ``relearning``: a few fine-tuning steps on part of the forget set, and on retain data
  only; suppressed (not removed) knowledge springs back faster than the retrained
  model learns it.

With ``original_model`` the untouched original is attacked too, and a row the original
passes as well cannot tell unlearning from doing nothing: it is INCONCLUSIVE. Every attack
runs with its own seeded random state, so the report depends only on the arguments.

Per-example attacks that train their own shadow models (LiRA, U-LiRA, the NeurIPS-2023
forgetting score) are in :mod:`erasus.metrics.lira`: they need a training function, not
only a model.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..core.evidence import FAIL, INCONCLUSIVE, PASS, at_most, bootstrap, combine_judged, judge, two_sided
from ..core.exceptions import ConfigError, DataError
from ..core.registry import build
from ..utils.misc import ModelMemo, isolated_rng

FAMILIES = {
    "membership": ("mia", "mia_confidence", "mia_entropy", "mia_modified_entropy", "mia_efficacy", "rmia"),
    "extraction": ("quantization",),
    "representation": ("linear_probe", "last_layer_refit"),
    "relearning": ("relearn",),
}
#: recovery under class forgetting varies more between retrained models (an unseen class is
#: recovered 0.45-0.59 on Fashion-MNIST, two seeds within 0.06): its tolerance
CLASS_REFIT_TOLERANCE = 0.10


@dataclass
class AttackResult:
    family: str
    metric: str
    value_name: str
    how: str
    model: float
    gold: float
    reference: float
    passed: bool
    delta_ci: tuple = (float("nan"), float("nan"))
    verdict: str = ""
    note: str = ""
    underpowered: bool = False
    tolerance: float = 0.05
    could_fail: bool = True


class _Named:
    """A suite row seen by :func:`erasus.core.evidence.combine_judged` (named by its value)."""

    def __init__(self, r):
        self.name, self.verdict, self.underpowered = r.value_name, r.verdict, r.underpowered
        self.could_fail = r.could_fail


@dataclass
class SuiteReport:
    results: List[AttackResult] = field(default_factory=list)
    skipped: Dict[str, str] = field(default_factory=dict)
    tolerance: float = 0.05
    notes: List[str] = field(default_factory=list)
    #: whether the untouched original was judged too (``original_model=``): see combine_judged
    power_checked: bool = False

    @property
    def verdict(self) -> str:
        return combine_judged([_Named(r) for r in self.results], power_checked=self.power_checked)[0]

    @property
    def verdict_note(self) -> str:
        return combine_judged([_Named(r) for r in self.results], power_checked=self.power_checked)[1]

    @property
    def passed(self) -> bool:
        return self.verdict == PASS

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "tolerance": self.tolerance, "skipped": dict(self.skipped),
                "notes": list(self.notes), "results": [r.__dict__.copy() for r in self.results]}

    def summary(self) -> str:
        lines = [f"{'family':14s} {'attack value':34s} {'model':>7s} {'retrained':>9s} {'difference (CI)':>24s}"
                 f" {'tol':>5s}  verdict"]
        for r in self.results:
            ci = f"[{r.delta_ci[0]:+.3f}, {r.delta_ci[1]:+.3f}]"
            lines.append(f"{r.family:14s} {r.value_name:34s} {r.model:7.3f} {r.gold:9.3f} {ci:>24s} "
                         f"{r.tolerance:5.2f}  {r.verdict}" + (f"  ({r.note})" if r.note else ""))
        lines.append("")
        lines.append("what was attacked and how:")
        for metric, how in dict.fromkeys((r.metric, r.how) for r in self.results):
            lines.append(f"  {metric}: {how}")
        for metric, why in self.skipped.items():
            lines.append(f"  {metric}: skipped ({why})")
        lines += [f"note: {n}" for n in self.notes]
        note = self.verdict_note
        lines.append(f"overall verdict: {self.verdict}" + (f" ({note})" if note else ""))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


class UnlearningVerificationSuite:
    """``UnlearningVerificationSuite().run(model, splits, gold_model=retrained)`` (or the loaders
    one by one: ``run(model, forget, retain, test, holdout, gold_model=...)``).

    ``families``: any of ``membership``, ``extraction``, ``representation``, ``relearning``;
    ``metrics``: extra registered metric names (or instances) to run as well; ``tolerance``:
    the largest difference to the retrained model that passes (0.05: about the spread between
    models retrained with different seeds on the Fashion-MNIST protocol, see
    :mod:`erasus.evaluation.benchmark`; twice it is the FAIL line); ``max_samples`` per
    split; ``n_bootstrap`` replicates for the intervals; ``confidence_level``;
    ``forget_mode`` ``"auto"`` / ``"sample"`` / ``"class"``; ``seed`` of every random
    choice.
    """

    def __init__(self, families: Sequence[str] = ("membership", "extraction", "representation", "relearning"),
                 metrics: Sequence = (), tolerance: float = 0.05, max_samples: Optional[int] = 2000,
                 n_bootstrap: int = 200, confidence_level: float = 0.95, forget_mode: str = "auto", seed: int = 0):
        unknown = [f for f in families if f not in FAMILIES]
        if unknown:
            raise ConfigError(f"Expected attack families from {sorted(FAMILIES)}, got {unknown}.")
        if not 0 < tolerance < 0.5:
            raise ConfigError(f"Expected 0 < tolerance < 0.5, got {tolerance}.")
        if n_bootstrap < 10 or not 0.5 <= confidence_level < 1:
            raise ConfigError(f"Expected n_bootstrap >= 10 and confidence_level in [0.5, 1), got {n_bootstrap}, "
                              f"{confidence_level}.")
        if forget_mode not in ("auto", "sample", "class"):
            raise ConfigError(f"Expected forget_mode 'auto', 'sample' or 'class', got {forget_mode!r}.")
        self.plan = [(f, m) for f in families for m in FAMILIES[f]] + [("custom", m) for m in metrics]
        self.tolerance, self.max_samples = tolerance, max_samples
        self.n_bootstrap, self.confidence_level, self.forget_mode, self.seed = (n_bootstrap, confidence_level,
                                                                                forget_mode, seed)
        self._memo = ModelMemo(8)

    # ------------------------------------------------------------------------------------
    def _region(self, metric, key: str, mode: str):
        direction = metric.higher_is_better.get(key)
        tol = self.tolerance
        if key.startswith("refit") and mode == "class":
            tol = CLASS_REFIT_TOLERANCE
        if direction is False:  # only more than the retrained model counts (recovered knowledge)
            return at_most(tol, 2 * tol), tol
        if direction is True:   # only less counts (utility)
            return at_most(tol, 2 * tol), tol
        return two_sided(tol, 2 * tol), tol

    def _measure(self, metric, ctx):
        """``(values, per-sample arrays or None)`` of one metric on one context."""
        samples = metric.samples(ctx)
        if samples:
            return {k: float(np.mean(v)) for k, v in samples.items()}, samples
        return metric.compute(ctx), None

    def _interval(self, metric, key, ctx, gctx, mine, theirs, sign):
        """Point, interval and sample count of ``sign * (model − gold)`` for one value."""
        c, B, seed = self.confidence_level, self.n_bootstrap, self.seed
        if mine[1] is not None and theirs[1] is not None:
            a, b = np.asarray(mine[1][key], float), np.asarray(theirs[1][key], float)
            if len(a) == len(b):  # the same samples: paired
                point, ci, _ = bootstrap(lambda i: sign * float(a[i["x"]].mean() - b[i["x"]].mean()), {"x": len(a)},
                                         B, seed, c)
            else:
                point, ci, _ = bootstrap(lambda i: sign * float(a[i["a"]].mean() - b[i["b"]].mean()),
                                         {"a": len(a), "b": len(b)}, B, seed, c)
            return point, ci, min(len(a), len(b))
        if getattr(metric, "resamplable", False):
            sizes = ctx.sizes(("forget", "retain", "test", "holdout", "nonmember"))

            def stat(i):
                try:
                    v = metric.compute(ctx.resampled(i))[key] - metric.compute(gctx.resampled(i))[key]
                except ValueError:  # a resample with one class only
                    return float("nan")
                return sign * float(v)

            point, ci, _ = bootstrap(stat, sizes, B, seed, c)
            return point, ci, sizes.get("forget", 0)
        d = sign * (mine[0][key] - theirs[0][key])
        return d, (d, d), 0

    def run(self, model, forget=None, retain=None, test=None, holdout=None, *legacy, gold_model=None,
            original_model=None) -> SuiteReport:
        """Every attack on ``model`` and on ``gold_model`` (by keyword). The data as a
        :class:`~erasus.data.Splits` or loaders one by one. (The older ``run(model, gold_model,
        forget, ...)`` still works for one release, with a ``DeprecationWarning``.)"""
        from ..data.splits import gold_in_second_place, legacy_positional, unpack
        from ..metrics.context import EvalContext
        from ..models import wrap

        gold_model, forget, retain, test, holdout, legacy = gold_in_second_place(
            "UnlearningVerificationSuite.run", forget, retain, test, holdout, legacy, gold_model)
        kw = legacy_positional("UnlearningVerificationSuite.run", legacy, ["original_model"],
                               {"original_model": original_model})
        original_model = kw["original_model"]
        forget, retain, test, holdout = unpack(forget, retain, test, holdout, "UnlearningVerificationSuite.run")

        if gold_model is None:
            raise DataError("The verification suite compares every attack with a model retrained without the forget "
                            "data: pass gold_model=... (for no retrained model, use UnlearningVerifier or "
                            "UnlearningBenchmark(gold_standard='holdout') with held-out data).")
        if forget is None:
            raise DataError("Expected forget data (the data that was unlearned), got None.")
        with isolated_rng(self.seed):
            adapter = wrap(model)

            def context(m, gold=None):
                return EvalContext(adapter.adapter_for(m), forget, retain, test, holdout,
                                   adapter.adapter_for(gold) if gold is not None else None,
                                   max_samples=self.max_samples, forget_mode=self.forget_mode)

            ctx, gctx = context(model, gold_model), context(gold_model, gold_model)
            octx = context(original_model, gold_model) if original_model is not None else None
            mode, why, classes = ctx.mode()
            report = SuiteReport(tolerance=self.tolerance, power_checked=original_model is not None)
            report.notes.append(f"{mode} forgetting: {why}")
            extra = (id(forget), id(retain), id(test), id(holdout), self.max_samples, self.forget_mode, self.seed)
            for family, spec in self.plan:
                metric = build("metric", spec) if isinstance(spec, str) else copy.copy(spec)
                name = getattr(metric, "registered_name", "") or type(metric).__name__
                supports = getattr(metric, "supports", ("*",))
                if "*" not in supports and adapter.family not in supports:
                    report.skipped[name] = f"supports {supports}, not a {adapter.family!r} model"
                    continue
                cfg = metric.config.to_dict() if getattr(metric, "config", None) is not None else {}
                measure = lambda c, m: self._memo.get(  # noqa: E731
                    m, extra + (name, repr(cfg), c is gctx), lambda: self._measure(metric, c))
                try:
                    mine, theirs = measure(ctx, model), measure(gctx, gold_model)
                    orig = measure(octx, original_model) if octx is not None else None
                except DataError as e:
                    report.skipped[name] = str(e)
                    continue
                doc = (type(metric).__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
                how = f"{' '.join(doc.split())} Config: {cfg}."
                for key, v in mine[0].items():
                    if key not in theirs[0]:
                        continue
                    region, tol = self._region(metric, key, mode)
                    sign = -1.0 if metric.higher_is_better.get(key) is True else 1.0  # the bad direction is positive
                    point, ci, n = self._interval(metric, key, ctx, gctx, mine, theirs, sign)
                    j = judge(point, ci, region, n=n or None)
                    verdict, note, under = j.verdict, j.note, j.underpowered
                    if orig is not None and verdict != FAIL and key in orig[0]:
                        o_point, o_ci, o_n = self._interval(metric, key, octx, gctx, orig, theirs, sign)
                        oj = judge(o_point, o_ci, region, n=o_n or None)
                        if oj.verdict != FAIL:
                            verdict, under = INCONCLUSIVE, True
                            note = (f"the untouched original does not fail this attack either ({oj.verdict}): it "
                                    "cannot tell unlearning from doing nothing on this request")
                    ref = metric.reference.get(key, "gold")
                    reference = float(theirs[0][key]) if ref == "gold" or ref is None else float(ref)
                    report.results.append(AttackResult(
                        family, name, key, how, float(v), float(theirs[0][key]), reference, verdict == PASS,
                        tuple(float(x) for x in ci), verdict, note, under, tol, j.could_fail))
        return report
