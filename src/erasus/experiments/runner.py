"""Run strategies on a classification protocol and tabulate them against the gold model."""
from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass
from typing import Dict, Iterable, List, Optional, Sequence

from ..evaluation.benchmark import UnlearningBenchmark
from ..evaluation.protocols import ClassificationTask, Split
from ..metrics import MetricSuite

METRICS = ("accuracy", "mia", "mia_efficacy", "gold_gap")


@dataclass
class ScenarioRow:
    scenario: str
    method: str
    seed: int
    time_s: float
    speedup: float
    forget_acc: float
    retain_acc: float
    test_acc: float
    mia_auc: float
    mia_efficacy: float
    avg_gap: float
    verdict: str
    note: str = ""
    call: str = "holdout"

    def to_dict(self) -> dict:
        return asdict(self)


def _row(scenario, method, seed, model, split: Split, gold, seconds, retrain_s, note="", max_samples=None,
         call="holdout"):
    m = MetricSuite(METRICS, max_samples=max_samples).run(
        model, split.forget, split.retain, split.test, split.holdout, gold_model=gold)
    report = UnlearningBenchmark(gold_standard="retrain", max_samples=max_samples, n_bootstrap=200).evaluate(
        model, split.forget, split.retain, split.test, split.holdout, gold_model=gold)
    return ScenarioRow(scenario, method, seed, seconds, retrain_s / seconds if seconds > 0 else float("inf"),
                       m["forget_accuracy"], m["retain_accuracy"], m["test_accuracy"], m["mia_auc"],
                       m["mia_efficacy"], m["avg_gap"], report.verdict, note, call)


def run_scenario(task: ClassificationTask, split: Split, strategies: Sequence[str], seed: int = 0,
                 progress: bool = True, include_references: bool = True, max_samples: Optional[int] = 5000,
                 strategy_kwargs: Optional[Dict[str, dict]] = None, calls: Sequence[str] = ("holdout",),
                 **fit_kwargs) -> List[ScenarioRow]:
    """Original and retrained reference rows, then one row per strategy at its defaults
    (``strategy_kwargs`` overrides per strategy) and per call in ``calls``: ``"holdout"``
    unlearns with the split's held-out data (calibrated stopping), ``"bare"`` as a user who
    has none would call it, ``fit(forget, retain)``."""
    from ..unlearners import ErasusUnlearner

    original = task.original(seed)
    gold = task.gold(split, seed)
    retrain_s = task.retrain_seconds(split, seed)
    rows = []
    if include_references:
        rows.append(_row(split.kind, "original", seed, original, split, gold, 0.0, retrain_s,
                         "untouched model", max_samples))
        rows.append(_row(split.kind, "retrain", seed, gold, split, gold, retrain_s, retrain_s,
                         "gold standard", max_samples))
    for call in calls:
        if call not in ("holdout", "bare"):
            raise ValueError(f"Expected calls from ('holdout', 'bare'), got {call!r}.")
        for name in strategies:
            kw = (strategy_kwargs or {}).get(name, {})
            unl = ErasusUnlearner(original, strategy=name, strategy_kwargs=kw)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                extra = fit_kwargs if hasattr(unl.strategy, "trainer_config") else {}  # one-shot edits take none
                res = unl.fit(split.forget, split.retain, split.holdout if call == "holdout" else None,
                              progress=progress, seed=seed, **extra)
                dt = time.perf_counter() - t0
            rows.append(_row(split.kind, name, seed, res.model, split, gold, dt, retrain_s, res.stop_reason,
                             max_samples, call))
    return rows


def coreset_row(task: ClassificationTask, split: Split, strategy: str, selector: str, prune_ratio: float = 0.5,
                seed: int = 0, progress: bool = True, max_samples: Optional[int] = 5000) -> ScenarioRow:
    """One row for the select stage: ``strategy`` run on the ``prune_ratio`` share of the forget
    set that ``selector`` picks (held-out data for calibrated stopping), verified on the whole
    request against the retrained model."""
    from ..unlearners import ErasusUnlearner

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        res = ErasusUnlearner(task.original(seed), strategy=strategy, selector=selector).fit(
            split.forget, split.retain, split.holdout, prune_ratio=prune_ratio, progress=progress, seed=seed)
        dt = time.perf_counter() - t
    return _row(split.kind, f"{strategy} + {selector} {int(round(100 * prune_ratio))}%", seed, res.model, split,
                task.gold(split, seed), dt, task.retrain_seconds(split, seed), res.stop_reason, max_samples)


def format_table(rows: Iterable[ScenarioRow], markdown: bool = False) -> str:
    rows = list(rows)
    cols = ["scenario", "method", "seed", "time_s", "speedup", "forget_acc", "retain_acc", "test_acc", "mia_auc",
            "mia_efficacy", "avg_gap", "verdict"]
    heads = ["scenario", "method", "seed", "time (s)", "speed-up", "forget acc", "retain acc", "test acc", "MIA AUC",
             "MIA-eff.", "avg gap", "verdict"]

    def fmt(r, c):
        v = getattr(r, c)
        if c in ("forget_acc", "retain_acc", "test_acc", "mia_efficacy"):
            return f"{100 * v:.1f}"
        if c == "mia_auc":
            return f"{v:.3f}"
        if c == "avg_gap":
            return f"{v:.2f}"
        if c == "time_s":
            return f"{v:.1f}"
        if c == "speedup":
            return "-" if r.method in ("original", "retrain") else f"{v:.1f}x"
        return str(v)

    cells = [[fmt(r, c) for c in cols] for r in rows]
    if markdown:
        out = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        out += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(out)
    widths = [max(len(h), *(len(row[i]) for row in cells)) if cells else len(h) for i, h in enumerate(heads)]
    line = lambda xs: "  ".join(x.rjust(w) if i > 1 else x.ljust(w) for i, (x, w) in enumerate(zip(xs, widths)))
    return "\n".join([line(heads), line(["-" * w for w in widths])] + [line(row) for row in cells])


def merge_previous(path, rows: List[dict], meta: dict, key) -> List[dict]:
    """A partial rerun merged into the results file at ``path`` (a benchmark's ``--merge``):
    the earlier rows whose ``key(row)`` this run did not produce are kept before the new
    ones; ``meta["runs"]`` lists every command so far and ``meta["total_min"]`` adds up
    their time. Without an earlier file the rows are returned as they are."""
    import json
    from pathlib import Path

    meta["runs"] = [meta["command"]]
    path = Path(path)
    if not path.exists():
        return rows
    old = json.loads(path.read_text())
    rerun = {key(r) for r in rows}
    meta["runs"] = old["meta"].get("runs", [old["meta"]["command"]]) + meta["runs"]
    meta["total_min"] = meta.get("total_min", 0.0) + old["meta"].get("total_min", 0.0)
    return [r for r in old["rows"] if key(r) not in rerun] + rows


def hardware(device=None) -> str:
    """The hardware a benchmark ran on, for its results file: the CUDA device's name (``device``,
    default the first when one is visible), else the CPU with the threads torch uses."""
    import os
    import platform

    import torch

    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads of {os.cpu_count()} cores"


def run_meta(script: str, argv=None, **extra) -> dict:
    """The header every benchmark records with its results: the command that produced them
    (``script`` with ``argv``, default the process's arguments), the date, the machine and
    the torch version, plus ``extra`` fields."""
    import os
    import platform
    import sys

    import torch

    args = sys.argv[1:] if argv is None else argv
    return {"command": f"python benchmarks/{script} {' '.join(args)}".rstrip(), "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "torch": torch.__version__, **extra}
