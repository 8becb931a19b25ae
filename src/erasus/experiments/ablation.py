"""``AblationStudy``: what each part of a run contributes, measured by switching it.

A study is a base config (:mod:`.configs`) and named variants, each a list of dotted
overrides::

    study = AblationStudy(base, {
        "full":            [],
        "no selector":     ["selector.name=null"],
        "coreset 25%":     ["selector.name=kcenter", "selector.prune_ratio=0.25"],
        "no early stop":   ["unlearn.holdout=false"],
        "no retain term":  ["strategy.alpha=0"],
    }, seeds=[0, 1])
    rows = study.run()
    print(study.table()); study.plot("ablation.png")

Every variant runs on the same request and seeds and is verified against the same retrained
model; a row holds the verdict, the unlearned model's forget / retain / test accuracy and
loss-attack AUC, the average absolute gap to the retrained model over the verified metrics,
and the run's steps and time. Variants are validated (unknown keys, values out of range)
before the first one runs.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..core.exceptions import ConfigError
from .configs import apply_overrides, resolve_config


@dataclass
class AblationRow:
    variant: str
    seed: int
    verdict: str
    forget_acc: float
    retain_acc: float
    test_acc: float
    mia_auc: float
    gap: float
    steps: int
    time_s: float
    coreset: Optional[int] = None  # samples the strategy trained on, when a selector picked them


class AblationStudy:
    """``base``: a config mapping (as read from YAML, defaults filled in or not); ``variants``:
    ``{name: [overrides]}``; ``seeds``: each variant runs once per seed (``task.seed``)."""

    def __init__(self, base: Mapping, variants: Mapping[str, Sequence[str]], seeds: Sequence[int] = (0,)):
        if not variants:
            raise ConfigError("Expected at least one variant, e.g. {'full': [], 'no selector': ['selector.name=null']}.")
        if not seeds:
            raise ConfigError("Expected at least one seed.")
        self.configs: Dict[str, Dict] = {}
        for name, overrides in variants.items():
            if isinstance(overrides, str):
                raise ConfigError(f"Variant {name!r}: expected a list of overrides, got the string {overrides!r}.")
            cfg = resolve_config(apply_overrides(dict(base), list(overrides)), source=f"variant {name!r}")
            if cfg["family"] != "classifier":
                raise ConfigError("AblationStudy runs classifier configs.")
            self.configs[name] = cfg
        self.seeds = list(seeds)
        self.rows: List[AblationRow] = []

    def run(self, progress: bool = False) -> List[AblationRow]:
        from .config_run import run_unlearn

        self.rows = []
        for name, cfg in self.configs.items():
            for seed in self.seeds:
                c = apply_overrides(cfg, [f"task.seed={seed}", "verify.views=false", "output.dir=null"])
                t0 = time.perf_counter()
                got = run_unlearn(c, None, progress=progress)
                dt = time.perf_counter() - t0
                rep, m = got["report"], got["metrics"]["unlearned"]
                gap = (float(np.mean([abs(r.value - r.reference) for r in rep.results if r.name.endswith("_acc")]))
                       if rep is not None else float("nan"))
                self.rows.append(AblationRow(name, seed, rep.verdict if rep is not None else "-",
                                             m["forget_accuracy"], m["retain_accuracy"], m["test_accuracy"],
                                             m["mia_auc"], gap, int(got["result"]["steps"]), dt,
                                             got["result"]["coreset"]))
        return self.rows

    def table(self, markdown: bool = True) -> str:
        """One line per variant: means over seeds (verdicts listed)."""
        if not self.rows:
            raise ConfigError("Nothing to tabulate: call run() first.")
        head = ["variant", "seeds", "verdicts", "forget acc", "retain acc", "test acc", "MIA AUC", "gap to retrain",
                "steps", "time (s)"]
        lines = []
        for name in self.configs:
            rs = [r for r in self.rows if r.variant == name]
            mean = lambda k: float(np.mean([getattr(r, k) for r in rs]))  # noqa: E731
            lines.append([name, str(len(rs)), " ".join(r.verdict for r in rs), f"{100 * mean('forget_acc'):.1f}",
                          f"{100 * mean('retain_acc'):.1f}", f"{100 * mean('test_acc'):.1f}", f"{mean('mia_auc'):.3f}",
                          f"{100 * mean('gap'):.2f}", f"{mean('steps'):.0f}", f"{mean('time_s'):.1f}"])
        if markdown:
            return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                             + ["| " + " | ".join(x) + " |" for x in lines])
        w = [max(len(h), *(len(x[i]) for x in lines)) for i, h in enumerate(head)]
        return "\n".join("  ".join(c.ljust(w[i]) for i, c in enumerate(x)) for x in [head] + lines)

    def to_dicts(self) -> List[dict]:
        return [asdict(r) for r in self.rows]

    def plot(self, path: Optional[str] = None, overwrite: bool = False):
        """The rows as bars per metric (:func:`erasus.visualization.analysis.run_comparison`),
        coloured by verdict (one bar per variant and seed)."""
        from ..visualization.analysis import run_comparison

        if not self.rows:
            raise ConfigError("Nothing to plot: call run() first.")
        rows = [{**asdict(r), "label": f"{r.variant} (seed {r.seed})"} for r in self.rows]
        return run_comparison(rows, metrics=("forget_acc", "test_acc", "mia_auc", "gap"), label="label", path=path,
                              overwrite=overwrite)
