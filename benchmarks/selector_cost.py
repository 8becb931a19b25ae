"""Selector cost: seconds per 1,000 forget samples, next to one forward+backward pass over them.

On the Fashion-MNIST protocol's original CNN (0.42M parameters) and its random-10% forget
set (2,000 samples), each registered selector picks 10% of the forget set; its wall-clock
time (the faster of two runs) is compared, in the same run, with one forward+backward pass over the same samples
in batches of 64 (the cost of one epoch of gradient-based unlearning on them).

    python benchmarks/selector_cost.py
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent

VARIANTS = {  # extra rows: the same selector with another setting
    "influence (last layer)": ("influence", {"last_layer": True}),
    "gradient_norm (last layer)": ("gradient_norm", {"last_layer": True}),
}


def fwd_bwd_seconds(model, loader) -> float:
    from erasus.models import wrap

    adapter = wrap(model)
    t = time.perf_counter()
    for batch in loader:
        model.zero_grad(set_to_none=True)
        adapter.loss(batch).backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def main(argv=None):
    from erasus.core.registry import build, get, list_registered
    from erasus.evaluation.protocols import fashion_mnist_task

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", default=str(HERE / "cache"))
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    task = fashion_mnist_task(cache_dir=Path(args.cache), progress=True)
    split = task.split("random", fraction=0.1, seed=args.seed)
    model = task.original(args.seed)
    n = len(split.forget.dataset)
    k = n // 10
    base = fwd_bwd_seconds(model, split.forget)
    base = min(base, fwd_bwd_seconds(model, split.forget))  # warm
    rows = []
    skipped = [name for name in list_registered("selector")
               if getattr(get("selector", name), "needs_training_records", False)]
    runs = [(name, name, {}) for name in list_registered("selector") if name != "full" and name not in skipped]
    runs += [(label, name, kw) for label, (name, kw) in VARIANTS.items()]
    for label, name, kw in runs:
        dt = float("inf")
        for _ in range(2):  # the faster of two runs: the first pays one-off warm-up costs
            sel = build("selector", name, **kw)
            t = time.perf_counter()
            cs = sel.select(model, split.forget, k=k)
            dt = min(dt, time.perf_counter() - t)
        assert len(cs) == k
        rows.append({"selector": label, "seconds": dt, "per_1000": 1000 * dt / n, "ratio": dt / base})
        print(f"{label:28s} {dt:8.2f}s  {1000 * dt / n:7.3f} s/1k  {dt / base:7.2f}x fwd+bwd", flush=True)
    lines = ["# Selector cost on the Fashion-MNIST protocol", "",
             f"`python benchmarks/selector_cost.py` on {time.strftime('%Y-%m-%d')} ({platform.machine()}, "
             f"{os.cpu_count()} CPU cores; torch {torch.__version__}). Model: the protocol's CNN (0.42M parameters); "
             f"{n} forget samples (random 10%, seed {args.seed}); each selector picks k = {k}.",
             f"Reference: one forward+backward pass over the {n} samples in batches of 64 took {base:.2f} s "
             f"({1000 * base / n:.3f} s per 1,000). Goal for gradient-based scoring: at most 2x that.", "",
             "| selector | seconds | s per 1,000 samples | × one fwd+bwd pass |", "|---|---|---|---|"]
    lines += [f"| {r['selector']} | {r['seconds']:.2f} | {r['per_1000']:.3f} | {r['ratio']:.2f} |" for r in rows]
    lines += ["", f"Not timed here: {', '.join(f'`{n}`' for n in skipped)}: they read statistics recorded during "
              "training (`TrainingDynamicsRecorder`), so their selection cost is a table lookup; the recording "
              "adds one argmax and one per-sample loss per training step."]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "selectors.json").write_text(json.dumps({"fwd_bwd_seconds": base, "n": n, "k": k, "rows": rows}, indent=2))
    (out / "selectors.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
