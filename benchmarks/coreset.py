"""Coreset study: when does unlearning a selected part of the forget set pay off?

Protocol: the Fashion-MNIST protocol of ``classification.py`` (random 10% forgetting, 2,000
forget samples). For each strategy × selector × ``prune_ratio``, the selector picks
``prune_ratio`` of the forget set (once per seed, selector and ratio, on the original
model; the selection time is added to each strategy's time), the strategy unlearns that
coreset at its defaults (calibrated stopping on held-out data, watching the whole forget
request, not only the coreset), and the result is **always verified on the full
forget set**: forget accuracy on all 2,000 samples, loss-MIA AUC of all of them vs
held-out data, average gap to the retrained model. Time is end to end: selection plus
unlearning. ``prune_ratio = 1`` is the whole forget set (no selector), the reference for
the speed-up column. Selectors that read records made while the original was trained
(``forgetting_events``, ``loss_accumulation``) get them from the original's training run
(``task.original(seed, dynamics=True)``: an original cached without a record is retrained
once with the recorder, same recipe and seed); ``tracin`` runs on the final model only
(one checkpoint).

    python benchmarks/coreset.py                                  # the full study
    python benchmarks/coreset.py --seeds 0 --strategies simnpo --ratios 0.1,0.25
    # on 2 cores: two single-threaded shares writing one table (each row is added as it comes)
    python benchmarks/coreset.py --shard 0/2 --threads 1 --resume &
    python benchmarks/coreset.py --shard 1/2 --threads 1 --resume

Rows are written as they come (``erasus.experiments.ResultsFile``): a run cut off keeps what it
finished and ``--resume`` goes on; ``--merge`` replaces only the cells a run produces;
``--combine`` makes one table of results files written separately (how the committed tables
were made, before the shares wrote one file).

The committed ``coreset.md`` was measured on originals trained without a recorder; the two
record-based selectors were then measured on originals retrained with one (same recipe and
seed, different floating-point rounding), next to ``random`` and the whole forget set on
those same models, and merged on their own into ``coreset_recorded.md``:

    python benchmarks/coreset.py --selectors forgetting_events,loss_accumulation --ratios 0.05,0.1,0.25,0.5 \
        --threads 1 --out benchmarks/cache/coreset --name s2
    python benchmarks/coreset.py --selectors random --threads 1 --out benchmarks/cache/coreset --name s3
    python benchmarks/coreset.py --combine benchmarks/cache/coreset/s2.json benchmarks/cache/coreset/s3.json \
        --name coreset_recorded --note "..."
"""
from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
RATIOS = (0.05, 0.1, 0.25, 0.5, 1.0)
STRATEGIES = ("simnpo", "wga", "negative_gradient")


def units(seeds, ratios, shard=None):
    """(seed, ratio) work units; ``shard=(i, n)`` keeps the i-th of n shares, assigned
    longest-first to the least loaded share (cost ~ the ratio, since every selector runs
    on each unit; the ratio-1 unit has one run per strategy), so n processes get about
    equal work."""
    us = [(s, r) for r in sorted(ratios, reverse=True) for s in seeds]
    if shard is None:
        return us
    i, n = shard
    cost = lambda u: 0.05 if u[1] >= 1.0 else 0.3 + u[1]  # noqa: E731
    load, share = [0.0] * n, {}
    for u in sorted(us, key=cost, reverse=True):
        j = min(range(n), key=load.__getitem__)
        load[j] += cost(u)
        share[u] = j
    return sorted((u for u in us if share[u] == i), key=lambda u: (u[0], -u[1]))  # seed by seed


def key(row):
    """A row's cell: (seed, ratio, selector, strategy)."""
    return row["seed"], row["ratio"], row["selector"], row["strategy"]


def run(args, results):
    from erasus.core.registry import build, get, list_registered, resolve
    from erasus.evaluation.protocols import fashion_mnist_task
    from erasus.metrics import MetricSuite
    from erasus.models import wrap
    from erasus.unlearners import ErasusUnlearner

    task = fashion_mnist_task(cache_dir=Path(args.cache), progress=True)
    selectors = [n for n in list_registered("selector") if n != "full"] \
        if args.selectors == "all" else [resolve("selector", s) for s in args.selectors.split(",")]
    recorded = {n for n in selectors if getattr(get("selector", n), "needs_training_records", False)}
    shard = tuple(int(x) for x in args.shard.split("/")) if args.shard else None
    strategies = args.strategies.split(",")
    for seed, ratio in units([int(s) for s in args.seeds.split(",")], [float(r) for r in args.ratios.split(",")], shard):
        if results.out_of_time():
            continue
        split = task.split("random", fraction=0.1, seed=seed)
        original, gold = task.original(seed, dynamics=bool(recorded)), task.gold(split, seed)
        for sel in (["full"] if ratio >= 1.0 else selectors):
            todo = [st for st in strategies if not results.done((seed, ratio, sel, st))]
            if not todo or results.out_of_time():
                continue
            # one selection per (seed, selector, ratio), on the original model, shared by the strategies;
            # its time is added to each strategy's end-to-end time
            coreset, select_s = None, 0.0
            if sel != "full":
                t0 = time.perf_counter()
                kw = {"record": str(task.dynamics_path(seed))} if sel in recorded else {}
                coreset = build("selector", sel, **kw).select(wrap(original), split.forget, prune_ratio=ratio)
                select_s = time.perf_counter() - t0
            for strategy in todo:
                unl = ErasusUnlearner(original, strategy=strategy)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = unl.fit(split.forget, split.retain, split.holdout, progress=False, seed=seed, coreset=coreset)
                    m = MetricSuite(("accuracy", "mia", "mia_efficacy", "gold_gap"), max_samples=args.max_samples).run(
                        res.model, split.forget, split.retain, split.test, split.holdout, gold_model=gold)
                t = select_s + res.timings["total_s"]
                row = {"strategy": strategy, "selector": sel, "ratio": ratio, "seed": seed, "time_s": t,
                       "select_s": select_s, "steps": res.steps, "forget_acc": m["forget_accuracy"],
                       "retain_acc": m["retain_accuracy"], "test_acc": m["test_accuracy"], "mia_auc": m["mia_auc"],
                       "mia_efficacy": m["mia_efficacy"], "avg_gap": m["avg_gap"], "note": res.stop_reason}
                results.add(row)
                print(f"seed {seed} {strategy:18s} {sel:18s} ratio {ratio:<5g} time {t:6.1f}s "
                      f"(select {select_s:5.1f}s) forget {100 * row['forget_acc']:5.1f} "
                      f"gap {row['avg_gap']:5.2f}", flush=True)


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


def markdown(rows, meta):
    """The tables of ``rows`` (mean ± std over seeds). Files written before the study moved to
    ResultsFile say ``complete``; newer ones ``partial``, which ResultsFile's note reports."""
    agg = aggregate(rows)
    commands = " + ".join(f"`{c}`" for c in meta.get("runs") or [meta["command"]])
    lines = ["# Coreset study (Fashion-MNIST protocol, random 10% forgetting)", "",
             f"{commands} on {meta['date']} ({meta['machine']}; torch {meta['torch']}); "
             f"seeds {meta['seeds']}; {meta['total_min']:.1f} min"
             + ("." if meta.get("complete", True) else " so far (incomplete run: the seeds column says how many seeds each row has).")
             , "",
             "Every row is verified on the **full** forget set (2,000 samples). time: selection + unlearning (s); "
             "speed-up: time of unlearning the whole forget set with the same strategy / this time, same run; "
             "gap: average gap to the retrained model (points; forget/retain/test accuracy and MIA-efficacy); "
             "Δgap: gap minus the whole-forget-set gap (negative = better). Mean ± std over seeds.", ""]
    if meta.get("note"):
        lines += [meta["note"], ""]
    for strategy in dict.fromkeys(a["strategy"] for a in agg):
        lines += [f"## {strategy}", "", "| selector | ratio | seeds | time (s) | select (s) | speed-up | forget acc (all) | "
                  "MIA AUC (all) | gap | Δgap |", "|---|---|---|---|---|---|---|---|---|---|"]
        for a in sorted([x for x in agg if x["strategy"] == strategy], key=lambda x: (-x["ratio"], x["avg_gap"])):
            lines.append(f"| {a['selector']} | {a['ratio']:g} | {a['n']} | {a['time_s']:.1f} | {a['select_s']:.2f} | "
                         f"{a['speedup_vs_full']:.2f}x | {100 * a['forget_acc']:.1f} ± {100 * a['forget_acc_std']:.1f} | "
                         f"{a['mia_auc']:.3f} | {a['avg_gap']:.2f} ± {a['avg_gap_std']:.2f} | {a['gap_vs_full']:+.2f} |")
        lines.append("")
    lines += ["## Selectors against random", ""] + findings(agg) + [""]
    return "\n".join(lines)


def combine(paths, args):
    """One results file from the rows of results files written separately (shares run with
    different ``--out``/``--name``, or older runs): rows of the same cell from a later file win."""
    from erasus.core.exceptions import DataError
    from erasus.experiments.runner import rendered
    from erasus.utils.io import write_results

    missing = [f for f in paths if not Path(f).is_file()]
    if missing:
        raise DataError(f"--combine: no results file at {', '.join(missing)} (expected JSON files written by "
                        "this script).")
    parts = [json.loads(Path(f).read_text()) for f in paths]
    rows = list({key(r): r for part in parts for r in part["rows"]}.values())
    metas = [part["meta"] for part in parts]
    meta = {**metas[0], "complete": all(m.get("complete", not m.get("partial", False)) for m in metas),
            "partial": False, "total_min": max(m.get("total_min", 0.0) for m in metas),
            "runs": [c for m in metas for c in (m.get("runs") or [m["command"]])], "seeds": args.seeds,
            "note": args.note}
    meta["command"] = " + ".join(meta["runs"])
    return write_results(Path(args.out), args.name, meta, rows, rendered(markdown, rows, meta))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--selectors", default="all")
    p.add_argument("--ratios", default=",".join(f"{r:g}" for r in RATIOS))
    p.add_argument("--cache", default=str(HERE / "cache"))
    p.add_argument("--max-samples", type=int, default=5000, help="retain/test samples evaluated per row "
                   "(the forget set is always evaluated whole)")
    p.add_argument("--shard", default="", help="i/n: run the i-th of n shares of the (seed, ratio) units "
                   "(one process per core, --threads 1, each with --resume so that they write one file)")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--note", default="", help="a paragraph written under the title of the table")
    p.add_argument("--combine", nargs="+", default=None, metavar="JSON",
                   help="write <out>/<name>.json and .md from the rows of these results files and exit")
    from erasus.experiments import run_meta
    from erasus.experiments.benchargs import add_results_arguments, parse_benchmark_args, render_only, results_file
    from erasus.experiments.tracking import track_results

    add_results_arguments(p, HERE / "results", "coreset", cells="(seed, ratio, selector, strategy)")
    args = parse_benchmark_args(p, argv)
    if render_only(args, markdown):
        return
    if args.combine is not None:
        print(combine(args.combine, args).read_text())
        return
    torch.set_num_threads(args.threads)
    meta = run_meta("coreset.py", argv, seeds=args.seeds, **({"note": args.note} if args.note else {}))
    results = results_file(args, key, markdown, meta)
    run(args, results)
    written = results.finish()
    print(written.read_text())
    track_results(args, args.name, {"seeds": args.seeds}, results.all_rows(), [written, written.with_suffix(".json")])


if __name__ == "__main__":
    main()
