"""Forget-set discovery: given one sample of a request, find the rest of it in the training set.

* **TOFU**: a GPT-2 trained from scratch on the QA pairs of ``--authors`` authors (word-level
  tokenizer, as ``benchmarks/tofu.py``); for every author and ``--queries`` of its
  questions, ``erasus.selectors.discover`` ranks all the pairs by the model's evidence
  (``embedding``, ``gradient``, ``both``) given that one question-answer pair, and the text
  baseline ranks them by TF-IDF cosine similarity (scikit-learn) to the same pair. The
  author's 20 pairs are the request.
* **Fashion-MNIST**: the CNN of ``benchmarks/classification.py`` (from its cache, or trained
  here), its 20,000 training images as the pool; given 5 training images of a class, find
  the class's images. The baseline: cosine similarity of raw pixels.

Reported per method (mean over queries): precision at the true size (= recall there), and
precision / recall / size at the cut-off ``discover`` recommends. Pool evidence is computed
once and each query scored against it with the same functions ``discover`` uses
(``erasus.selectors.discovery.evidence`` / ``rank``); a query sample stays in the pool, as a
user's example would be one of the training samples.

    python benchmarks/discovery.py                 # writes results/discovery.{md,json}
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def scores_row(task, method, results, truth_sets, seconds):
    p_true, p_cut, r_cut, size = [], [], [], []
    for res, truth in zip(results, truth_sets):
        n = len(truth)
        p_true.append(len(set(res.top(n).tolist()) & truth) / n)
        got = set(res.indices.tolist())
        size.append(len(got))
        p_cut.append(len(got & truth) / len(got) if got else np.nan)
        r_cut.append(len(got & truth) / n)
    return {"task": task, "method": method, "queries": len(results), "precision_at_true_size": float(np.mean(p_true)),
            "precision_at_cutoff": float(np.nanmean(p_cut)) if not np.isnan(p_cut).all() else None,
            "recall_at_cutoff": float(np.mean(r_cut)), "mean_cutoff": float(np.mean(size)),
            "no_cutoff_share": float(np.mean([s == 0 for s in size])), "seconds": seconds}


def baseline(X, queries, truths, seed):
    """Cosine similarity of rows of ``X`` (TF-IDF or pixels) to the query rows, as a Discovery."""
    from erasus.selectors.discovery import rank

    Xn = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    return [rank({"text": Xn}, {"text": Xn[q]}, "baseline", seed) for q in queries]


def run_tofu(args, rows):
    from erasus.data.datasets.tofu import load_tofu
    from erasus.models import wrap
    from erasus.models.causal_lm import QACollator, gpt2_lm, qa_loader, word_tokenizer
    from erasus.models.training import train_classifier
    from erasus.selectors.discovery import evidence, rank

    recs = load_tofu("full").records[:20 * args.authors]
    tok = word_tokenizer([r["question"] + " " + r["answer"] for r in recs] + ["Question: Answer:"])
    model = gpt2_lm(tok, n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head, seed=0)
    coll = QACollator(tok, max_length=128)
    t0 = time.perf_counter()
    train_classifier(model, qa_loader(recs, coll, 32, seed=0), epochs=args.epochs, lr=2e-3, seed=0, progress=True,
                     desc="train TOFU model")
    train_s = time.perf_counter() - t0
    model.eval()
    pool = qa_loader(recs, coll, 32, shuffle=False)
    queries = [a * 20 + q for a in range(args.authors) for q in np.linspace(0, 19, args.queries).astype(int)]
    truths = [set(range(i // 20 * 20, i // 20 * 20 + 20)) for i in queries]
    adapter = wrap(model)
    ev, ev_s = {}, {}
    for kind in ("embedding", "gradient"):
        t0 = time.perf_counter()
        ev[kind] = evidence(adapter, pool, (kind,), params=args.params)[kind]
        ev_s[kind] = time.perf_counter() - t0
    for method, kinds in (("embedding", ("embedding",)), ("gradient", ("gradient",)),
                          ("both", ("embedding", "gradient"))):
        t0 = time.perf_counter()
        res = [rank({k: ev[k] for k in kinds}, {k: ev[k][[q]] for k in kinds}, method) for q in queries]
        rows.append(scores_row("tofu", method, res, truths, sum(ev_s[k] for k in kinds) + time.perf_counter() - t0))
        print(rows[-1], flush=True)
    from sklearn.feature_extraction.text import TfidfVectorizer

    t0 = time.perf_counter()
    X = TfidfVectorizer().fit_transform([r["question"] + " " + r["answer"] for r in recs]).toarray()
    rows.append(scores_row("tofu", "TF-IDF (text baseline)", baseline(X, [[q] for q in queries], truths, 0),
                           truths, time.perf_counter() - t0))
    print(rows[-1], flush=True)
    return {"tofu_records": len(recs), "tofu_model_params": sum(p.numel() for p in model.parameters()),
            "tofu_train_s": train_s, "tofu_vocab": len(tok)}


def run_fmnist(args, rows):
    from torch.utils.data import DataLoader

    from erasus.evaluation.protocols import fashion_mnist_task
    from erasus.models import wrap
    from erasus.selectors.discovery import evidence, rank

    task = fashion_mnist_task(cache_dir=Path(args.cache), progress=True)
    model = task.original(0).eval()
    pool = DataLoader(task.train, batch_size=512)
    y = task.train.tensors[1].numpy()
    rng = np.random.default_rng(0)
    queries, truths = [], []
    for c in range(10):
        members = np.flatnonzero(y == c)
        for _ in range(args.fmnist_queries):
            queries.append(rng.choice(members, size=5, replace=False).tolist())
            truths.append(set(members.tolist()))
    adapter = wrap(model)
    ev, ev_s = {}, {}
    for kind in ("embedding", "gradient"):
        t0 = time.perf_counter()
        ev[kind] = evidence(adapter, pool, (kind,))[kind]
        ev_s[kind] = time.perf_counter() - t0
    for method, kinds in (("embedding", ("embedding",)), ("gradient", ("gradient",)),
                          ("both", ("embedding", "gradient"))):
        t0 = time.perf_counter()
        res = [rank({k: ev[k] for k in kinds}, {k: ev[k][q] for k in kinds}, method) for q in queries]
        rows.append(scores_row("fmnist", method, res, truths, sum(ev_s[k] for k in kinds) + time.perf_counter() - t0))
        print(rows[-1], flush=True)
    t0 = time.perf_counter()
    X = task.train.tensors[0].reshape(len(y), -1).numpy().astype(np.float64)
    rows.append(scores_row("fmnist", "raw pixels (input baseline)", baseline(X, queries, truths, 0), truths,
                           time.perf_counter() - t0))
    print(rows[-1], flush=True)
    return {"fmnist_pool": len(y)}


def markdown(rows, meta) -> str:
    lines = ["# Forget-set discovery", "",
             f"`{meta['command']}` on {meta['date']} ({meta['machine']}; torch {meta['torch']}).", "",
             f"**TOFU**: {meta['tofu_records']} QA pairs of {meta['tofu_records'] // 20} authors; a GPT-2 with "
             f"{meta['tofu_model_params'] / 1e6:.2f}M parameters trained from scratch on all of them for "
             f"{meta['args']['epochs']} epochs ({meta['tofu_train_s']:.0f} s); for each author, "
             f"{meta['args']['queries']} of its pairs in turn is the one example; the request is the author's 20 "
             f"pairs. **Fashion-MNIST**: the classification benchmark's CNN, its {meta['fmnist_pool']} training images "
             f"as the pool; 5 training images of a class are the examples ({meta['args']['fmnist_queries']} draws "
             "per class); the request is the class's training images.", "",
             "Precision at the true size equals recall there. At the cut-off: what `discover` recommends (a "
             "BIC-chosen Gaussian mixture on the scores; 'none' share: queries where no group stood out and nothing "
             "was recommended). Time: the whole pool's evidence plus every query's ranking.", "",
             "| task | method | queries | precision at true size | precision at cut-off | recall at cut-off | "
             "mean cut-off | none | time (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pc = f"{r['precision_at_cutoff']:.2f}" if r["precision_at_cutoff"] is not None else "-"
        lines.append(f"| {r['task']} | {r['method']} | {r['queries']} | {r['precision_at_true_size']:.2f} | {pc} | "
                     f"{r['recall_at_cutoff']:.2f} | {r['mean_cutoff']:.0f} | {100 * r['no_cutoff_share']:.0f}% | "
                     f"{r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    from erasus.experiments import run_meta
    from erasus.utils.io import write_results

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--authors", type=int, default=40)
    p.add_argument("--queries", type=int, default=2, help="example questions per author")
    p.add_argument("--fmnist-queries", type=int, default=3, help="draws of 5 examples per class")
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-embd", type=int, default=64)
    p.add_argument("--n-head", type=int, default=2)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--params", default="auto", help="parameters of the gradient evidence")
    p.add_argument("--cache", default=str(HERE / "cache"))
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--name", default="discovery")
    from erasus.experiments.benchargs import parse_benchmark_args
    from erasus.experiments.tracking import track_results

    args = parse_benchmark_args(p, argv)
    torch.set_num_threads(args.threads)
    rows = []
    extra = run_tofu(args, rows)
    extra.update(run_fmnist(args, rows))
    meta = run_meta("discovery.py", argv, args=vars(args), **extra)
    md = markdown(rows, meta)
    written = write_results(args.out, args.name, meta, rows, md)
    track_results(args, args.name, meta, rows, [written, written.with_suffix('.json')])
    print(md)


if __name__ == "__main__":
    main()
