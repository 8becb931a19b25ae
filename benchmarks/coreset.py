"""Coreset study: when does unlearning a selected part of the forget set pay off?

Protocol: the Fashion-MNIST protocol of ``classification.py`` (random 10% forgetting, 2,000
forget samples). For each strategy × selector × ``prune_ratio``, the selector picks
``prune_ratio`` of the forget set, the strategy unlearns that coreset at its defaults
(calibrated stopping on held-out data), and the result is **always verified on the full
forget set**: forget accuracy on all 2,000 samples, loss-MIA AUC of all of them vs
held-out data, average gap to the retrained model. Time is end to end: selection plus
unlearning. ``prune_ratio = 1`` is the whole forget set (no selector), the reference for
the speed-up column. Selectors that need records made while the original was trained
(``forgetting_events``, ``loss_accumulation``) are skipped: the protocol's models were
trained without recorders; ``tracin`` runs on the final model only (one checkpoint).

    python benchmarks/coreset.py                                  # the full study
    python benchmarks/coreset.py --seeds 0 --strategies simnpo --ratios 0.1,0.25
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
RATIOS = (0.05, 0.1, 0.25, 0.5, 1.0)
STRATEGIES = ("simnpo", "wga", "negative_gradient")


def run(args, on_progress=None):
    from erasus.core.registry import get, list_registered, resolve
    from erasus.evaluation.protocols import fashion_mnist_task
    from erasus.experiments.runner import _row
    from erasus.unlearners import ErasusUnlearner

    task = fashion_mnist_task(cache_dir=Path(args.cache), progress=True)
    selectors = [n for n in list_registered("selector") if n != "full"
                 and not getattr(get("selector", n), "needs_training_records", False)] \
        if args.selectors == "all" else [resolve("selector", s) for s in args.selectors.split(",")]
    ratios = [float(r) for r in args.ratios.split(",")]
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        split = task.split("random", fraction=0.1, seed=seed)
        original, gold = task.original(seed), task.gold(split, seed)
        retrain_s = task.retrain_seconds(split, seed)
        for strategy in args.strategies.split(","):
            for ratio in sorted(ratios, reverse=True):  # the whole forget set first: the reference
                for sel in (["full"] if ratio >= 1.0 else selectors):
                    unl = ErasusUnlearner(original, strategy=strategy, selector=None if sel == "full" else sel)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        res = unl.fit(split.forget, split.retain, split.holdout, progress=False, seed=seed,
                                      prune_ratio=None if sel == "full" else ratio)
                    t = res.timings["total_s"]
                    r = _row(split.kind, strategy, seed, res.model, split, gold, t, retrain_s, res.stop_reason, 5000)
                    row = {**r.to_dict(), "strategy": strategy, "selector": sel, "ratio": ratio,
                           "select_s": res.timings.get("select_s", 0.0), "steps": res.steps}
                    rows.append(row)
                    print(f"seed {seed} {strategy:18s} {sel:18s} ratio {ratio:<5g} time {t:6.1f}s "
                          f"(select {row['select_s']:5.1f}s) forget {100 * r.forget_acc:5.1f} "
                          f"gap {r.avg_gap:5.2f}", flush=True)
            if on_progress is not None:  # results so far are written after every strategy
                on_progress(rows)
    return rows


def aggregate(rows):
    full = {}
    for r in rows:
        if r["selector"] == "full":
            full.setdefault((r["strategy"], r["seed"]), r)
    groups = defaultdict(list)
    for r in rows:
        f = full.get((r["strategy"], r["seed"]))
        r["speedup_vs_full"] = f["time_s"] / r["time_s"] if f else float("nan")
        r["gap_vs_full"] = r["avg_gap"] - f["avg_gap"] if f else float("nan")
        groups[(r["strategy"], r["selector"], r["ratio"])].append(r)
    out = []
    for (strategy, sel, ratio), rs in groups.items():
        a = {"strategy": strategy, "selector": sel, "ratio": ratio, "n": len(rs)}
        for k in ("time_s", "select_s", "speedup_vs_full", "forget_acc", "test_acc", "mia_auc", "avg_gap",
                  "gap_vs_full"):
            v = np.array([r[k] for r in rs], dtype=float)
            a[k], a[k + "_std"] = float(v.mean()), float(v.std(ddof=1) if len(v) > 1 else 0.0)
        out.append(a)
    return out


def findings(agg):
    """Per strategy and ratio: the selectors whose gap beats random's by more than the
    larger of their seed standard deviations (or by 0.25 points with one seed)."""
    lines = []
    by = defaultdict(dict)
    for a in agg:
        by[(a["strategy"], a["ratio"])][a["selector"]] = a
    for (strategy, ratio), sels in sorted(by.items()):
        if "random" not in sels:
            continue
        rnd = sels["random"]
        better = [s for s, a in sels.items() if s != "random" and
                  rnd["avg_gap"] - a["avg_gap"] > max(0.25, a["avg_gap_std"], rnd["avg_gap_std"])]
        worse = [s for s, a in sels.items() if s != "random" and
                 a["avg_gap"] - rnd["avg_gap"] > max(0.25, a["avg_gap_std"], rnd["avg_gap_std"])]
        lines.append(f"- {strategy}, ratio {ratio:g}: random gap {rnd['avg_gap']:.2f} in {rnd['time_s']:.1f} s; "
                     f"better than random: {', '.join(sorted(better)) or 'none'}; "
                     f"worse: {', '.join(sorted(worse)) or 'none'}")
    return lines


def markdown(agg, meta):
    lines = ["# Coreset study (Fashion-MNIST protocol, random 10% forgetting)", "",
             f"`{meta['command']}` on {meta['date']} ({meta['machine']}; torch {meta['torch']}); "
             f"seeds {meta['seeds']}; {meta['total_min']:.1f} min"
             + ("." if meta.get("complete", True) else " so far (incomplete run: only the strategies listed below).")
             , "",
             "Every row is verified on the **full** forget set (2,000 samples). time: selection + unlearning (s); "
             "speed-up: time of unlearning the whole forget set with the same strategy / this time, same run; "
             "gap: average gap to the retrained model (points; forget/retain/test accuracy and MIA-efficacy); "
             "Δgap: gap minus the whole-forget-set gap (negative = better). Mean ± std over seeds.", ""]
    for strategy in dict.fromkeys(a["strategy"] for a in agg):
        lines += [f"## {strategy}", "", "| selector | ratio | time (s) | select (s) | speed-up | forget acc (all) | "
                  "MIA AUC (all) | gap | Δgap |", "|---|---|---|---|---|---|---|---|---|"]
        for a in sorted([x for x in agg if x["strategy"] == strategy], key=lambda x: (-x["ratio"], x["avg_gap"])):
            lines.append(f"| {a['selector']} | {a['ratio']:g} | {a['time_s']:.1f} | {a['select_s']:.2f} | "
                         f"{a['speedup_vs_full']:.2f}x | {100 * a['forget_acc']:.1f} ± {100 * a['forget_acc_std']:.1f} | "
                         f"{a['mia_auc']:.3f} | {a['avg_gap']:.2f} ± {a['avg_gap_std']:.2f} | {a['gap_vs_full']:+.2f} |")
        lines.append("")
    lines += ["## Selectors against random", ""] + findings(agg) + [""]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--selectors", default="all")
    p.add_argument("--ratios", default=",".join(f"{r:g}" for r in RATIOS))
    p.add_argument("--cache", default=str(HERE / "cache"))
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--name", default="coreset")
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    t0 = time.perf_counter()
    from erasus.utils.io import atomic_write_text

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def write(rows, final=False):
        agg = aggregate(rows)
        meta = {"command": "python benchmarks/coreset.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
                "torch": torch.__version__, "seeds": args.seeds, "total_min": (time.perf_counter() - t0) / 60,
                "complete": final}
        atomic_write_text(out / f"{args.name}.json",
                          json.dumps({"meta": meta, "rows": rows, "aggregate": agg}, indent=1))
        md = markdown(agg, meta)
        atomic_write_text(out / f"{args.name}.md", md)
        return md

    rows = run(args, on_progress=write)
    print(write(rows, final=True))


if __name__ == "__main__":
    main()
