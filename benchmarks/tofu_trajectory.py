"""Where along an unlearning run does TOFU's forget quality appear, and what does it cost?

Runs language-model strategies on the TOFU-from-scratch models of ``tofu.py`` (same cache,
same arguments) and, every ``--every`` optimiser steps, measures the model being unlearned:
forget quality (KS p-value of the forget split's truth ratios against the gold model's),
the median log truth ratio (gold ≈ its own value; the finetuned model prefers the
paraphrased true answer over the perturbed false ones, so its median is lower), the mean
answer probability on the forget and retain splits, and with ``--rouge N`` the retain
ROUGE-L recall of greedy answers to the first N retain questions (the quantity of the
issue's goal: forget quality ≥ 0.05 at retain ROUGE-L ≥ 90% of the finetuned model's).
Without it there is no generation, so one measurement costs a few forward passes. The table shows, per strategy, the whole path; the summary the
first step with forget quality ≥ 0.05 and the retain probability there.

    python benchmarks/tofu_trajectory.py --strategies npo,causal_tracing --every 10
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main(argv=None):
    from tofu import train_lm

    from erasus.core.trainer import Callback
    from erasus.data.datasets.tofu import subset_request, tofu_request
    from erasus.evaluation.tofu import avg_logp, generate_answers, truth_ratios
    from erasus.metrics import tofu as T
    from erasus.models.causal_lm import QACollator, qa_loader, tofu_texts, word_tokenizer
    from erasus.unlearners import LLMUnlearner
    from erasus.utils.io import atomic_write_text

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--strategies", default="npo,simnpo,negative_gradient,causal_tracing")
    p.add_argument("--every", type=int, default=10, help="optimiser steps between measurements")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rouge", type=int, default=0, help="retain questions answered (greedy) per measurement "
                   "for retain ROUGE-L; 0: none")
    p.add_argument("--forget-authors", type=int, default=4)
    p.add_argument("--retain-authors", type=int, default=36)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--epochs", type=int, default=100, help="epochs of the finetuned/gold models (cache key)")
    p.add_argument("--lr", type=float, default=2e-3, help="learning rate of the finetuned/gold models (cache key)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--cache", default=str(HERE / "cache"))
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    from erasus.experiments.benchargs import parse_benchmark_args
    from erasus.experiments.tracking import track_results

    args = parse_benchmark_args(p, argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    req = subset_request(tofu_request("forget10"), args.forget_authors, args.retain_authors)
    tok = word_tokenizer(tofu_texts(req))
    full, _ = train_lm(req.forget.records + req.retain.records, tok, args, 0, Path(args.cache), "full")
    gold, _ = train_lm(req.retain.records, tok, args, 0, Path(args.cache), "retain")
    fe, re_ = req.forget_eval.records, req.retain_eval.records[:200]
    R_gold = truth_ratios(gold, tok, fe)

    def measure(model, step):
        R = truth_ratios(model, tok, fe)
        prob = lambda recs: float(T.answer_probability(  # noqa: E731
            avg_logp(model, tok, [(r["question"], r["answer"]) for r in recs])).mean())
        out = {"step": step, "forget_quality": T.forget_quality(R, R_gold), "median_log_R": float(np.median(np.log(R))),
               "forget_prob": prob(fe), "retain_prob": prob(re_)}
        if args.rouge:
            recs = re_[:args.rouge]
            gen = generate_answers(model, tok, [r["question"] for r in recs])
            out["retain_rouge"] = float(T.rouge_l_recall(gen, [r["answer"] for r in recs]).mean())
        return out

    class Probe(Callback):
        def __init__(self):
            self.points = []

        def on_step_end(self, trainer, module, step, loss):
            if step % args.every == 0:
                self.points.append(measure(module.adapter.model, step))

    paths = {"finetuned": [measure(full, 0)], "gold": [measure(gold, 0)]}
    for name in args.strategies.split(","):
        probe = Probe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = LLMUnlearner(full, strategy=name, tokenizer=tok).fit(
                qa_loader(req.forget.records, QACollator(tok, max_length=args.max_length), args.batch_size, seed=args.seed),
                qa_loader(req.retain.records, QACollator(tok, max_length=args.max_length), args.batch_size,
                          seed=args.seed + 1), progress=False, seed=args.seed, callbacks=[probe])
        paths[name] = [paths["finetuned"][0]] + probe.points + [measure(res.model, res.steps)]
        reached = next((q for q in paths[name] if q["forget_quality"] >= 0.05), None)
        print(f"{name}: final FQ {paths[name][-1]['forget_quality']:.2e}, retain prob "
              f"{paths[name][-1]['retain_prob']:.3f}; first FQ >= 0.05: "
              + (f"step {reached['step']} (retain prob {reached['retain_prob']:.3f})" if reached else "never"), flush=True)

    meta = {"command": "python benchmarks/tofu_trajectory.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "args": vars(args),
            "total_min": (time.perf_counter() - t_start) / 60}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "tofu_trajectory.json", json.dumps({"meta": meta, "paths": paths}, indent=1))
    md = markdown(paths, meta)
    atomic_write_text(out / "tofu_trajectory.md", md)
    track_results(args, "tofu_trajectory", meta, [], [out / "tofu_trajectory.md", out / "tofu_trajectory.json"])
    print(md)


def markdown(paths, meta) -> str:
    g, f = paths["gold"][0], paths["finetuned"][0]
    lines = ["# TOFU from scratch: forget quality along the unlearning run", "",
             f"`{meta['command']}` on {meta['date']} (torch {meta['torch']}); {meta['total_min']:.1f} min; "
             f"{meta['args']['forget_authors']} forget / {meta['args']['retain_authors']} retain authors, "
             f"unlearning seed {meta['args']['seed']}.", "",
             "FQ: forget quality vs the gold model (≥ 0.05: indistinguishable). median log R: median log truth ratio "
             f"on the forget split (gold {g['median_log_R']:+.2f}, finetuned {f['median_log_R']:+.2f}). "
             f"prob: mean answer probability (forget: gold {g['forget_prob']:.3f}, finetuned {f['forget_prob']:.3f}; "
             f"retain: finetuned {f['retain_prob']:.3f}).", "",
             "## First step with FQ ≥ 0.05", ""]
    rg = "retain_rouge" in f
    if rg:
        lines[-4] += (f" retain ROUGE: ROUGE-L recall of greedy answers to the first {meta['args']['rouge']} retain "
                      f"questions (finetuned {f['retain_rouge']:.2f}; goal ≥ {0.9 * f['retain_rouge']:.2f}).")
    cell = lambda q: f" {q['retain_rouge']:.2f} |" if rg else ""  # noqa: E731
    lines += ["| strategy | step | forget prob | retain prob |" + (" retain ROUGE |" if rg else "")
              + " final FQ | final retain prob |", "|---|---|---|---|" + ("---|" if rg else "") + "---|---|"]
    for name, pts in paths.items():
        if name in ("gold", "finetuned"):
            continue
        r = next((q for q in pts if q["forget_quality"] >= 0.05), None)
        lines.append(f"| {name} | {r['step']} | {r['forget_prob']:.3f} | {r['retain_prob']:.3f} |{cell(r)} "
                     f"{pts[-1]['forget_quality']:.2e} | {pts[-1]['retain_prob']:.3f} |" if r else
                     f"| {name} | never | - | - |" + (" - |" if rg else "")
                     + f" {pts[-1]['forget_quality']:.2e} | {pts[-1]['retain_prob']:.3f} |")
    for name, pts in paths.items():
        if name in ("gold", "finetuned"):
            continue
        lines += ["", f"## {name}", "", "| step | FQ | median log R | forget prob | retain prob |"
                  + (" retain ROUGE |" if rg else ""), "|---|---|---|---|---|" + ("---|" if rg else "")]
        lines += [f"| {q['step']} | {q['forget_quality']:.2e} | {q['median_log_R']:+.2f} | {q['forget_prob']:.3f} | "
                  f"{q['retain_prob']:.3f} |{cell(q)}" for q in pts]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
