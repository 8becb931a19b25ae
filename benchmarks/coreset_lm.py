"""Coresets on a language model: TOFU unlearned from a coreset of the forget authors' questions.

The question the coreset study (``coreset.py``) answers for classifiers, asked of a causal LM:
does unlearning on a part of the request, picked by a selector, forget the *whole* request
as well as unlearning on all of it, and for less? The models are ``tofu.py``'s (a GPT-2 trained
from scratch on the forget and retain authors, and the gold model on the retain authors only;
trained once and cached). For each strategy and seed, the strategy runs on the whole forget
set (the reference row) and on the coreset each selector picks at each ratio; the stopping
rule watches the whole request, and every result is scored by TOFU's metrics on the whole
forget set against the gold model (forget quality, model utility, forget ROUGE, Min-K% AUC).
Time includes selection.

    python benchmarks/coreset_lm.py                     # the full grid: hours on a CPU
    python benchmarks/coreset_lm.py --forget-authors 2 --retain-authors 18 --strategies npo,simnpo \\
        --selectors random,gradient_norm,kcenter --ratios 0.25,0.5 --seeds 0,1       # ~40 min on 2 cores
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
KEYS = ("forget_quality", "model_utility", "forget_rouge", "retain_rouge", "min_k_auc")


def main(argv=None) -> None:
    sys.path.insert(0, str(HERE))
    import tofu as T

    from erasus.data.datasets.tofu import subset_request, tofu_request
    from erasus.evaluation.tofu import tofu_scores
    from erasus.experiments import hardware, run_meta
    from erasus.models.causal_lm import QACollator, qa_loader, tofu_texts, word_tokenizer
    from erasus.unlearners import LLMUnlearner

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--forget", default="forget10")
    p.add_argument("--forget-authors", type=int, default=4)
    p.add_argument("--retain-authors", type=int, default=36)
    p.add_argument("--strategies", default="npo,simnpo,negative_gradient")
    p.add_argument("--selectors", default="random,gradient_norm,el2n,influence,tracin,kcenter")
    p.add_argument("--ratios", default="0.1,0.25,0.5")
    p.add_argument("--seeds", default="0,1,2")
    T.model_args(p)
    p.add_argument("--n-generate", type=int, default=40, help="questions per split scored by ROUGE")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--cache", default=str(HERE / "cache"))
    from erasus.experiments.benchargs import add_results_arguments, parse_benchmark_args, render_only, results_file

    add_results_arguments(p, HERE / "results", "coreset_lm", cells="(strategy, selector, ratio, seed)")
    from erasus.experiments.tracking import track_results

    args = parse_benchmark_args(p, argv)
    if render_only(args, markdown):
        return
    args.arch, args.max_tokens, args.device = "gpt2", None, torch.device("cpu")
    torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)

    full_req = tofu_request(args.forget)
    req = subset_request(full_req, args.forget_authors, args.retain_authors)
    calib = full_req.holdout.records[len(req.holdout):2 * len(req.holdout)] or None
    tok = word_tokenizer(tofu_texts(req))
    coll = QACollator(tok, max_length=args.max_length)
    hold = qa_loader(calib, coll, batch_size=args.batch_size, shuffle=False) if calib else None
    meta = run_meta("coreset_lm.py", argv, hardware=hardware("cpu"), forget=len(req.forget), retain=len(req.retain),
                    args={**vars(args), "device": "cpu"})
    results = results_file(args, lambda r: (r["strategy"], r["method"], r["ratio"], r["seed"]), markdown,
                           meta)  # times from here
    full, _ = T.train_lm(req.forget.records + req.retain.records, tok, args, args.model_seed, cache, "full")
    gold, gold_s = T.train_lm(req.retain.records, tok, args, args.model_seed, cache, "retain")
    g = tofu_scores(gold, tok, req, n_generate=args.n_generate)
    g["forget_quality"] = 1.0
    f = tofu_scores(full, tok, req, gold_scores=g, n_generate=args.n_generate)
    results.add({"strategy": "-", "method": "retrain (gold)", "ratio": None, "seed": args.model_seed,
                 **{k: g[k] for k in KEYS}, "time_s": gold_s, "trained_on": len(req.retain)},
                n_params=sum(p.numel() for p in full.parameters()))
    results.add({"strategy": "-", "method": "finetuned (original)", "ratio": None, "seed": args.model_seed,
                 **{k: f[k] for k in KEYS}, "time_s": 0.0, "trained_on": 0})
    print(f"TOFU {args.forget}: {len(req.forget)} forget / {len(req.retain)} retain questions; gold FQ 1, "
          f"finetuned FQ {f['forget_quality']:.2e}", flush=True)
    selectors = [s for s in args.selectors.split(",") if s]
    ratios = [float(r) for r in args.ratios.split(",") if r]
    for seed in [int(s) for s in args.seeds.split(",")]:
        retain = qa_loader(req.retain.records, coll, batch_size=args.batch_size, seed=seed + 1)
        forget = qa_loader(req.forget.records, coll, batch_size=args.batch_size, seed=seed)
        for strategy in args.strategies.split(","):
            for sel, ratio in [(None, 1.0)] + [(s, r) for s in selectors for r in ratios]:
                if results.done((strategy, sel or "whole forget set", ratio, seed)) or results.out_of_time():
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    llm = LLMUnlearner(full, strategy=strategy, tokenizer=tok, selector=sel)
                    t0 = time.perf_counter()
                    kw = {"prune_ratio": ratio} if sel else {}
                    res = llm.fit(forget, retain, hold, progress=False, seed=seed, **kw)
                    dt = time.perf_counter() - t0
                s = tofu_scores(res.model, tok, req, gold_scores=g, n_generate=args.n_generate)
                n = len(res.coreset) if res.coreset is not None else len(req.forget)
                results.add({"strategy": strategy, "method": sel or "whole forget set", "ratio": ratio, "seed": seed,
                             **{k: s[k] for k in KEYS}, "time_s": dt, "trained_on": n, "note": res.stop_reason})
                print(f"seed {seed} {strategy:18s} {sel or 'whole':14s} {ratio:4.2f} FQ {s['forget_quality']:.2e} "
                      f"MU {s['model_utility']:.3f} forget ROUGE {s['forget_rouge']:.2f} {dt:.0f}s", flush=True)
    md_path = results.finish()
    track_results(args, args.name, results.meta, results.all_rows(), [md_path, md_path.with_suffix(".json")])
    print(md_path.read_text())


def _ms(v, fmt):
    v = [x for x in v if x is not None and np.isfinite(x)]
    if not v:
        return "-"
    return fmt(np.mean(v)) + (f" ± {fmt(np.std(v))}" if len(v) > 1 else "")


def markdown(rows, meta) -> str:
    fq = lambda x: f"{x:.2g}" if x < 0.01 else f"{x:.2f}"  # noqa: E731
    lines = ["# Coresets on a language model (TOFU from scratch)", "",
             f"{' then '.join(f'`{c}`' for c in meta.get('runs', [meta['command']]))} on {meta['date']} ({meta.get('hardware', meta['machine'])}; torch {meta['torch']}); "
             f"{meta['total_min']:.1f} min{' (the runs added up)' if len(meta.get('runs', [])) > 1 else ''}. GPT-2 with {meta['n_params'] / 1e6:.2f}M parameters trained from scratch; "
             f"{meta['forget']} forget / {meta['retain']} retain questions. Each strategy at its defaults on the whole "
             "forget set, then on the coreset each selector picks (ratio of the forget set); the stopping rule watches "
             "the whole request and every model is scored on the whole forget set against the gold model. Mean over "
             "seeds (± std).", "",
             "FQ: forget quality (KS p-value of truth ratios vs the gold model; ≥ 0.05 = indistinguishable). MU: "
             "model utility. ROUGE: ROUGE-L recall of greedy answers. Min-K% AUC: forget vs held-out authors. Time "
             "includes selection.", "",
             "| strategy | selector | ratio | trained on | FQ | MU | forget ROUGE | retain ROUGE | Min-K% AUC | time (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    # the reference models first, then each strategy's rows in the order they were run
    ordered = sorted(rows, key=lambda r: r["strategy"] != "-")
    groups = list(dict.fromkeys((r["strategy"], r["method"], r["ratio"]) for r in ordered))
    for strat, method, ratio in groups:
        rs = [r for r in rows if (r["strategy"], r["method"], r["ratio"]) == (strat, method, ratio)]
        col = lambda k, fmt: _ms([r[k] for r in rs], fmt)  # noqa: E731
        lines.append(f"| {strat} | {method} | {'-' if ratio is None else f'{ratio:.2f}'} | "
                     f"{col('trained_on', lambda x: f'{x:.0f}')} | {col('forget_quality', fq)} | "
                     f"{col('model_utility', lambda x: f'{x:.3f}')} | {col('forget_rouge', lambda x: f'{x:.2f}')} | "
                     f"{col('retain_rouge', lambda x: f'{x:.2f}')} | {col('min_k_auc', lambda x: f'{x:.2f}')} | "
                     f"{col('time_s', lambda x: f'{x:.0f}')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
