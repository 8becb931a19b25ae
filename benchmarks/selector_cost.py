"""Selector cost: seconds per 1,000 forget samples, next to one forward+backward pass over them.

On the Fashion-MNIST protocol's original CNN (0.42M parameters) and its random-10% forget
set (2,000 samples), each registered selector picks 10% of the forget set; its wall-clock
time (the faster of two runs) is compared, in the same run, with one forward+backward pass over the same samples
in batches of 64 (the cost of one epoch of gradient-based unlearning on them).

    python benchmarks/selector_cost.py                 # Fashion-MNIST -> results/selectors.md
    python benchmarks/selector_cost.py --family lm     # TOFU language model -> results/selectors-lm.md

``--family lm``: the architecture of ``benchmarks/tofu.py`` (GPT-2, 4 layers, width 128,
word vocabulary of TOFU forget10's texts), TOFU forget10's 400 forget pairs, every selector
that declares language-model support (or any family); the reference pass is in batches of 32
(the TOFU benchmark's batch). Costs depend on the architecture, not on what the weights
learned, so the model is not trained here.
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
    p.add_argument("--family", choices=("classifier", "lm"), default="classifier")
    from erasus.experiments.benchargs import parse_benchmark_args

    args = parse_benchmark_args(p, argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    if args.family == "lm":
        return lm_costs(args)
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


def lm_costs(args):
    from erasus.core.registry import build, get, list_registered
    from erasus.data.datasets.tofu import tofu_request
    from erasus.experiments import run_meta
    from erasus.models.causal_lm import QACollator, gpt2_lm, qa_loader, tofu_texts, word_tokenizer
    from erasus.utils.io import write_results

    req = tofu_request("forget10")
    tok = word_tokenizer(tofu_texts(req))
    model = gpt2_lm(tok, n_layer=4, n_embd=128, n_head=4, seed=args.seed).eval()
    forget = qa_loader(req.forget.records, QACollator(tok, max_length=128), 32, shuffle=False)
    n, k = len(req.forget), len(req.forget) // 10
    base = min(fwd_bwd_seconds(model, forget) for _ in range(2))
    rows = []
    for name in list_registered("selector"):
        cls = get("selector", name)
        fam = getattr(cls, "supports", ("*",))
        if name == "full" or getattr(cls, "needs_training_records", False) or not ("*" in fam or "causal_lm" in fam):
            continue
        dt, err = float("inf"), ""
        for _ in range(2):
            try:
                t = time.perf_counter()
                cs = build("selector", name).select(model, forget, k=k)
                dt = min(dt, time.perf_counter() - t)
                assert len(cs) == k
            except Exception as e:  # recorded: a selector that cannot run on a language model says why
                err = f"{type(e).__name__}: {str(e)[:160]}"
                break
        rows.append({"selector": name, "seconds": dt if not err else None, "ratio": dt / base if not err else None,
                     "error": err})
        print(f"{name:24s} " + (f"{dt:8.2f}s {dt / base:7.2f}x fwd+bwd" if not err else err), flush=True)
    meta = run_meta("selector_cost.py", ["--family", "lm"],
                    params=sum(p.numel() for p in model.parameters()), n=n, k=k, fwd_bwd_seconds=base)
    lines = ["# Selector cost on a TOFU language model", "",
             f"`{meta['command']}` on {meta['date']} ({meta['machine']}; torch {meta['torch']}). Model: GPT-2, 4 "
             f"layers, width 128 ({meta['params'] / 1e6:.2f}M parameters, word vocabulary of {len(tok)}); the {n} "
             f"forget pairs of TOFU forget10; each selector picks k = {k}. Reference: one forward+backward pass over "
             f"them in batches of 32 took {base:.2f} s. Goal for gradient-based scoring: at most 2x that.", "",
             "| selector | seconds | × one fwd+bwd pass | note |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['selector']} | {r['seconds']:.2f} | {r['ratio']:.2f} | |" if not r["error"] else
                     f"| {r['selector']} | - | - | {r['error']} |")
    from erasus.experiments.tracking import track_results

    written = write_results(args.out, "selectors-lm", meta, rows, "\n".join(lines) + "\n")
    track_results(args, "selectors-lm", meta, rows, [written, written.with_suffix('.json')])
    print("\n".join(lines))


if __name__ == "__main__":
    main()
