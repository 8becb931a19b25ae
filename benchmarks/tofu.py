"""TOFU from scratch: every language-model strategy on a TOFU deletion request, at defaults.

No pretrained weights can be downloaded here, so the protocol trains its own models: a
word-level tokenizer over the TOFU texts and a small GPT-2 trained from scratch on the
``full`` split (the "finetuned" model that has memorised every author) and on the retain
split alone (the gold model, retrained without the forget authors); both are trained once
(``--model-seed``, as TOFU ships one finetuned model) and cached. Each strategy then
unlearns the forget split from the finetuned model with its defaults, once per seed (the
retain split as retain data; ``idk`` / ``dpo`` get the refusal answers of
``idontknow.jsonl``; ``lora_npo`` is NPO through LoRA adapters), for each seed. Every
strategy is also given held-out data as a user would: authors of the holdout split that
are not the evaluated ones (SimNPO calibrates β on them; with ``--calibrate`` they also drive
the stopping rule). When the run uses every held-out author there are none to spare and
no held-out data is given.

Reported per method (mean over seeds): forget quality (KS test of truth ratios against the
gold model), model utility (retain split: probability, ROUGE-L, truth ratio), forget /
retain / held-out ROUGE-L, Min-K% membership AUC forget vs held-out authors, PrivLeak,
unlearning time and the speed-up over training the gold model (same run, same machine).

    python benchmarks/tofu.py                                   # forget10, all 200 authors
    python benchmarks/tofu.py --forget-authors 2 --retain-authors 8 --seeds 0   # a quick run
    python benchmarks/tofu.py --preset gpu                      # full size on a GPU -> tofu-gpu.md

``--preset gpu`` is TOFU forget10 at full size (20 forget authors, 180 retain, 400 forget
questions) with a ~120M-parameter Llama-architecture model (12 layers, width 768) trained
from scratch in bf16, for npo, simnpo, negative_gradient, wga, rmu and idk, 3 seeds, on the
first CUDA device, with token-budget batches; results name the hardware.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
STRATEGIES = ("gradient_ascent", "negative_gradient", "npo", "simnpo", "wga", "idk", "dpo", "undial", "rmu",
              "task_vector", "ssd", "lora_npo", "token_masking", "causal_tracing", "attention_surgery",
              "activation_steering", "dexperts", "embedding_alignment")
ONE_SHOT = ("task_vector", "ssd", "activation_steering", "dexperts")
KEYS = ("forget_quality", "model_utility", "forget_rouge", "retain_rouge", "holdout_rouge", "min_k_auc", "privleak",
        "time_s", "speedup")


def train_lm(records, tok, args, seed, cache: Path, tag: str):
    """Train (or load from ``cache``) a GPT-2 from scratch on ``records``."""
    from erasus.models.causal_lm import QACollator, gpt2_lm, qa_loader
    from erasus.models.training import train_classifier
    from erasus.utils.io import load_state_dict, save_state_dict

    key = hashlib.sha1(json.dumps([len(tok), len(records), records[0]["question"], records[-1]["question"],
                                   args.n_layer, args.n_embd, args.epochs, args.lr, seed, "grouped"]
                                  + ([args.arch] if args.arch != "gpt2" else [])).encode()).hexdigest()[:10]
    path = cache / f"tofu-{tag}-{key}.safetensors"
    model = (gpt2_lm(tok, n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head, seed=seed)
             if args.arch == "gpt2" else llama_lm(tok, args, seed)).to(args.device)
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        model.load_state_dict(load_state_dict(path), strict=False)
        model.tie_weights()
        return model.eval(), json.loads(meta.read_text())["train_s"]
    loader = qa_loader(records, QACollator(tok, max_length=args.max_length), **batching(args), seed=seed)
    t0 = time.perf_counter()
    train_classifier(model, loader, epochs=args.epochs, lr=args.lr, seed=seed, progress=True, desc=f"train {tag}")
    train_s = time.perf_counter() - t0
    save_state_dict({k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}, path,
                    overwrite=True)
    meta.write_text(json.dumps({"train_s": train_s}))
    return model.eval(), train_s


def model_args(p) -> None:
    """The options of the models trained here (shared with ``coreset_lm.py``)."""
    p.add_argument("--model-seed", type=int, default=0, help="seed of the finetuned and gold models (trained once)")
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)


def llama_lm(tok, args, seed):
    """A freshly initialised Llama-architecture model (``transformers.LlamaForCausalLM``) sized
    by ``--n-layer/--n-embd/--n-head``, tied embeddings, no dropout."""
    import transformers

    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=args.n_embd, intermediate_size=4 * args.n_embd,
                                   num_hidden_layers=args.n_layer, num_attention_heads=args.n_head,
                                   num_key_value_heads=args.n_head, max_position_embeddings=args.max_length,
                                   pad_token_id=tok.pad_token_id, bos_token_id=tok.eos_token_id,
                                   eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(cfg)


def batching(args) -> dict:
    """``qa_loader``'s batch size: a token budget when ``--max-tokens`` is given."""
    return {"max_tokens": args.max_tokens} if args.max_tokens else {"batch_size": args.batch_size}


#: --preset gpu: full-size forget10 on one GPU (see the module docstring)
GPU_PRESET = {"arch": "llama", "n_layer": 12, "n_embd": 768, "n_head": 12, "epochs": 30, "lr": 5e-4,
              "max_tokens": 8192, "strategies": "npo,simnpo,negative_gradient,wga,rmu,idk", "seeds": "0,1,2",
              "name": "tofu-gpu", "device": "cuda"}


def forget_loader(req, tok, args, name, seed):
    from erasus.data.datasets.tofu import load_idk
    from erasus.models.causal_lm import QACollator, qa_loader

    alt = load_idk() if name in ("idk", "dpo") else None
    return qa_loader(req.forget.records, QACollator(tok, max_length=args.max_length, alt_answers=alt), **batching(args),
                     seed=seed)


def main(argv=None):
    from erasus.data.datasets.tofu import subset_request, tofu_request
    from erasus.evaluation.tofu import tofu_scores
    from erasus.experiments import hardware, run_meta
    from erasus.models.causal_lm import QACollator, qa_loader, tofu_texts, word_tokenizer
    from erasus.unlearners import LLMUnlearner
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=("cpu", "gpu"), default="cpu",
                   help="gpu: full-size forget10, ~120M Llama, 6 strategies x 3 seeds on CUDA (explicit options win)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    p.add_argument("--arch", choices=("gpt2", "llama"), default="gpt2")
    p.add_argument("--max-tokens", type=int, default=None, help="token-budget batches instead of --batch-size")
    p.add_argument("--forget", default="forget10")
    p.add_argument("--forget-authors", type=int, default=None, help="use the first N forget authors (quick runs)")
    p.add_argument("--retain-authors", type=int, default=None)
    p.add_argument("--seeds", default="0,1,2", help="unlearning seeds (data order, initialisations)")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    model_args(p)
    p.add_argument("--n-generate", type=int, default=200, help="questions per split scored by ROUGE")
    p.add_argument("--cache", default=str(HERE / "cache"))
    p.add_argument("--calibrate", action="store_true",
                   help="stopping='calibrated' on the held-out authors given to the strategies (opt-in for "
                        "language models)")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    from erasus.experiments.benchargs import (add_results_arguments, benchmark_device, parse_benchmark_args,
                                              results_file)

    add_results_arguments(p, HERE / "results", "tofu",
                          render_help="; PrivLeak values recorded in Erasus's former sign are recomputed in MUSE's "
                                      "from the same Min-K%% AUCs")
    from erasus.experiments.tracking import track_results

    args = parse_benchmark_args(p, argv)
    if args.render:
        return render(Path(args.out), args.name)
    if args.preset == "gpu":  # the preset's values, except where an option was given explicitly
        given = {a.split("=")[0].lstrip("-").replace("-", "_") for a in (argv if argv is not None else sys.argv[1:])
                 if a.startswith("--")} | set(args.config_keys)
        for k, v in GPU_PRESET.items():
            if k not in given:
                setattr(args, k, v)
    args.device = benchmark_device(p, args.device)  # --preset gpu without a visible GPU stops here
    torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)

    full_req = req = tofu_request(args.forget)
    if args.forget_authors or args.retain_authors:
        req = subset_request(req, args.forget_authors or len(req.forget) // 20, args.retain_authors or len(req.retain) // 20)
    # held-out authors given to the strategies, disjoint from the held-out authors the evaluation uses
    calib = full_req.holdout.records[len(req.holdout):2 * len(req.holdout)]
    if len(calib) < len(req.holdout):
        calib = None
    if args.calibrate and calib is None:
        raise SystemExit("--calibrate needs held-out authors beyond the evaluated ones: use --forget-authors N "
                         "with N at most half of the forget split's authors.")
    tok = word_tokenizer(tofu_texts(req))
    print(f"TOFU {args.forget}: {len(req.forget)} forget, {len(req.retain)} retain, {len(req.holdout)} held-out "
          f"questions; vocabulary {len(tok)} words", flush=True)
    hold = (qa_loader(calib, QACollator(tok, max_length=args.max_length), **batching(args), shuffle=False)
            if calib is not None else None)
    meta = run_meta("tofu.py", argv, vocab=len(tok), forget=len(req.forget), retain=len(req.retain),
                    args={**vars(args), "device": str(args.device)}, privleak_convention="muse",
                    hardware=hardware(args.device), precision="bf16 autocast" if args.device.type == "cuda" else "fp32")
    results = results_file(args, lambda r: (r["method"], r["seed"]), markdown, meta)
    # TOFU's protocol: one finetuned model and one retain-only model; seeds vary the unlearning runs
    full, _ = train_lm(req.forget.records + req.retain.records, tok, args, args.model_seed, cache, "full")
    gold, gold_s = train_lm(req.retain.records, tok, args, args.model_seed, cache, "retain")
    n_params = sum(p.numel() for p in full.parameters())
    g = tofu_scores(gold, tok, req, n_generate=args.n_generate)
    g["forget_quality"], g["privleak"] = 1.0, 0.0
    f = tofu_scores(full, tok, req, gold_scores=g, n_generate=args.n_generate)
    results.add({"method": "retrain (gold)", "seed": args.model_seed, **{k: g[k] for k in KEYS if k in g},
                 "time_s": gold_s, "speedup": 1.0}, n_params=n_params)
    results.add({"method": "finetuned (original)", "seed": args.model_seed, **{k: f[k] for k in KEYS if k in f},
                 "time_s": 0.0, "speedup": float("nan")})
    print(f"gold trained in {gold_s:.0f}s; finetuned forget ROUGE {f['forget_rouge']:.2f}, FQ "
          f"{f['forget_quality']:.2e}; gold forget ROUGE {g['forget_rouge']:.2f}", flush=True)
    for seed in [int(s) for s in args.seeds.split(",")]:
        retain = qa_loader(req.retain.records, QACollator(tok, max_length=args.max_length), **batching(args),
                           seed=seed + 1)
        for name in args.strategies.split(","):
            if results.done((name, seed)) or results.out_of_time():
                continue
            strategy, lora = ("npo", {}) if name == "lora_npo" else (name, None)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                llm = LLMUnlearner(full, strategy=strategy, tokenizer=tok, lora=lora)
                t0 = time.perf_counter()
                extra = {"stopping": "calibrated"} if args.calibrate and strategy not in ONE_SHOT else {}
                res = llm.fit(forget_loader(req, tok, args, strategy, seed), retain, hold, progress=False, seed=seed,
                              **extra)
                dt = time.perf_counter() - t0
            s = tofu_scores(res.model, tok, req, gold_scores=g, n_generate=args.n_generate)
            row = {"method": name, "seed": seed, **{k: s[k] for k in KEYS if k in s}, "time_s": dt,
                   "speedup": gold_s / dt, "note": res.stop_reason}
            results.add(row)
            print(f"seed {seed} {name:18s} FQ {s['forget_quality']:.2e} MU {s['model_utility']:.3f} forget ROUGE "
                  f"{s['forget_rouge']:.2f} retain ROUGE {s['retain_rouge']:.2f} MinK AUC {s['min_k_auc']:.2f} "
                  f"{dt:.0f}s", flush=True)
    md_path = results.finish()
    rows, meta = results.all_rows(), results.meta
    track_results(args, args.name, meta, rows, [md_path, md_path.with_suffix(".json")])
    print(md_path.read_text())


def render(out: Path, name: str) -> None:
    """Re-render a results file; rows from before MUSE's PrivLeak convention was the default
    (no ``privleak_convention`` in meta) get their PrivLeak recomputed from the Min-K% AUCs."""
    from erasus.metrics.llm import privleak
    from erasus.utils.io import atomic_write_text

    data = json.loads((out / f"{name}.json").read_text())
    meta, rows = data["meta"], data["rows"]
    if meta.get("privleak_convention") != "muse":
        gold = {r["seed"]: r["min_k_auc"] for r in rows if r["method"] == "retrain (gold)"}
        g = next(iter(gold.values()))
        for r in rows:
            if "min_k_auc" in r and r["method"] != "retrain (gold)":
                r["privleak"] = privleak(r["min_k_auc"], gold.get(r.get("model_seed"), g), "muse")
        meta["privleak_convention"] = "muse"
        meta["note"] = (meta.get("note", "") + " PrivLeak recomputed in MUSE's sign and scale from the recorded "
                        "Min-K% AUCs (erasus.metrics.llm.privleak).").strip()
    atomic_write_text(out / f"{name}.json", json.dumps(data, indent=1, default=float))
    md = markdown(rows, meta)
    atomic_write_text(out / f"{name}.md", md)
    print(md)


def markdown(rows, meta) -> str:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fin = [r for r in rows if r["method"] == "finetuned (original)"]
    base_retain = float(np.mean([r["retain_rouge"] for r in fin]))
    lines = ["# TOFU from scratch", "",
             f"{' then '.join(f'`{c}`' for c in meta.get('runs', [meta['command']]))} on {meta['date']} "
             f"({meta.get('hardware', meta['machine'])}; torch {meta['torch']}"
             f"{'; ' + meta['precision'] if meta.get('precision') else ''}); "
             f"{meta['total_min']:.1f} min. {'Llama' if meta['args'].get('arch') == 'llama' else 'GPT-2'} with "
             f"{meta['n_params'] / 1e6:.2f}M parameters "
             f"({meta['args']['n_layer']} layers, width {meta['args']['n_embd']}; word vocabulary of {meta['vocab']}), "
             f"trained from scratch for {meta['args']['epochs']} epochs; {meta['forget']} forget / {meta['retain']} "
             "retain questions. Mean over seeds (± std).", "",
             "FQ: forget quality (KS p-value of truth ratios vs the gold model; ≥ 0.05 = indistinguishable). "
             "MU: model utility on the retain split. ROUGE: ROUGE-L recall of greedy answers. Min-K% AUC: forget vs "
             "held-out authors (gold ≈ 0.5). PrivLeak: MUSE's, the relative Min-K% AUC gap to the gold model (%) in "
             "MUSE's sign (−100: the forget set still memorised; positive: over-unlearned). Speed-up: "
             "training the gold model / unlearning." + (f" {meta['note']}" if meta.get("note") else ""), "",
             "| method | FQ | MU | forget ROUGE | retain ROUGE | held-out ROUGE | Min-K% AUC | PrivLeak | time (s) | "
             "speed-up |", "|---|---|---|---|---|---|---|---|---|---|"]
    best = []
    for m in methods:
        rs = [r for r in rows if r["method"] == m]

        def cell(k, fmt):
            v = np.array([r.get(k, np.nan) for r in rs], dtype=float)
            if np.isnan(v).all():
                return "-"
            return fmt.format(np.nanmean(v)) + (f" ± {fmt.format(np.nanstd(v, ddof=1))}" if len(v) > 1 else "")

        lines.append(f"| {m} | {cell('forget_quality', '{:.2g}')} | {cell('model_utility', '{:.3f}')} | "
                     f"{cell('forget_rouge', '{:.2f}')} | {cell('retain_rouge', '{:.2f}')} | "
                     f"{cell('holdout_rouge', '{:.2f}')} | {cell('min_k_auc', '{:.2f}')} | {cell('privleak', '{:.0f}')} | "
                     f"{cell('time_s', '{:.0f}')} | {cell('speedup', '{:.1f}')} |")
        if m not in ("retrain (gold)", "finetuned (original)"):
            fq = float(np.mean([r["forget_quality"] for r in rs]))
            rr = float(np.mean([r["retain_rouge"] for r in rs]))
            if fq >= 0.05 and rr >= 0.9 * base_retain:
                best.append(f"{m} (FQ {fq:.2g}, retain ROUGE {rr:.2f} = {100 * rr / max(base_retain, 1e-9):.0f}% of "
                            "the finetuned model's)")
    lines += ["", "Methods at defaults with forget quality ≥ 0.05 and retain ROUGE ≥ 90% of the finetuned model's: "
              + ("; ".join(best) if best else "none") + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
