"""Verification benchmark: do the attacks rank models correctly, and what do they find?

Part A, membership inference on overfit Fashion-MNIST models. The protocol's CNN and
recipe (small CNN, Adam 1e-3, 30 epochs, no augmentation: it memorises), trained as
``--shadows`` shadow models on random halves of a ``--population``-image population
(each image is IN for exactly half of them). Leave-one-out, as in LiRA's paper: each
model in turn is the target and the others are its shadows / reference models. Attacks:
the loss threshold (Yeom et al.), LiRA online and offline (Carlini et al. 2022, fixed
and per-example variance), RMIA with all references and offline with OUT references only (Zarifzadeh et
al. 2024). Reported: AUC and TPR at 0.1% and 1% FPR, averaged over targets.

Part B, attacks on unlearned models. The Fashion-MNIST protocol of
``classification.py`` (seed 0): every strategy at its defaults, then the relearning attack
(30 Adam steps on 10% of the forget set, accuracy on the other 90%), benign fine-tuning on
retain data only (same steps; forget accuracy after), int8 and int4 weight quantization
(forget accuracy), and a linear probe for the forget labels on frozen features, each
next to the retrained model under the same attack.

Part C, the cheat gallery (``erasus.testing``): models that must FAIL every verification
entry point (the untouched original, a re-initialised model, the forgotten class's logit
lowered by 5 / 30 / 1e4, its logits divided by a temperature, its output row zeroed, lookup
tables that change only the forget samples' outputs) and a model retrained with another seed,
which must PASS; scikit-learn digits and the bundled Fashion-MNIST, class forgetting and
random requests of 30, 120 and 1,000 samples, ``--gallery-seeds`` seeds. Each entry point is
given the untouched original for its power check.

    python benchmarks/verification.py                      # ~25 min on 2 CPU cores
    python benchmarks/verification.py --part b --strategies negative_gradient,scrub
    python benchmarks/verification.py --part c             # the gallery, ~15 min
    python benchmarks/verification.py --part r             # the re-fit attack's recoveries, ~3 min

Part D (``--part r``), the last-layer re-fit attack's recoveries behind its tolerances: the
original, a hidden-class cheat, the gold model and a model retrained with another seed.
"""
from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ATTACK_KEYS = [("forget_acc", "forget acc"), ("relearn_forget_accuracy", "relearn"),
               ("retain_finetune_forget_accuracy", "retain fine-tune"), ("int8_forget_accuracy", "int8"),
               ("int4_forget_accuracy", "int4"), ("probe_forget_accuracy", "probe")]


def part_a(args, cache: Path):
    from torch.utils.data import DataLoader, Subset

    from erasus.data.vision import load_fashion_mnist
    from erasus.metrics.lira import ShadowModels, lira_scores, rmia_ratio, rmia_scores, roc_summary
    from erasus.models.training import train_classifier
    from erasus.models.zoo import small_cnn

    population = load_fashion_mnist(train=True, n=args.population, seed=7)
    path = cache / f"shadows-fmnist-p{args.population}-m{args.shadows}-e{args.epochs}.npz"
    if path.exists():
        z = np.load(path)
        shadows = ShadowModels(z["scores"], z["members"], float(z["train_seconds"]))
    else:
        def train_fn(idx, seed):
            torch.manual_seed(seed)
            model = small_cnn(width=32)
            loader = DataLoader(Subset(population, idx.tolist()), batch_size=128, shuffle=True,
                                generator=torch.Generator().manual_seed(seed))
            return train_classifier(model, loader, epochs=args.epochs, lr=1e-3, seed=seed, cosine=False).eval()

        shadows = ShadowModels.train(train_fn, population, n_models=args.shadows, seed=0, progress=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, scores=shadows.scores, members=shadows.members, train_seconds=shadows.train_seconds)
        os.replace(tmp, path)
    conf = 1.0 / (1.0 + np.exp(-shadows.scores))  # p_y from phi = logit(p_y)
    rows = {k: [] for k in ("loss threshold", "LiRA online", "LiRA offline", "LiRA offline, one-sided (the paper's text)",
                            "LiRA online, per-example variance", "LiRA offline, per-example variance",
                            "RMIA (all references)", "RMIA offline (OUT references)")}
    M = shadows.n_models
    for t in range(M):
        keep = np.arange(M) != t
        s, mem = shadows.scores[keep], shadows.members[keep]
        y = shadows.members[t]
        rows["loss threshold"].append(roc_summary(shadows.scores[t], y))
        rows["LiRA online"].append(roc_summary(lira_scores(shadows.scores[t], s, mem, online=True), y))
        rows["LiRA offline"].append(roc_summary(lira_scores(shadows.scores[t], s, mem, online=False), y))
        rows["LiRA offline, one-sided (the paper's text)"].append(
            roc_summary(lira_scores(shadows.scores[t], s, mem, online=False, convention="paper"), y))
        for online in (True, False):
            rows[f"LiRA {'online' if online else 'offline'}, per-example variance"].append(
                roc_summary(lira_scores(shadows.scores[t], s, mem, online=online, fix_variance=False), y))
        for name, out_only in (("RMIA (all references)", False), ("RMIA offline (OUT references)", True)):
            r = rmia_ratio(conf[t], conf[keep], mem, out_only=out_only)
            rows[name].append(roc_summary(rmia_scores(r, r), y))
    table = {k: {m: float(np.mean([r[m] for r in v])) for m in v[0]} for k, v in rows.items()}
    return {"attacks": table, "n_models": M, "population": args.population, "epochs": args.epochs,
            "shadow_train_seconds": shadows.train_seconds}


def part_b(args, cache: Path, strategies):
    from erasus.evaluation.protocols import fashion_mnist_task
    from erasus.metrics import MetricSuite
    from erasus.unlearners import ErasusUnlearner

    task = fashion_mnist_task(cache_dir=cache, progress=True)
    suite = MetricSuite(["accuracy", "relearn", "quantization", "linear_probe"], max_samples=2000)
    out = []
    for kind in args.scenarios.split(","):
        split = task.split(kind, fraction=0.1, forget_class=1, seed=args.seed)
        original, gold = task.original(args.seed), task.gold(split, args.seed)

        def attack(name, model, note=""):
            m = suite.run(model, split.forget, split.retain, split.test, split.holdout)
            row = {"scenario": split.kind, "method": name, "note": note,
                   "forget_acc": m.get("forget_accuracy", float("nan"))}
            row.update({k: float(v) for k, v in m.items() if k in dict(ATTACK_KEYS)})
            print(f"{split.kind:9s} {name:22s} " + " ".join(f"{lab}={100 * row.get(k, float('nan')):.1f}"
                                                           for k, lab in ATTACK_KEYS), flush=True)
            return row

        out.append(attack("retrain", gold, "gold standard"))
        out.append(attack("original", original, "untouched model"))
        for name in strategies:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = ErasusUnlearner(original, strategy=name).fit(split.forget, split.retain, split.holdout,
                                                                   progress=False, seed=args.seed)
            out.append(attack(name, res.model, res.stop_reason))
    return out


GALLERY_GRID = (("digits", "class", None), ("digits", "sample", 30), ("digits", "sample", 120),
                ("fmnist_small", "class", None), ("fmnist_small", "sample", 30), ("fmnist_small", "sample", 120),
                ("fmnist_small", "sample", 1000))


def part_c(args, cache: Path):
    from erasus.evaluation.protocols import digits_task, fashion_mnist_small_task
    from erasus.testing import judge_gallery

    tasks = {"digits": digits_task(cache_dir=cache), "fmnist_small": fashion_mnist_small_task(cache_dir=cache)}
    rows = []
    for task_name, kind, size in GALLERY_GRID:
        for seed in range(args.gallery_seeds):
            t = time.perf_counter()
            res = judge_gallery(tasks[task_name], kind, seed, size, forget_class=3 if task_name == "digits" else 1)
            for model, verdicts in res.items():
                rows.append({"task": task_name, "kind": kind, "size": size, "seed": seed, "model": model, **verdicts})
            print(f"{task_name} {kind} {size or ''} seed {seed} ({time.perf_counter() - t:.0f} s): "
                  + "  ".join(f"{m}: " + "/".join(v[:4] for v in r.values()) for m, r in res.items()), flush=True)
    return rows


def part_r(args, cache: Path):
    """Re-fit attack recoveries (``erasus.metrics.LastLayerRefit`` at its defaults) of the
    original, a hidden-class cheat and two retrained models, per request and seed."""
    from erasus.evaluation.protocols import digits_task, fashion_mnist_small_task
    from erasus.metrics import EvalContext, LastLayerRefit
    from erasus.models import wrap
    from erasus.testing import hidden_class

    tasks = {"digits": digits_task(cache_dir=cache), "fmnist_small": fashion_mnist_small_task(cache_dir=cache)}
    rows = []
    for task_name, kind in (("digits", "class"), ("fmnist_small", "class"), ("fmnist_small", "random")):
        task, c = tasks[task_name], 3 if task_name == "digits" else 1
        for seed in range(args.gallery_seeds):
            split = task.split(kind, fraction=0.1, forget_class=c, seed=seed)
            original = task.original(seed)
            models = {"original": original, "gold": task.gold(split, seed), "retrained": task.gold(split, seed + 10)}
            if kind == "class":
                models["hidden_class_30"] = hidden_class(original, [c], 30.0)
            row = {"task": task_name, "kind": kind, "seed": seed}
            for name, m in models.items():
                ctx = EvalContext(wrap(m), split.forget, split.retain, split.test, split.holdout, max_samples=2000)
                r = LastLayerRefit().samples(ctx)
                row[name] = float(r["refit_forget_accuracy"].mean())
                if "refit_nonmember_accuracy" in r:
                    row[name + "_heldout"] = float(r["refit_nonmember_accuracy"].mean())
            rows.append(row)
            print(row, flush=True)
    return rows


def _heading(title: str, m: dict) -> list:
    return [f"## {title}", "", f"`{m['command']}` on {m['date']} ({m['machine']}; torch {m['torch']}); "
            f"{m['total_min']:.1f} min.", ""]


def refit_markdown(refit) -> list:
    rows, m = refit["rows"], refit["meta"]
    lines = _heading("D. The last-layer re-fit attack", m) + [
             "Mean recovery of the forget data (class forgetting: with the held-out samples of the class) by a new "
             "output layer trained on retain data plus 5 labelled forget samples (`last_layer_refit` at its defaults: "
             "5 draws, C = 0.01): the original, the original with the class's logit lowered by 30 (hidden, not "
             "removed), the gold model and a model retrained with another seed. Random requests: the recovery of "
             "held-out samples by the same head in brackets.", "",
             "| request | seed | original | hidden class | gold | retrained (other seed) |", "|---|---|---|---|---|---|"]
    for r in rows:
        cell = lambda k: (f"{r[k]:.3f}" + (f" ({r[k + '_heldout']:.3f})" if k + "_heldout" in r else "")  # noqa
                          if k in r else "-")
        lines.append(f"| {r['task']} {r['kind']} | {r['seed']} | {cell('original')} | {cell('hidden_class_30')} | "
                     f"{cell('gold')} | {cell('retrained')} |")
    return lines + [""]


def gallery_markdown(gallery) -> list:
    from erasus.testing import ENTRY_POINTS

    c, m = gallery["rows"], gallery["meta"]
    lines = _heading("C. The cheat gallery", m) + [
             "Every cheat must FAIL (or be INCONCLUSIVE where the request is too small to tell), the model "
             "retrained with another seed must PASS (or be INCONCLUSIVE where too small). Each cell counts the "
             "verdicts over seeds: P = PASS, F = FAIL, I = INCONCLUSIVE, p = PARTIAL. Entry points, each given the "
             "untouched original for its power check: `UnlearningBenchmark` with a retrained model (retrain) and "
             "with held-out data only (holdout), `UnlearningVerifier` with and without the retrained model, "
             "`UnlearningVerificationSuite`. Models: `erasus.testing.cheat_gallery`.", ""]
    head = "| request | model | " + " | ".join(ENTRY_POINTS) + " |"
    lines += [head, "|---" * (len(ENTRY_POINTS) + 2) + "|"]
    abbrev = {"PASS": "P", "FAIL": "F", "INCONCLUSIVE": "I", "PARTIAL": "p"}
    bad = 0
    for task, kind, size in dict.fromkeys((r["task"], r["kind"], r["size"]) for r in c):
        rs = [r for r in c if (r["task"], r["kind"], r["size"]) == (task, kind, size)]
        req = f"{task} {'class' if kind == 'class' else f'{size} random'}"
        for model in dict.fromkeys(r["model"] for r in rs):
            cells = []
            for e in ENTRY_POINTS:
                vs = [r[e] for r in rs if r["model"] == model]
                counts = {abbrev[v]: vs.count(v) for v in dict.fromkeys(vs)}
                cells.append(" ".join(f"{n}{k}" for k, n in counts.items()))
                bad += sum(v == "PASS" for v in vs) if model != "retrained" else sum(v in ("FAIL", "PARTIAL")
                                                                                    for v in vs)
            lines.append(f"| {req} | {model} | " + " | ".join(cells) + " |")
    n_seeds = len({r["seed"] for r in c})
    lines += ["", f"{n_seeds} seeds per request. Verdicts against the rule (a cheat PASSing, the retrained model "
                  f"FAILing or PARTIAL): **{bad}**.", ""]
    return lines


def markdown(a, b, meta, c=None, refit=None) -> str:
    lines = ["# Verification benchmark", "",
             f"`{meta['command']}` on {meta['date']} ({meta['machine']}; torch {meta['torch']}); "
             f"{meta['total_min']:.1f} min.", ""]
    if a:
        lines += ["## A. Membership inference on overfit Fashion-MNIST models", "",
                  f"{a['n_models']} models of the protocol's CNN recipe ({a['epochs']} epochs, no augmentation), each "
                  f"trained on a random half of {a['population']} Fashion-MNIST training images (each image IN for "
                  f"exactly half of them; {a['shadow_train_seconds'] / 60:.1f} min of training). Leave-one-out: every "
                  "model is the target once, the others are its shadows / references; mean over targets. LiRA "
                  "as the authors' code computes it (`erasus.metrics.lira.lira_scores`: median, ddof 0, their fixed "
                  "variance, a two-sided offline test), and the one-sided offline test the paper describes.", "",
                  "| attack | AUC | TPR @ 0.1% FPR | TPR @ 1% FPR |", "|---|---|---|---|"]
        for k, v in a["attacks"].items():
            lines.append(f"| {k} | {v['auc']:.3f} | {100 * v['tpr@0.1%fpr']:.2f}% | {100 * v['tpr@1%fpr']:.2f}% |")
        base = a["attacks"]["loss threshold"]
        lira = a["attacks"]["LiRA online"]
        lines += ["", f"LiRA online vs the loss threshold: AUC {lira['auc']:.3f} vs {base['auc']:.3f}; TPR at 0.1% FPR "
                      f"{100 * lira['tpr@0.1%fpr']:.2f}% vs {100 * base['tpr@0.1%fpr']:.2f}% "
                      f"({lira['tpr@0.1%fpr'] / max(base['tpr@0.1%fpr'], 1e-9):.1f}x).", ""]
    if b:
        lines += ["## B. Attacks on unlearned models (Fashion-MNIST protocol, seed 0)", "",
                  "Forget-set accuracy (%) of each model before and after each attack; the retrained row is the "
                  "reference: an unlearned model should respond to every attack as the retrained model does. "
                  "relearn: 30 Adam steps (lr 1e-3) on 10% of the forget set, accuracy on the other 90%; "
                  "retain fine-tune: the same steps on retain data only; int8 / int4: symmetric per-tensor weight "
                  "quantization; probe: logistic-regression probe for the forget labels on frozen penultimate "
                  "features. Δ: mean |difference| to the retrained row over the attack columns (points).", ""]
        for scenario in dict.fromkeys(r["scenario"] for r in b):
            rs = [r for r in b if r["scenario"] == scenario]
            gold = next(r for r in rs if r["method"] == "retrain")
            lines += [f"### {scenario}", "", "| method | " + " | ".join(lab for _, lab in ATTACK_KEYS) + " | Δ |",
                      "|---" * (len(ATTACK_KEYS) + 2) + "|"]
            for r in rs:
                cols = [k for k, _ in ATTACK_KEYS[1:] if k in r and k in gold]
                d = np.mean([abs(r[k] - gold[k]) for k in cols]) * 100 if cols else float("nan")
                lines.append(f"| {r['method']} | " + " | ".join(
                    f"{100 * r[k]:.1f}" if k in r else "-" for k, _ in ATTACK_KEYS) + f" | {d:.1f} |")
            lines.append("")
    if c:
        lines += gallery_markdown(c)
    if refit:
        lines += refit_markdown(refit)
    return "\n".join(lines)


def merge_previous(path: Path, a, b, c=None, refit=None):
    """Keep what an earlier run measured: the other part when only one part ran, and the
    rows of strategies this run did not measure."""
    if not path.exists():
        return a, b, c, refit
    old = json.loads(path.read_text())
    if refit is None:
        refit = old.get("refit")
    if a is None:
        a = old.get("membership")
    if c is None:
        c = old.get("gallery")
    if old.get("attacks"):
        new = {(r["scenario"], r["method"]) for r in (b or [])}
        kept = [r for r in old["attacks"] if (r["scenario"], r["method"]) not in new]
        b = kept + (b or [])
        order = {"retrain": 0, "original": 1}
        b.sort(key=lambda r: (r["scenario"], order.get(r["method"], 2)))
    return a, b, c, refit


def main(argv=None):
    from erasus.core.registry import get, list_registered, resolve
    from erasus.experiments import run_meta

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", default="ab", help="any of a, b, c, r (e.g. ab, c)")
    p.add_argument("--gallery-seeds", type=int, default=5)
    p.add_argument("--shadows", type=int, default=16)
    p.add_argument("--population", type=int, default=8000)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--scenarios", default="random,class")
    p.add_argument("--strategies", default="all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=str(HERE / "cache"))
    p.add_argument("--out", default=str(HERE / "results"))
    from erasus.experiments.benchargs import parse_benchmark_args
    from erasus.experiments.tracking import track_results

    args = parse_benchmark_args(p, argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    names = [n for n in list_registered("strategy", family="classifier")
             if not getattr(get("strategy", n), "needs_training_records", False)] if args.strategies == "all" else [
        resolve("strategy", s) for s in args.strategies.split(",")]
    t0 = time.perf_counter()
    a = part_a(args, cache) if "a" in args.part else None
    b = part_b(args, cache, names) if "b" in args.part else None
    c = part_c(args, cache) if "c" in args.part else None
    refit = part_r(args, cache) if "r" in args.part else None
    meta = run_meta("verification.py", argv, total_min=(time.perf_counter() - t0) / 60)
    if c is not None:
        c = {"meta": meta, "rows": c}
    if refit is not None:
        refit = {"meta": meta, "rows": refit}
    a, b, c, refit = merge_previous(Path(args.out) / "verification.json", a, b, c, refit)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from erasus.utils.io import atomic_write_text

    atomic_write_text(out / "verification.json", json.dumps({"meta": meta, "membership": a, "attacks": b,
                                                             "gallery": c, "refit": refit}, indent=1))
    md = markdown(a, b, meta, c, refit)
    atomic_write_text(out / "verification.md", md)
    track_results(args, "verification", meta, [], [out / "verification.md", out / "verification.json"])
    print(md)


if __name__ == "__main__":
    main()
