"""CLIP unlearning on a small CLIP trained from scratch on Fashion-MNIST image-caption pairs,
against a CLIP retrained without the forgotten class.

No pretrained weights can be downloaded here, so the script trains its own: a
``transformers.CLIPModel`` (``erasus.models.clip.toy_clip``: a 2-layer ViT on 32×32 images, a
1-layer text encoder) on Fashion-MNIST images with the captions "a photo of a <class>". Per
seed: the original model, a model retrained without the erased class, and every CLIP method at
its defaults plus plain gradient ascent (both towers, no retain term), each called as a user
would (``VLMUnlearner(model, strategy).fit(forget_pairs, retain_pairs)``; gradient ascent gets
no retain data, which it does not use).

Reported: zero-shot accuracy on the test images of the forgotten class and of the others,
text→image and image→text recall@1 on the other classes' test pairs (does the alignment of
the rest survive: the specification's "forgetting cascade"), a linear probe's accuracy on the
forgotten class (is the class still in the image features), time against retraining, and each
model's verdict as a zero-shot classifier (``UnlearningBenchmark`` against the retrained CLIP; the
retrained CLIP against a second one from another initialisation).

    python benchmarks/clip.py --threads 1     # 3 seeds, 30 min on one CPU thread (the results file)
    python benchmarks/clip.py --small         # a smoke run (not a result)
    python benchmarks/clip.py --device cuda --name clip-cuda   # the same on a GPU (the default
                                              # where one is visible), the hardware in the results

Writes ``results/<name>.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

HERE = Path(__file__).resolve().parent
CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
METHODS = ["modality_decoupling", "contrastive_unlearning", "clip_nullspace", "gradient_ascent"]


def images(train: bool, n, seed: int):
    """Fashion-MNIST as 3×32×32 images in [-1, 1] and labels."""
    from erasus.data.vision import load_fashion_mnist

    x, y = load_fashion_mnist(train=train, n=n, seed=seed).tensors
    x = F.pad(x, (2, 2, 2, 2)) * 2 - 1
    return x.expand(-1, 3, -1, -1).contiguous(), y


def main(argv=None):
    from erasus.core.registry import get
    from erasus.experiments.runner import hardware
    from erasus.metrics.clip import probe_accuracy, retrieval_recall, zero_shot_accuracy
    from erasus.evaluation import UnlearningBenchmark
    from erasus.models.clip import CLIPAdapter, toy_clip, train_clip
    from erasus.unlearners import VLMUnlearner
    from erasus.utils.io import write_results

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--erase", type=int, default=7, help="the class to forget (7: sneaker)")
    p.add_argument("--n-train", type=int, default=10000)
    p.add_argument("--steps", type=int, default=1500, help="training steps of the original and retrained CLIPs")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: the GPU where one is visible)")
    p.add_argument("--small", action="store_true", help="1,000 images, 30 steps: checks the pipeline, not a result")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--name", default="clip")
    from erasus.experiments.benchargs import parse_benchmark_args
    from erasus.experiments.tracking import track_results

    args = parse_benchmark_args(p, argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from erasus.experiments.benchargs import benchmark_device

    device = benchmark_device(p, args.device)  # a CUDA device torch cannot see fails here, before any training
    if args.small:
        args.n_train, args.steps = 1000, 30
    methods = args.methods.split(",")
    for m in methods:
        get("strategy", m)  # an unknown name fails here, before any training
    t_all = time.perf_counter()
    rows = []
    captions = [f"a photo of a {c}" for c in CLASSES]
    for seed in [int(s) for s in args.seeds.split(",")]:
        torch.manual_seed(seed)
        base, tok = toy_clip(captions, image_size=32, width=64, embed=32, seed=seed)
        base.to(device)
        ids = tok(captions, padding="max_length", max_length=8, return_tensors="pt").input_ids
        x, y = images(True, args.n_train, seed)
        xt, yt = images(False, 2000, seed)
        fg, ft = y == args.erase, yt == args.erase
        pairs = lambda xs, ys, bs=128, shuffle=True: DataLoader(  # noqa: E731
            TensorDataset(xs, ids[ys]), batch_size=bs, shuffle=shuffle, generator=torch.Generator().manual_seed(seed))
        labelled = lambda xs, ys: DataLoader(TensorDataset(xs, ys), batch_size=256)  # noqa: E731

        def trained(keep, base=base):
            t0 = time.perf_counter()
            m = train_clip(copy.deepcopy(base).to(device), pairs(x[keep], y[keep]), steps=args.steps, lr=1e-3, seed=seed)
            return m, time.perf_counter() - t0

        original, train_s = trained(torch.ones_like(fg))
        retrained, retrain_s = trained(~fg)
        # the verdict's reference: the retrained model; the retrained model itself is judged
        # against a second one, trained without the class from another initialisation
        other, _ = trained(~fg, base=toy_clip(captions, image_size=32, width=64, embed=32, seed=seed + 100)[0])

        def measure(model, gold=retrained):
            a = CLIPAdapter(model, ids)
            model.eval()
            ret = retrieval_recall(a, pairs(xt[~ft], yt[~ft], bs=256, shuffle=False), ks=(1,))
            probe_x = torch.cat([x[fg][:500], x[~fg][:1500]])
            probe_y = torch.cat([y[fg][:500], y[~fg][:1500]])
            # the CLIP as a zero-shot classifier through the verification entry point: forgotten
            # training images, retained ones, the test images (unseen ones of every class)
            report = UnlearningBenchmark(protocol="general").evaluate(
                a, forget_data=labelled(probe_x[:500], probe_y[:500]), retain_data=labelled(probe_x[500:], probe_y[500:]),
                test_data=labelled(xt, yt), gold_model=CLIPAdapter(gold, ids), original_model=CLIPAdapter(original, ids))
            return {"forget_zs": zero_shot_accuracy(a, labelled(xt[ft], yt[ft])),
                    "retain_zs": zero_shot_accuracy(a, labelled(xt[~ft], yt[~ft])),
                    "retain_t2i@1": ret["t2i@1"], "retain_i2t@1": ret["i2t@1"],
                    "forget_probe": probe_accuracy(a, labelled(probe_x, probe_y), labelled(xt, yt),
                                                   classes=[args.erase], seed=seed),
                    "verdict": report.verdict}

        rows.append({"seed": seed, "method": "original", "time_s": train_s, **measure(original)})
        rows.append({"seed": seed, "method": "retrain", "time_s": retrain_s, **measure(retrained, gold=other)})
        print(rows[-2], rows[-1], flush=True)
        for name in methods:
            t1 = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    u = VLMUnlearner(original, strategy=name, class_prompts=ids, device=device)
                    u.fit(pairs(x[fg], y[fg], bs=64), None if name == "gradient_ascent" else pairs(x[~fg], y[~fg]),
                          progress=False)
                dt = time.perf_counter() - t1
                rows.append({"seed": seed, "method": name, "time_s": dt, "speedup": retrain_s / dt,
                             "steps": u.result_.steps, **measure(u.model)})
            except Exception as e:  # a method that fails is a row that says so
                rows.append({"seed": seed, "method": name, "error": f"{type(e).__name__}: {e}"[:300]})
            print(rows[-1], flush=True)
    meta = {"command": "python benchmarks/clip.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "hardware": hardware(device),
            "total_min": (time.perf_counter() - t_all) / 60, "args": vars(args)}
    md = markdown(meta, rows, args.erase)
    written = write_results(args.out, args.name, meta, rows, md)
    track_results(args, args.name, meta, rows, [written, written.with_suffix('.json')])
    print(md)


def markdown(meta, rows, erase) -> str:
    def pm(vals):
        v = np.asarray([x for x in vals if x is not None and np.isfinite(x)], dtype=float)
        return f"{100 * v.mean():.1f} ± {100 * v.std():.1f}" if len(v) else "-"

    keys = ["forget_zs", "retain_zs", "retain_t2i@1", "retain_i2t@1", "forget_probe"]
    lines = [f"# CLIP unlearning: forget {CLASSES[erase]} from a small CLIP trained on Fashion-MNIST", "",
             f"Command: `{meta['command']}`; {meta.get('hardware', 'CPU, ' + str(meta['threads']) + ' threads')}, "
             f"torch {meta['torch']}; "
             f"{meta['total_min']:.1f} min.", "",
             "Zero-shot accuracy (%) on the test images of the forgotten class and of the other nine (prompts \"a "
             "photo of a <class>\"); text→image and image→text recall@1 (%) on the other classes' test pairs (a caption "
             "or image of the same class counts); a linear probe's accuracy (%) on the forgotten class from the image "
             "features; time (s) of unlearning (of training, for the original and the retrained model). Every method "
             "at its defaults, called bare; mean ± std over seeds.", "",
             "Verdicts: `UnlearningBenchmark(protocol=\"general\")` on the model as a zero-shot classifier "
             "(`CLIPAdapter(model, class_prompts)`), forget set 500 training images of the class, retain set 1,500 "
             "of the others, the 2,000 test images as unseen data, the retrained model as the reference (the "
             "retrained model itself against a second one trained without the class from another initialisation), "
             "the original for the power check; one verdict per seed.", "",
             "| method | forget zero-shot | retain zero-shot | retain t2i@1 | retain i2t@1 | forget probe | time (s) | "
             "verdicts | errors |", "|---|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == name]
        ok = [r for r in rs if "error" not in r]
        t = f"{np.mean([r['time_s'] for r in ok]):.1f}" if ok else "-"
        verdicts = ", ".join(r["verdict"] for r in ok if r.get("verdict")) or "-"
        lines.append(f"| {name} | " + " | ".join(pm([r[k] for r in ok]) for k in keys) + f" | {t} | {verdicts} | "
                     + "; ".join(r["error"] for r in rs if "error" in r) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
