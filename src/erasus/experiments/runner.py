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


class ResultsFile:
    """A benchmark's results written as they come: after every :meth:`add`, ``<out>/<name>.json``
    (``{"meta", "rows"}``) and ``<name>.md`` (``render(rows, meta)``) are rewritten atomically
    with ``meta["partial"] = True``, so that a run cut off (a GPU lease that ends, a command's
    time limit, Ctrl-C) keeps every row it finished; :meth:`finish` writes the last time.

    ``mode``: ``"new"`` replaces an earlier file at the first write; ``"merge"`` keeps the
    earlier rows whose ``key(row)`` this run does not produce (a benchmark's ``--merge``);
    ``"resume"`` keeps them too, and :meth:`done` says which keys are there already, so that
    the benchmark skips them (``--resume``: go on where a cut-off run stopped). In both, the
    file is read again at every write under a lock, so that processes running parts of one
    grid side by side (one seed per core) merge into one file. ``meta["runs"]`` lists every
    command and ``meta["total_min"]`` adds up their minutes; a ``meta["note"]`` (why the file's
    numbers differ from a clean run) belongs to the file and is kept, a new run's note added to
    it. ``max_minutes``:
    :meth:`out_of_time` turns true after that many minutes of this run, for benchmarks that
    stop between cells rather than be killed inside one."""

    MODES = ("new", "merge", "resume")

    def __init__(self, out, name: str, key, render, meta: dict, mode: str = "new",
                 max_minutes: Optional[float] = None):
        from pathlib import Path

        if mode not in self.MODES:
            raise ValueError(f"Expected mode in {self.MODES}, got {mode!r}.")
        if max_minutes is not None and not max_minutes > 0:
            raise ValueError(f"Expected max_minutes > 0 (or None for no limit), got {max_minutes!r}.")
        self.dir, self.name, self.key, self.render, self.meta = Path(out), name, key, render, dict(meta)
        self.path = self.dir / f"{name}.json"
        self.mode, self.max_minutes = mode, max_minutes
        self.rows: List[dict] = []
        self._t0 = time.perf_counter()
        self._written, self._written_min = False, 0.0   # this run in the file yet; its minutes there
        self._stopped = False                           # a cell skipped for lack of time
        self.meta.setdefault("command", "?")
        self.own_note = self.meta.get("note")
        self.earlier, old_meta = self._read()
        self.meta["runs"] = old_meta.get("runs", []) + [self.meta["command"]]
        self._keep_note(old_meta)

    def _keep_note(self, old_meta: dict) -> None:
        notes = [n for n in (old_meta.get("note"), self.own_note) if n]
        if notes:
            self.meta["note"] = notes[0] if len(notes) == 1 or notes[1] in notes[0] else " ".join(notes)

    def _read(self):
        import json

        if self.mode == "new" or not self.path.exists():
            return [], {}
        old = json.loads(self.path.read_text())
        meta = old.get("meta", {})
        meta.setdefault("runs", [meta["command"]] if "command" in meta else [])
        return list(old.get("rows", [])), meta

    def done(self, key) -> bool:
        """Whether a row with this key is in the file already (always false unless resuming)."""
        return self.kept(key) is not None

    def kept(self, key) -> Optional[dict]:
        """The row with this key that a resumed run keeps (this run's, else the file's), or None
        (always None unless resuming): what a skipped cell measured, for cells that use it."""
        if self.mode != "resume":
            return None
        return next((r for r in self.rows[::-1] + self.earlier if self.key(r) == key), None)

    def out_of_time(self) -> bool:
        """Whether ``max_minutes`` have passed; a benchmark asks before each cell and skips it if so
        (the results then say the run stopped)."""
        late = self.max_minutes is not None and self.minutes() >= self.max_minutes
        self._stopped = self._stopped or late
        return late

    def minutes(self) -> float:
        return (time.perf_counter() - self._t0) / 60

    def all_rows(self) -> List[dict]:
        new = {self.key(r) for r in self.rows}
        return [r for r in self.earlier if self.key(r) not in new] + self.rows

    def add(self, row: dict, **meta) -> None:
        """Record ``row`` (and update ``meta`` with the keyword arguments) and write the files."""
        self.rows.append(row)
        self.write(partial=True, **meta)

    def write(self, partial: bool, **meta):
        """Write both files now; returns the markdown's path."""
        from ..utils.io import file_lock, write_results

        self.dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.path):
            total = self.minutes()
            if self.mode != "new":      # another process may have written since: take its rows and runs
                self.earlier, old_meta = self._read()
                runs = old_meta.get("runs", [])
                self.meta["runs"] = runs if self._written else runs + [self.meta["command"]]
                self._keep_note(old_meta)
                total += old_meta.get("total_min", 0.0) - self._written_min
            self._written, self._written_min = True, self.minutes()
            self.meta.update(meta)
            self.meta["partial"] = partial
            self.meta["total_min"] = total
            rows = self.all_rows()
            return write_results(self.dir, self.name, self.meta, rows, rendered(self.render, rows, self.meta))

    def finish(self, **meta):
        """The last write: ``meta["partial"]`` is false unless a cell was skipped on
        ``max_minutes`` (then ``meta["stopped"]`` says so and how to go on)."""
        if self._stopped:
            meta["stopped"] = (f"stopped after {self.minutes():.1f} min (--max-minutes {self.max_minutes:g}); "
                               "the same command with --resume goes on")
            return self.write(partial=True, **meta)
        self.meta.pop("stopped", None)
        return self.write(partial=False, **meta)


def rendered(render, rows: List[dict], meta: dict) -> str:
    """``render(rows, meta)``, headed by a note when ``meta["partial"]`` says the run is not
    complete (going on, cut off, or stopped on ``--max-minutes``)."""
    md = render(rows, meta)
    if meta.get("partial"):
        why = meta.get("stopped") or ("the run is going on, or was cut off; the same command with --resume runs the "
                                      "cells that are missing")
        md = f"> **Partial results** ({len(rows)} rows, {meta.get('total_min', 0.0):.1f} min): {why}.\n\n" + md
    return md


def rerender(out, name: str, render):
    """Rewrite ``<out>/<name>.md`` from ``<name>.json`` with ``render(rows, meta)`` (a
    benchmark's ``--render``: the table's layout changed; nothing runs). Returns the path."""
    import json
    from pathlib import Path

    from ..exceptions import DataError
    from ..utils.io import atomic_write_text

    path = Path(out) / f"{name}.json"
    if not path.exists():
        raise DataError(f"No results to render at {path}: run the benchmark first (or pass --out/--name).")
    data = json.loads(path.read_text())
    md_path = path.with_suffix(".md")
    atomic_write_text(md_path, rendered(render, data["rows"], data["meta"]))
    return md_path


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
