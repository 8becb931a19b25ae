"""Fashion-MNIST unlearning protocol: every registered strategy at its defaults vs retraining.

Protocol: 20,000 Fashion-MNIST training images (class-stratified), a small CNN trained
for 30 epochs until it memorises (train accuracy ~99.5%, test ~90%); two requests:
forget a random 10% of the training set, and forget every image of one class (1, Trouser);
the gold model is the same recipe retrained on the retain set; every registered
strategy runs at its default hyperparameters with calibrated stopping on held-out data
(half of the test set; the other half is used only for evaluation); 3 seeds (each seed
draws its own original model, forget set and gold model).

Columns: time (s) of unlearning, speed-up = retraining time / unlearning time (measured in
the same run), forget / retain / test accuracy (UA = 1 - forget acc in SalUn's notation),
loss-MIA AUC forget vs held-out, SalUn's MIA-efficacy, average gap to the retrained model
(points, over forget/retain/test accuracy and MIA-efficacy), the benchmark verdicts.
Flags: NO-OP when forget accuracy stays within 1 point of the original model's;
COLLAPSE when test accuracy drops more than 10 points below the original's.

    python benchmarks/classification.py                # full protocol, ~45 min on 2 CPU cores
    python benchmarks/classification.py --seeds 0 --scenarios class --strategies scrub
    python benchmarks/classification.py --calls bare --merge   # the bare-call section (no held-out data)
    python benchmarks/classification.py --resume               # go on after a run that was cut off
"""
from __future__ import annotations

import argparse
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def _section(row) -> str:
    """The table a row belongs to: its scenario, and ``"<scenario> bare"`` for calls without
    held-out data (with their own reference rows, from the models of the run that made them)."""
    return row["scenario"] + (" bare" if row.get("call", "holdout") == "bare" else "")


def aggregate(rows):
    groups = defaultdict(list)
    for r in rows:  # bare calls (no held-out data) form their own section
        groups[(_section(r), r["method"])].append(r)
    out = []
    for (scenario, method), rs in groups.items():
        agg = {"scenario": scenario, "method": method, "n": len(rs)}
        for k in ("time_s", "speedup", "forget_acc", "retain_acc", "test_acc", "mia_auc", "mia_efficacy", "avg_gap"):
            v = np.array([r[k] for r in rs], dtype=float)
            if not np.isfinite(v).any():  # the speed-up of the original (inf) and retrained rows
                agg[k] = agg[k + "_std"] = float("nan")
                continue
            agg[k], agg[k + "_std"] = float(v.mean()), float(v.std(ddof=1) if len(v) > 1 else 0.0)
        verdicts = [r["verdict"] for r in rs]
        agg["verdicts"] = ", ".join(f"{v}x{verdicts.count(v)}" for v in ("PASS", "PARTIAL", "FAIL", "INCONCLUSIVE") if v in verdicts)
        out.append(agg)
    # flags are per seed: a run that kept the original (or left forget accuracy within 1 point
    # of it) is a no-op even when the other seeds moved; a test-accuracy drop over 10 points
    # is a collapse
    originals = {(_section(r), r["seed"]): r for r in rows if r["method"] == "original"}
    for a in out:
        flags = []
        rs = groups[(a["scenario"], a["method"])]
        if a["method"] not in ("original", "retrain") and all((r["scenario"], r["seed"]) in originals for r in rs):
            o = [originals[(r["scenario"], r["seed"])] for r in rs]
            noop = sum("original model was kept" in (r.get("note") or "")
                       or abs(r["forget_acc"] - oo["forget_acc"]) < 0.01 for r, oo in zip(rs, o))
            collapse = sum(oo["test_acc"] - r["test_acc"] > 0.10 for r, oo in zip(rs, o))
            for name, k in (("NO-OP", noop), ("COLLAPSE", collapse)):
                if k:
                    flags.append(name if k == len(rs) else f"{name} {k}/{len(rs)}")
        a["flags"] = " ".join(flags)
    return out


def markdown(agg, meta):
    pm = lambda a, k, scale=100, fmt=".1f": f"{scale * a[k]:{fmt}} ± {scale * a[k + '_std']:{fmt}}"
    lines = [
        "# Fashion-MNIST unlearning benchmark (classification protocol)",
        "",
        f"Produced by {' then '.join(f'`{c}`' for c in meta.get('runs', [meta['command']]))} on {meta['date']} "
        f"({meta['machine']}; torch {meta['torch']}). A later run of a subset replaces only its own rows "
        "(`--merge`); reference models come from the cache, so retraining times are those measured when "
        "the gold models were trained.",
        f"Seeds: {meta['seeds']}. Values are mean ± std over seeds. Total wall-clock {meta['total_min']:.1f} min.",
        *([meta["note"]] if meta.get("note") else []),
        "",
        "forget / retain / test acc in %; test acc for class forgetting is on the other classes; "
        "MIA AUC: loss attack forget vs held-out (0.5 = looks unseen); MIA-eff.: SalUn's SVC MIA-efficacy (%); "
        "avg gap: mean |difference| to the retrained model in points over forget/retain/test acc and MIA-efficacy; "
        "speed-up: retraining time / unlearning time in the same run.",
        "",
    ]
    for scenario in sorted({a["scenario"] for a in agg}, key=lambda s: (not s.startswith("random"), s)):
        lines += [f"## {scenario}", "",
                  "| method | time (s) | speed-up | forget acc | retain acc | test acc | MIA AUC | MIA-eff. | avg gap | verdicts | flags |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for a in [x for x in agg if x["scenario"] == scenario]:
            sp = "-" if a["method"] in ("original", "retrain") else f"{a['speedup']:.1f}x"
            lines.append(f"| {a['method']} | {a['time_s']:.1f} | {sp} | {pm(a, 'forget_acc')} | {pm(a, 'retain_acc')} | "
                         f"{pm(a, 'test_acc')} | {pm(a, 'mia_auc', 1, '.3f')} | {pm(a, 'mia_efficacy')} | "
                         f"{pm(a, 'avg_gap', 1, '.2f')} | {a['verdicts']} | {a['flags']} |")
        lines.append("")
    return "\n".join(lines)


SKIPPED_NOTE = (
    "\nNot in this table: {names}. It subtracts parameter updates recorded while the original model "
    "was trained (`AmnesiacRecorder`), which this protocol's models were trained without; and a random 10% "
    "or a whole class has samples in every training batch, so it would subtract the whole training run. "
    "Its behaviour is tested on digits with a small deletion (`tests/test_strategies.py`).\n")


def main(argv=None):
    from erasus.core.registry import get, list_registered, resolve
    from erasus.evaluation.protocols import fashion_mnist_task
    from erasus.experiments import format_table, run_meta, run_scenario

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--scenarios", default="random,class")
    p.add_argument("--strategies", default="all")
    p.add_argument("--forget-class", type=int, default=1)
    p.add_argument("--n-train", type=int, default=20_000)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--cache", default=str(HERE / "cache"), help="trained-model cache (reused across runs)")
    p.add_argument("--calls", default="holdout",
                   help="holdout (calibrated stopping on held-out data), bare (fit(forget, retain), no held-out "
                        "data), or both, comma-separated; a run without holdout keeps its own reference rows in "
                        "the bare section")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1),
                   help="torch threads (1 when two benchmarks share 2 cores)")
    from erasus.experiments.benchargs import add_results_arguments, parse_benchmark_args, render_only, results_file

    add_results_arguments(p, HERE / "results", "classification", cells="(seed, scenario)")
    from erasus.experiments.tracking import track_results

    args = parse_benchmark_args(p, argv)

    # strategies that need records made while the original was trained (amnesiac) cannot run on
    # this protocol's models; they are named in the results file and tested elsewhere
    skipped = [n for n in list_registered("strategy") if getattr(get("strategy", n), "needs_training_records", False)]

    def render(rows, meta):
        return markdown(aggregate(rows), meta) + SKIPPED_NOTE.format(names=", ".join(f"`{n}`" for n in skipped))

    if render_only(args, render):
        return

    torch.set_num_threads(args.threads)
    strategies = [n for n in list_registered("strategy", family="classifier") if n not in skipped] if args.strategies == "all" else [
        resolve("strategy", s) for s in args.strategies.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    task = fashion_mnist_task(n_train=args.n_train, cache_dir=Path(args.cache), epochs=args.epochs, progress=True)
    # written after every row (a long run that is stopped keeps what it finished); with --merge
    # over the file's other rows
    results = results_file(args, lambda r: (r["scenario"], r["method"], r["seed"], r.get("call", "holdout")),
                           render, run_meta(Path(__file__).name, argv or None, seeds=seeds))
    calls = tuple(args.calls.split(","))
    for seed in seeds:
        for kind in args.scenarios.split(","):
            split = task.split(kind, fraction=0.1, forget_class=args.forget_class, seed=seed)
            if all(results.done((split.kind, m, seed, c)) for m in strategies for c in calls) or results.out_of_time():
                continue
            print(f"\n== seed {seed}: {split.kind} ({len(split.dataset.forget_indices)} forget samples) ==", flush=True)
            rs = run_scenario(task, split, strategies, seed=seed, progress=True, calls=calls)
            print(format_table(rs), flush=True)
            for r in rs:
                d = r.to_dict()
                if d["method"] in ("original", "retrain") and "holdout" not in calls:
                    d["call"] = "bare"  # the references of a bare-only run belong to its section
                results.add(d)
    written = results.finish()
    print("\n" + written.read_text())
    track_results(args, args.name, results.meta, results.rows, [written, written.with_suffix(".json")])


if __name__ == "__main__":
    main()
