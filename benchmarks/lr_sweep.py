"""Learning-rate sweep with and without calibrated stopping (the knife-edge study).

For each strategy, the learning rate runs over a 30x range around its default
(default × {1/10, 1/3, 1, 3}), on the
Fashion-MNIST protocol's random-10% request, with ``stopping="calibrated"`` (the default,
held-out data given; it raises the rate of an idle run), with calibrated stopping without that
growth (``max_lr_growth=1``), and with ``stopping="none"`` (the fixed schedule, what tools
without a stopping rule run). Reports the average gap to the retrained model for each cell and, per
strategy and mode, the spread: worst gap minus best gap over the range.

    python benchmarks/lr_sweep.py                       # 4 strategies x 4 rates x 2 modes
    python benchmarks/lr_sweep.py --seeds 0 --strategies wga
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
FACTORS = (1 / 10, 1 / 3, 1.0, 3.0)
# stopping modes: the default calibrated rule (which raises an idle run's rate, up to 30x), the
# same without raising it, and the fixed schedule
MODES = {"calibrated": {"stopping": "calibrated"},
         "calibrated-no-growth": {"stopping": "calibrated", "max_lr_growth": 1.0},
         "none": {"stopping": "none"}}


def findings(names, summary, factors, goal: float = 1.5):
    """One line per strategy: the spread with and without calibrated stopping against the
    goal, and the honest caveats (original kept, rate raised, collapses avoided)."""
    out = []
    for name in names:
        cal, fix = summary[f"{name}/calibrated"], summary[f"{name}/none"]
        grow = summary.get(f"{name}/calibrated-no-growth")
        kept = [f"{f:.3g}x ({k}/{n} seeds)" for f, k, n in zip(factors, cal["kept_original"], cal.get("seeds", [1] * len(factors))) if k]
        line = (f"- {name}: spread {cal['spread']:.2f} points calibrated vs {fix['spread']:.2f} fixed "
                f"({'meets' if cal['spread'] <= goal else 'misses'} the {goal} goal); best calibrated gap "
                f"{min(cal['gaps']):.2f}, worst {max(cal['gaps']):.2f}; fixed schedule worst {max(fix['gaps']):.2f} "
                f"at {100 * min(fix['tests']):.1f}% lowest test accuracy.")
        if kept:
            line += (f" Original kept (no admissible improvement) at {', '.join(kept)}"
                     + (": the flat row is the rule refusing a damaging run, not forgetting." if all(
                         k == n for k, n in zip(cal["kept_original"], cal.get("seeds", [1] * len(factors)))) else "."))
        if grow is not None:
            line += (f" Without raising the rate of idle runs: spread {grow['spread']:.2f} "
                     f"({'meets' if grow['spread'] <= goal else 'misses'} the goal), gaps "
                     + " / ".join(f"{g:.2f}" for g in grow["gaps"]) + ".")
        out.append(line)
    return out


def main(argv=None):
    from erasus.core.registry import get, resolve
    from erasus.evaluation.protocols import fashion_mnist_task
    from erasus.experiments import run_meta
    from erasus.experiments.runner import _row
    from erasus.unlearners import ErasusUnlearner

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0")
    p.add_argument("--strategies", default="gradient_ascent,negative_gradient,saliency_unlearning,wga")
    p.add_argument("--factors", default=",".join(f"{f:g}" for f in FACTORS))
    p.add_argument("--scenario", default="random")
    p.add_argument("--cache", default=str(HERE / "cache"))
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--name", default="lr_sweep", help="writes <out>/<name>.md and .json")
    p.add_argument("--modes", default=",".join(MODES), help="stopping modes to run (default: all)")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--render", action="store_true", help="rewrite <out>/<name>.md from <name>.json (no runs)")
    from erasus.experiments.benchargs import parse_benchmark_args
    from erasus.experiments.tracking import track_results

    args = parse_benchmark_args(p, argv)
    if args.render:
        data = json.loads((Path(args.out) / f"{args.name}.json").read_text())
        write(Path(args.out), args.name, data["rows"], data["factors"], data["meta"])
        return
    torch.set_num_threads(args.threads)
    modes = {m: MODES[m] for m in args.modes.split(",")}
    task = fashion_mnist_task(cache_dir=Path(args.cache), progress=True)
    factors = [float(f) for f in args.factors.split(",")]
    rows = []
    t0 = time.perf_counter()
    for seed in [int(s) for s in args.seeds.split(",")]:
        split = task.split(args.scenario, fraction=0.1, forget_class=1, seed=seed)
        original, gold = task.original(seed), task.gold(split, seed)
        retrain_s = task.retrain_seconds(split, seed)
        ref = _row(split.kind, "original", seed, original, split, gold, 0.0, retrain_s, "", 5000)
        for name in [resolve("strategy", s) for s in args.strategies.split(",")]:
            lr0 = get("strategy", name)().config.lr
            for f in factors:
                for stopping in modes:
                    unl = ErasusUnlearner(original, strategy=name, strategy_kwargs={"lr": lr0 * f})
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        t = time.perf_counter()
                        res = unl.fit(split.forget, split.retain, split.holdout, progress=False, seed=seed,
                                      **modes[stopping])
                        dt = time.perf_counter() - t
                    r = _row(split.kind, name, seed, res.model, split, gold, dt, retrain_s, res.stop_reason, 5000)
                    rows.append({**r.to_dict(), "lr": lr0 * f, "factor": f, "stopping": stopping,
                                 "original_gap": ref.avg_gap})
                    print(f"seed {seed} {name:22s} lr {lr0 * f:.2g} ({f:.3g}x) {stopping:10s} gap {r.avg_gap:5.2f} "
                          f"forget {100 * r.forget_acc:5.1f} test {100 * r.test_acc:5.1f} {dt:5.1f}s", flush=True)
    meta = run_meta("lr_sweep.py", argv, scenario=args.scenario, seeds=args.seeds,
                    minutes=(time.perf_counter() - t0) / 60, modes=list(modes))
    write(Path(args.out), args.name, rows, factors, meta)
    track_results(args, args.name, meta, rows, [Path(args.out) / f"{args.name}.{x}" for x in ("md", "json")])


def report(rows, factors, meta):
    """The markdown table, the summary and the findings from the sweep's rows."""
    modes = meta["modes"]
    cell = defaultdict(list)
    for r in rows:
        cell[(r["method"], r["stopping"], r["factor"])].append(r)
    names = list(dict.fromkeys(r["method"] for r in rows))
    lines = ["# Learning-rate sweep: calibrated stopping vs a fixed schedule", "",
             f"`{meta['command']}` on {meta['date']} ({meta['machine']}; torch {meta['torch']}); Fashion-MNIST "
             f"protocol, {meta['scenario']} forgetting, seeds {meta['seeds']}; {meta['minutes']:.1f} min.", "",
             "Cells: average gap to the retrained model (points; forget/retain/test accuracy and MIA-efficacy), "
             "mean over seeds, with test accuracy in brackets. Spread: worst minus best gap over the learning-rate "
             f"range. The untouched original's gap: {np.mean([r['original_gap'] for r in rows]):.2f}.", "",
             "A dagger (†k/n) marks cells where, on k of the n seeds, calibrated stopping found no checkpoint better "
             "than the original within the retain tolerance and returned the original (its gap is then the "
             "original's, not forgetting); ↑ marks cells where the rule raised the learning rate of an idle run "
             "on at least one seed.", "",
             "| strategy | stopping | " + " | ".join(f"lr × {f:.3g}" for f in factors) + " | spread |",
             "|---|---|" + "---|" * (len(factors) + 1)]
    summary = {}
    for name in names:
        for stopping in modes:
            cells = [cell[(name, stopping, f)] for f in factors]
            gaps = [float(np.mean([r["avg_gap"] for r in c])) for c in cells]
            tests = [float(np.mean([r["test_acc"] for r in c])) for c in cells]
            kept = [sum("original model was kept" in r["note"] for r in c) for c in cells]
            grown = [any("raised the learning rate" in r["note"] for r in c) for c in cells]
            spread = max(gaps) - min(gaps)
            summary[f"{name}/{stopping}"] = {"gaps": gaps, "spread": spread, "kept_original": kept,
                                             "seeds": [len(c) for c in cells], "raised_lr": grown, "tests": tests}
            lines.append(f"| {name} | {stopping} | " + " | ".join(
                f"{g:.2f} ({100 * t:.1f}){f'†{k}/{len(c)}' if k else ''}{'↑' if u else ''}"
                for g, t, k, u, c in zip(gaps, tests, kept, grown, cells)) + f" | {spread:.2f} |")
    if {"calibrated", "none"} <= set(modes):
        lines += ["", "What this shows (generated from the table):"] + findings(names, summary, factors)
    return lines, summary


def write(out: Path, name: str, rows, factors, meta) -> None:
    from erasus.utils.io import atomic_write_text

    lines, summary = report(rows, factors, meta)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{name}.json", json.dumps({"rows": rows, "summary": summary, "factors": factors,
                                                         "meta": meta}, indent=2))
    atomic_write_text(out / f"{name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
