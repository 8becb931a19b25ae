"""Every strategy on a GPU: does it run there, and does it still do what it does on the CPU?

For each classifier strategy, ``ErasusUnlearner(model, strategy=s, device=...)`` forgets one
class of scikit-learn digits (MLP), with held-out data and called bare; for each diffusion
method, ``DiffusionUnlearner`` erases "red" from a small text-to-image model trained on the
device (coloured squares, ``tests/test_diffusion.py``'s set-up). Records per run: whether it
ran, the error if not, the time, forget / retain accuracy (classifiers) or the judged share
of each colour (diffusion). One command, unattended:

    python benchmarks/gpu_smoke.py --device cuda       # writes results/gpu_smoke.{md,json}

(``--device cpu`` runs the same on the CPU, for comparison.)
"""
from __future__ import annotations

import argparse
import time
import traceback
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
COLOURS = ["red", "green", "blue"]


def _acc(model, loader, device):
    from erasus.core.stats import split_stats
    from erasus.models import wrap

    return float(split_stats(wrap(model.to(device)), loader)["correct"].mean())


def classifier_rows(device: str, cache: Path, results, only=None):
    from erasus import ErasusUnlearner
    from erasus.core import list_registered
    from erasus.evaluation.protocols import digits_task

    task = digits_task(cache_dir=cache)
    split = task.split("class", forget_class=3)
    for name in list_registered("strategy", family="classifier"):
        if name == "amnesiac" or only and name not in only:  # amnesiac needs records made during training
            continue
        for call in ("holdout", "bare"):
            if results.done(("classifier", name, call)):
                continue
            args = (split.forget, split.retain) + ((split.holdout,) if call == "holdout" else ())
            row = {"family": "classifier", "strategy": name, "call": call}
            t0 = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = ErasusUnlearner(task.original(0), strategy=name, device=device).fit(*args, progress=False)
                row.update(ok=True, forget_acc=_acc(res.model, split.forget, device),
                           retain_acc=_acc(res.model, split.retain, device), stop=res.stop.kind.value,
                           on_device=str(next(res.model.parameters()).device))
            except Exception as e:  # recorded, not raised: the point is to see every failure
                row.update(ok=False, error=f"{type(e).__name__}: {e}"[:300], where=traceback.format_exc(limit=-2)[-600:])
            row["time_s"] = time.perf_counter() - t0
            results.add(row)
            print(row, flush=True)


def diffusion_rows(device: str, results):
    from torch.utils.data import DataLoader

    from erasus.models.diffusion import toy_text_to_image, train_text_to_image
    from erasus.unlearners import DiffusionUnlearner

    g = torch.Generator().manual_seed(0)
    data = []
    for c, name in enumerate(COLOURS):
        for _ in range(64):
            x = -torch.ones(3, 8, 8)
            x[c] = 1.0
            data.append((x + 0.1 * torch.randn(3, 8, 8, generator=g), f"a {name} square"))
    model = toy_text_to_image([p for _, p in data]).to(device)
    t0 = time.perf_counter()
    train_text_to_image(model, DataLoader(data, batch_size=32, shuffle=True, generator=g), steps=600)
    train_s = time.perf_counter() - t0

    def judged(m):
        out = {}
        for c, name in enumerate(COLOURS):
            imgs = m.generate([f"a {name} square"] * 32, seed=1, guidance_scale=5.0, steps=20)
            out[name] = float((imgs.mean((2, 3)).argmax(1) == c).float().mean())
        return out

    results.add({"family": "diffusion", "strategy": "original", "call": "-", "ok": True, "time_s": train_s,
                 "judged": judged(model)})
    # the settings tests/test_diffusion.py uses on this model
    methods = {"esd": ("a red square", dict(lr=1e-3, iterations=80, ddim_steps=20, negative_guidance=3.0), None),
               "uce": ("a red square", {}, None),
               "concept_ablation": ("a red square", dict(lr=1e-3, iterations=80, ddim_steps=20, anchor_images=32),
                                    "a green square"),
               "sld": ("red", dict(warmup_steps=2), None),
               "salun_generation": ("a red square", dict(lr=1e-3, iterations=80, images_per_prompt=16,
                                                         retain_weight=1.0), None),
               "adv_unlearn": ("a red square", dict(lr=3e-4, iterations=60, ddim_steps=20, warmup=10, attack_steps=5,
                                                    negative_guidance=3.0), None)}
    preserve = ["a green square", "a blue square"]
    for name, (concept, kw, anchor) in methods.items():
        if results.done(("diffusion", name, "-")):
            continue
        row = {"family": "diffusion", "strategy": name, "call": "-"}
        t0 = time.perf_counter()
        try:
            unl = DiffusionUnlearner(model, strategy=name, strategy_kwargs=kw)
            unl.erase(concept, anchor=anchor, progress=False,
                      preserve=preserve if name in ("uce", "salun_generation", "adv_unlearn") else ())
            row.update(ok=True, judged=judged(unl.model))
        except Exception as e:
            row.update(ok=False, error=f"{type(e).__name__}: {e}"[:300], where=traceback.format_exc(limit=-2)[-600:])
        row["time_s"] = time.perf_counter() - t0
        results.add(row)
        print(row, flush=True)


def markdown(meta, rows) -> str:
    lines = ["# Every strategy on a GPU", "",
             f"Command: {' then '.join(f'`{c}`' for c in meta['runs'])}; {meta['device_name']}, torch "
             f"{meta['torch']}; {meta['total_min']:.1f} min.", "",
             f"Ran: {sum(r['ok'] for r in rows)} of {len(rows)} runs.", "",
             "## Classifiers (digits, forget class 3)", "",
             "| strategy | call | ran | forget acc | retain acc | stop | time (s) | error |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["family"] == "classifier":
            lines.append(f"| `{r['strategy']}` | {r['call']} | {'yes' if r['ok'] else 'NO'} | "
                         f"{100 * r.get('forget_acc', float('nan')):.1f} | {100 * r.get('retain_acc', float('nan')):.1f} | "
                         f"{r.get('stop', '')} | {r['time_s']:.1f} | {r.get('error', '')} |")
    lines += ["", "## Diffusion (a small model trained on the device; share of images judged red / green / blue)", "",
              "| method | ran | red | green | blue | time (s) | error |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["family"] == "diffusion":
            j = r.get("judged", {})
            lines.append(f"| `{r['strategy']}` | {'yes' if r['ok'] else 'NO'} | "
                         + " | ".join(f"{100 * j[c]:.0f}%" if c in j else "-" for c in COLOURS)
                         + f" | {r['time_s']:.1f} | {r.get('error', '')} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    from erasus.experiments import hardware, run_meta

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (the GPU where one is visible), cpu, cuda or cuda:N")
    p.add_argument("--cache", default=str(HERE / "cache"))
    p.add_argument("--skip", default="", help="comma-separated families to skip (classifier, diffusion)")
    p.add_argument("--strategies", default="", help="comma-separated classifier strategies (default: all)")
    from erasus.experiments.benchargs import (add_results_arguments, benchmark_device, parse_benchmark_args, render_only,
                                              results_file)
    from erasus.experiments.tracking import track_results

    add_results_arguments(p, HERE / "results", "gpu_smoke", cells="(family, strategy, call)", merge=False,
                          max_minutes=False)
    args = parse_benchmark_args(p, argv)
    if render_only(args, lambda rows, meta: markdown(meta, rows)):
        return
    args.device = str(benchmark_device(p, args.device))
    meta = run_meta("gpu_smoke.py", argv, device_name=hardware(args.device))
    results = results_file(args, lambda r: (r["family"], r["strategy"], r["call"]), lambda rows, meta: markdown(meta, rows),
                           meta)
    if "classifier" not in args.skip:
        classifier_rows(args.device, Path(args.cache), results, [s for s in args.strategies.split(",") if s])
    if "diffusion" not in args.skip:
        diffusion_rows(args.device, results)
    md_path = results.finish()
    track_results(args, args.name, results.meta, results.all_rows(), [md_path, md_path.with_suffix(".json")])
    print(md_path.read_text())

if __name__ == "__main__":
    main()
