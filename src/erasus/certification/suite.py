"""``UnlearningVerificationSuite``: every attack in one call, each next to the retrained model.

The conceptual guide's third principle: a passing accuracy is necessary but not
sufficient, so the suite attacks the unlearned model the way an adversary would and
runs the *same* attack, with the same data and seeds, on the model retrained without
the forget set. An attack passes when the unlearned model answers it as the retrained
model does (within ``tolerance``), or, for values with a fixed reference such as an MIA
AUC of 0.5, as a model that never saw the data would.

Attack families (registered metrics; each row of the report names the metric, its
configuration and what it does):

* ``membership``: loss, confidence, entropy and modified-entropy threshold attacks, SalUn's
  SVC MIA-efficacy, RMIA with the retrained model as reference.
* ``extraction``: recovering the forget labels from what is left in the weights or
  features — int8 / int4 weight quantization and a linear probe on frozen features.
* ``relearning``: a few fine-tuning steps on part of the forget set, and on retain data
  only; suppressed (not removed) knowledge springs back faster than the retrained
  model learns it.

Per-example attacks that train their own shadow models (LiRA, U-LiRA, the NeurIPS-2023
forgetting score) are in :mod:`erasus.metrics.lira`: they need a training function, not
only a model.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from ..core.exceptions import ConfigError, DataError
from ..core.registry import build

FAMILIES = {
    "membership": ("mia", "mia_confidence", "mia_entropy", "mia_modified_entropy", "mia_efficacy", "rmia"),
    "extraction": ("quantization", "linear_probe"),
    "relearning": ("relearn",),
}


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


@dataclass
class SuiteReport:
    results: List[AttackResult] = field(default_factory=list)
    skipped: Dict[str, str] = field(default_factory=dict)
    tolerance: float = 0.05

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "tolerance": self.tolerance, "skipped": dict(self.skipped),
                "results": [r.__dict__.copy() for r in self.results]}

    def summary(self) -> str:
        lines = [f"{'family':10s} {'attack value':34s} {'model':>7s} {'retrained':>9s} {'reference':>9s}  result"]
        for r in self.results:
            lines.append(f"{r.family:10s} {r.value_name:34s} {r.model:7.3f} {r.gold:9.3f} {r.reference:9.3f}  "
                         f"{'PASS' if r.passed else 'FAIL'}")
        lines.append("")
        lines.append("what was attacked and how:")
        for metric, how in dict.fromkeys((r.metric, r.how) for r in self.results):
            lines.append(f"  {metric}: {how}")
        for metric, why in self.skipped.items():
            lines.append(f"  {metric}: skipped ({why})")
        lines.append(f"overall verdict: {self.verdict} (tolerance {self.tolerance} on every value)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


class UnlearningVerificationSuite:
    """``UnlearningVerificationSuite().run(model, gold_model, forget, retain, test, holdout)``.

    ``families``: any of ``membership``, ``extraction``, ``relearning``; ``metrics``: extra
    registered metric names (or instances) to run as well; ``tolerance``: largest
    difference to the reference that passes (0.05: about the spread between models
    retrained with different seeds on the Fashion-MNIST protocol, see
    :mod:`erasus.evaluation.benchmark`); ``max_samples`` per split.
    """

    def __init__(self, families: Sequence[str] = ("membership", "extraction", "relearning"),
                 metrics: Sequence = (), tolerance: float = 0.05, max_samples: Optional[int] = 2000):
        unknown = [f for f in families if f not in FAMILIES]
        if unknown:
            raise ConfigError(f"Expected attack families from {sorted(FAMILIES)}, got {unknown}.")
        if not 0 < tolerance < 1:
            raise ConfigError(f"Expected 0 < tolerance < 1, got {tolerance}.")
        self.plan = [(f, m) for f in families for m in FAMILIES[f]] + [("custom", m) for m in metrics]
        self.tolerance, self.max_samples = tolerance, max_samples

    def run(self, model, gold_model, forget, retain=None, test=None, holdout=None) -> SuiteReport:
        from ..metrics.context import EvalContext
        from ..models import wrap

        if gold_model is None:
            raise DataError("The verification suite compares every attack with a model retrained without the forget "
                            "data: pass gold_model=... (for no retrained model, use UnlearningVerifier with held-out "
                            "data).")
        adapter = wrap(model)
        gold = adapter.with_model(gold_model)
        ctx = EvalContext(adapter, forget, retain, test, holdout, gold, max_samples=self.max_samples)
        gctx = ctx.for_gold()
        gctx.gold = gold  # RMIA on the retrained model uses itself as reference: 0.5 by construction
        report = SuiteReport(tolerance=self.tolerance)
        for family, spec in self.plan:
            metric = build("metric", spec) if isinstance(spec, str) else copy.copy(spec)
            name = getattr(metric, "registered_name", "") or type(metric).__name__
            try:
                mine = metric.compute(ctx)
                theirs = metric.compute(gctx)
            except DataError as e:
                report.skipped[name] = str(e)
                continue
            doc = (type(metric).__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
            cfg = metric.config.to_dict() if getattr(metric, "config", None) is not None else {}
            how = f"{' '.join(doc.split())} Config: {cfg}."
            for key, v in mine.items():
                ref = metric.reference.get(key, "gold")
                g = float(theirs.get(key, float("nan")))
                r = g if ref == "gold" or ref is None else float(ref)
                report.results.append(AttackResult(family, name, key, how, float(v), g, r,
                                                   bool(abs(float(v) - r) <= self.tolerance)))
        return report
