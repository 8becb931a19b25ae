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

The specification's form runs a function of a config instead, over every combination of a
grid::

    ablation = AblationStudy(base_config={"lr": 1e-3, "strategy": "wga"}, run_fn=run_trial)
    ablation.run_full_ablation({"lr": [1e-3, 1e-4, 1e-5], "strategy": ["gradient_ascent", "scrub"]})
    print(ablation.summary())      # one line per combination, then each value's mean over the others

``run_trial(config) -> {metric: value}`` (or one number); ``run_full_ablation`` also works on a
config study, with ``section.key`` names (``{"strategy.lr": [...]}``).
"""
from __future__ import annotations

import copy
import itertools
import json
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

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


def _overrides(name: str, overrides) -> Sequence[str]:
    if isinstance(overrides, str):
        raise ConfigError(f"Variant {name!r}: expected a list of overrides, got the string {overrides!r}.")
    return overrides


def _plain(base: Mapping, overrides: Sequence[str]) -> Dict[str, Any]:
    """``base`` with each ``"key=value"`` (value as JSON, else text; ``a.b`` keys nested) set: a
    ``run_fn`` study's configs are the user's own dicts, not Erasus run configs."""
    out = copy.deepcopy(dict(base))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"Override {item!r}: expected key=value.")
        key, text = item.split("=", 1)
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        *path, last = key.strip().split(".")
        d = out
        for p in path:
            d = d.setdefault(p, {})
            if not isinstance(d, dict):
                raise ConfigError(f"Override {item!r}: {p} is not a mapping in the base config.")
        d[last] = value
    return out


def _number(v) -> bool:
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool)


class AblationStudy:
    """``base``: a config mapping (as read from YAML, defaults filled in or not); ``variants``:
    ``{name: [overrides]}``; ``seeds``: each variant runs once per seed (``task.seed``; default
    seed 0). With ``run_fn`` (and ``base_config``, the specification's names) each variant's
    config is passed to ``run_fn`` instead of run as an Erasus config (module docstring); given
    ``seeds``, each call's config holds ``"seed"``."""

    def __init__(self, base: Optional[Mapping] = None, variants: Optional[Mapping[str, Sequence[str]]] = None,
                 seeds: Optional[Sequence[int]] = None, *, base_config: Optional[Mapping] = None,
                 run_fn: Optional[Callable[[Dict[str, Any]], Any]] = None):
        if base_config is not None:
            if base is not None:
                raise ConfigError("Pass base or base_config (the same thing), not both.")
            base = base_config
        if base is None or not isinstance(base, Mapping):
            raise ConfigError(f"Expected a base config mapping, got {type(base).__name__}.")
        if run_fn is not None and not callable(run_fn):
            raise ConfigError(f"Expected run_fn to be callable, got {type(run_fn).__name__}.")
        self.base, self.run_fn = dict(base), run_fn
        self.seeds_given = seeds is not None
        self.seeds = list(seeds) if seeds is not None else [0]
        if not self.seeds:
            raise ConfigError("Expected at least one seed.")
        self.configs: Dict[str, Dict] = {}
        self.rows: List[Any] = []
        if variants is not None:
            self._set_variants({name: list(_overrides(name, o)) for name, o in variants.items()})
        elif run_fn is None:
            raise ConfigError("Expected variants, e.g. {'full': [], 'no selector': ['selector.name=null']}, or "
                              "run_fn=<config -> metrics> and run_full_ablation(grid).")

    def _set_variants(self, variants: Mapping[str, List[str]]) -> None:
        if not variants:
            raise ConfigError("Expected at least one variant, e.g. {'full': [], 'no selector': ['selector.name=null']}.")
        configs = {}
        for name, overrides in variants.items():
            cfg = apply_overrides(self.base, overrides) if self.run_fn is None else _plain(self.base, overrides)
            if self.run_fn is None:
                cfg = resolve_config(cfg, source=f"variant {name!r}")
                if cfg["family"] != "classifier":
                    raise ConfigError("AblationStudy runs classifier configs.")
            configs[name] = cfg
        self.configs = configs

    def run_full_ablation(self, grid: Mapping[str, Sequence[Any]], progress: bool = False) -> List[Any]:
        """Run every combination of ``grid``'s values (``{name: [values]}``) on top of the base
        config: the full factorial design. Returns the rows (:meth:`summary` tabulates them)."""
        if not grid or any(isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or not len(v)
                           for v in grid.values()):
            raise ConfigError(f"Expected a grid of non-empty value lists, e.g. {{'lr': [1e-3, 1e-4]}}, got {grid!r}.")
        keys = list(grid)
        combos = list(itertools.product(*(grid[k] for k in keys)))
        self.grid = {k: list(grid[k]) for k in keys}
        self.combos = {", ".join(f"{k}={v}" for k, v in zip(keys, c)): dict(zip(keys, c)) for c in combos}
        if len(self.combos) != len(combos):
            raise ConfigError(f"Expected distinct values in each grid list, got {grid!r}.")
        self._set_variants({name: [f"{k}={json.dumps(v)}" for k, v in combo.items()]
                            for name, combo in self.combos.items()})
        return self.run(progress)

    def run(self, progress: bool = False) -> List[Any]:
        from .config_run import run_unlearn

        self.rows = []
        if not self.configs:
            raise ConfigError("No variants to run: give variants, or call run_full_ablation(grid).")
        if self.run_fn is not None:
            for name, cfg in self.configs.items():
                for seed in self.seeds:
                    c = {**cfg, "seed": seed} if self.seeds_given else dict(cfg)
                    t0 = time.perf_counter()
                    out = self.run_fn(c)
                    out = {"value": out} if isinstance(out, (int, float)) and not isinstance(out, bool) else out
                    if not isinstance(out, Mapping):
                        raise ConfigError(f"run_fn returned {type(out).__name__}: expected a dict of metrics or a number.")
                    self.rows.append({"variant": name, "seed": seed, **dict(out), "time_s": time.perf_counter() - t0})
            return self.rows
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

    def summary(self) -> str:
        """A markdown table, one line per variant (means over seeds); after
        :meth:`run_full_ablation` of a ``run_fn`` study, then each grid value's mean over the
        combinations that hold it (its main effect)."""
        if self.run_fn is None:
            return self.table()
        if not self.rows:
            raise ConfigError("Nothing to summarise: call run() or run_full_ablation() first.")
        metrics = [k for k in self.rows[0] if k not in ("variant", "seed")
                   and all(_number(r.get(k)) for r in self.rows)]
        mean = lambda rows, k: float(np.mean([r[k] for r in rows]))  # noqa: E731
        lines = ["| variant | seeds | " + " | ".join(metrics) + " |", "|" + "---|" * (len(metrics) + 2)]
        for name in self.configs:
            rs = [r for r in self.rows if r["variant"] == name]
            lines.append(f"| {name} | {len(rs)} | " + " | ".join(f"{mean(rs, k):.4g}" for k in metrics) + " |")
        grid = getattr(self, "grid", None)
        if grid:
            lines += ["", "| factor = value | runs | " + " | ".join(metrics) + " |", "|" + "---|" * (len(metrics) + 2)]
            for k, values in grid.items():
                for v in values:
                    rs = [r for r in self.rows if self.combos[r["variant"]][k] == v]
                    lines.append(f"| {k} = {v} | {len(rs)} | " + " | ".join(f"{mean(rs, m):.4g}" for m in metrics) + " |")
        return "\n".join(lines)

    def table(self, markdown: bool = True) -> str:
        """One line per variant: means over seeds (verdicts listed)."""
        if self.run_fn is not None:
            return self.summary()
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
        return [dict(r) if isinstance(r, dict) else asdict(r) for r in self.rows]

    def plot(self, path: Optional[str] = None, overwrite: bool = False):
        """The rows as bars per metric (:func:`erasus.visualization.analysis.run_comparison`),
        coloured by verdict (one bar per variant and seed)."""
        from ..visualization.analysis import run_comparison

        if not self.rows:
            raise ConfigError("Nothing to plot: call run() first.")
        if self.run_fn is not None:
            raise ConfigError("plot() draws a config study's verification rows; a run_fn study's are in summary().")
        rows = [{**asdict(r), "label": f"{r.variant} (seed {r.seed})"} for r in self.rows]
        return run_comparison(rows, metrics=("forget_acc", "test_acc", "mia_auc", "gap"), label="label", path=path,
                              overwrite=overwrite)
