"""Bare calls against calls with held-out data: every classifier strategy at its defaults,
``fit(forget, retain)`` (no held-out data, as the spec's examples call it) and
``fit(forget, retain, holdout)``, on two small protocols built differently from the CNN of
``classification.md``: the bundled Fashion-MNIST subset with an MLP (random 10%) and
scikit-learn digits with an MLP (one class). Writes ``benchmarks/results/bare_calls.md``
and ``bare_calls.json``.

    python benchmarks/bare_calls.py                  # seeds 0 1 2, a few minutes on 2 CPU cores
    python benchmarks/bare_calls.py --seeds 0 --out /tmp/bare

What it shows: whether a method that works with held-out data also works without it, and
whether a bare call ever leaves the model farther from the retrained one than the original
(``tests/test_first_hour.py`` asserts both on seed 0).
"""
from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

PROTOCOLS = {  # name: (task factory, kind, forget class)
    "fmnist_small-random10": ("fashion_mnist_small_task", "random", 1),
    "digits-class3": ("digits_task", "class", 3),
}


def main(argv=None) -> None:
    import torch

    from erasus.core.registry import get, list_registered
    from erasus.evaluation import protocols
    from erasus.experiments import run_scenario
    from erasus.utils.io import atomic_write_text

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--cache", type=Path, default=HERE / "cache")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--threads", type=int, default=None)
    from erasus.experiments.benchargs import parse_benchmark_args
    from erasus.experiments.tracking import track_results

    a = parse_benchmark_args(p, argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    names = [n for n in list_registered("strategy", family="classifier")
             if not getattr(get("strategy", n), "needs_training_records", False)]
    t0 = time.perf_counter()
    rows = []
    for proto, (factory, kind, cls) in PROTOCOLS.items():
        task = getattr(protocols, factory)(cache_dir=a.cache)
        for seed in a.seeds:
            split = task.split(kind, forget_class=cls, fraction=0.1, seed=seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for r in run_scenario(task, split, names, seed=seed, progress=False, calls=("holdout", "bare"),
                                      max_samples=2000):
                    rows.append({"protocol": proto, **r.to_dict()})
            print(f"{proto} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    total = time.perf_counter() - t0
    meta = {"seeds": a.seeds, "seconds": round(total, 1), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cores": os.cpu_count()}
    a.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out / "bare_calls.json", json.dumps({"meta": meta, "rows": rows}, indent=2))

    lines = ["# Bare calls vs calls with held-out data", "",
             f"Command: `python benchmarks/bare_calls.py --seeds {' '.join(map(str, a.seeds))}`; "
             f"{meta['cores']} cores, torch {meta['torch']}, {total:.0f} s.", "",
             "Every classifier strategy at its defaults; avg gap: mean |difference| to the retrained model in points "
             "over forget / retain / test accuracy and MIA-efficacy, mean ± std over seeds; forget acc in %. "
             "`bare`: `fit(forget, retain)`; `holdout`: `fit(forget, retain, holdout)`. "
             "`bare ≤ original`: seeds on which the bare call ended no farther from the retrained model than the "
             "untouched original.", ""]
    for proto in PROTOCOLS:
        pr = [r for r in rows if r["protocol"] == proto]
        orig = {r["seed"]: r["avg_gap"] for r in pr if r["method"] == "original"}
        og = np.array(list(orig.values()))
        lines += [f"## {proto}", "", f"Untouched original: avg gap {og.mean():.2f} ± {og.std():.2f}.", "",
                  "| strategy | avg gap, holdout | avg gap, bare | forget acc, holdout | forget acc, bare | "
                  "bare ≤ original |", "|---|---|---|---|---|---|"]
        for n in names:
            h = [r for r in pr if r["method"] == n and r["call"] == "holdout"]
            b = [r for r in pr if r["method"] == n and r["call"] == "bare"]
            gh, gb = np.array([r["avg_gap"] for r in h]), np.array([r["avg_gap"] for r in b])
            fh, fb = np.array([r["forget_acc"] for r in h]), np.array([r["forget_acc"] for r in b])
            ok = sum(r["avg_gap"] <= orig[r["seed"]] + 1e-6 for r in b)
            lines.append(f"| `{n}` | {gh.mean():.2f} ± {gh.std():.2f} | {gb.mean():.2f} ± {gb.std():.2f} | "
                         f"{100 * fh.mean():.1f} | {100 * fb.mean():.1f} | {ok}/{len(b)} |")
        lines.append("")
    atomic_write_text(a.out / "bare_calls.md", "\n".join(lines) + "\n")
    track_results(a, "bare_calls", meta, rows, [a.out / "bare_calls.md", a.out / "bare_calls.json"])
    print(f"wrote {a.out / 'bare_calls.md'} ({total:.0f} s)")


if __name__ == "__main__":
    main()
