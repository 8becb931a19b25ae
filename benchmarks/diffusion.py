"""Concept erasure on a text-to-image model trained from scratch on Fashion-MNIST, against a
model retrained without the concept.

No pretrained weights can be downloaded here, so the script trains its own: a diffusers
``UNet2DConditionModel`` with cross-attention and a small CLIP text encoder
(``erasus.models.diffusion.toy_text_to_image``), prompts "a photo of a <class>", classifier-free
guidance; a judge (a small CNN trained on the real images) says which class a generated image
shows. Per seed: the original model, a gold model retrained without the erased class, and
every diffusion method at its defaults (``DiffusionUnlearner.erase``). Reported per method:
erasure rate (share of images generated for the erased class that the judge no longer assigns
to it), retention (judged accuracy on the other nine classes), KID of the other classes'
images to the original model's (the judge's penultimate features, ``torchmetrics`` when
installed), the erasure left after three attacks (an UnlearnDiffAtk-style prompt search, concept
inversion from real images of the class, relearning on them; ``erasus.models.diffusion_attacks``)
next to the same attacks on the retrained model, and time against retraining. Models are
cached in ``--cache``.

    python benchmarks/diffusion.py                       # a GPU: 3 seeds, full size
    python benchmarks/diffusion.py --preset cpu          # a CPU: 16×16, one seed, about an hour
    python benchmarks/diffusion.py --small --device cpu  # minutes on a CPU: a smoke run, not a result
    python benchmarks/diffusion.py --preset cpu --attention-figure --methods uce,sld,concept_ablation,esd,salun_generation
                                                         # where each model attends to "sneaker" (seed 0, minutes)

Writes ``results/<name>.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]


#: a smoke run checks the pipeline, not the methods: a few steps each
QUICK = {"esd": {"iterations": 5, "ddim_steps": 5}, "concept_ablation": {"iterations": 5, "ddim_steps": 5, "anchor_images": 8},
         "salun_generation": {"iterations": 5, "ddim_steps": 5, "images_per_prompt": 2},
         "adv_unlearn": {"iterations": 5, "ddim_steps": 5, "warmup": 2, "attack_steps": 2}}


def prompt(c: int) -> str:
    return f"a photo of a {CLASSES[c]}"


def image_data(train: bool, n: int, exclude=None, seed: int = 0, size: int = 32):
    """Fashion-MNIST in [-1, 1], padded to 32×32 or (``size`` 16) area-averaged to 16×16, with its
    prompts (``exclude``: a class left out)."""
    from erasus.data.vision import load_fashion_mnist

    ds = load_fashion_mnist(train=train, n=n, seed=seed)
    x, y = ds.tensors
    keep = y != exclude if exclude is not None else torch.ones_like(y, dtype=torch.bool)
    x = (F.pad(x[keep], (2, 2, 2, 2)) if size == 32 else F.interpolate(x[keep], size=size, mode="area")) * 2 - 1
    return list(zip(x, [prompt(int(c)) for c in y[keep]]))


def train_model(data, args, seed: int, tag: str, device: str):
    """The text-to-image model (cached as a folder per tag and seed)."""
    from torch.utils.data import DataLoader

    from erasus.models.diffusion import TextToImage, toy_text_to_image, train_text_to_image

    shape = "" if (args.image_size, args.attention) == (32, "high") else f"-{args.image_size}px-att{args.attention}"
    path = Path(args.cache) / f"t2i-{tag}{shape}-w{args.width}-s{args.train_steps}-b{args.batch}-seed{seed}"
    if (path / "erasus_text_to_image.json").exists():
        return TextToImage.from_pretrained(path).to(device), json.loads((path / "train_s.json").read_text())["s"]
    model = toy_text_to_image([prompt(c) for c in range(10)], image_size=args.image_size, channels=1, width=args.width,
                              num_train_timesteps=1000, seed=seed, attention_at=args.attention).to(device)
    t0 = time.perf_counter()
    loader = DataLoader(data, batch_size=args.batch, shuffle=True, generator=torch.Generator().manual_seed(seed))
    train_text_to_image(model, loader, steps=args.train_steps, lr=args.lr, seed=seed, progress=True)
    s = time.perf_counter() - t0
    model.save_pretrained(path)
    (path / "train_s.json").write_text(json.dumps({"s": s}))
    return model, s


def train_judge(device: str, cache: Path, small: bool, size: int = 32):
    from erasus.data.vision import load_fashion_mnist
    from erasus.models.training import train_classifier
    from erasus.models.zoo import small_cnn
    from erasus.utils.io import load_state_dict, save_state_dict

    judge = small_cnn(width=32, image_size=28 if size == 32 else size)
    path = cache / f"judge-{'small' if small else 'full'}{'' if size == 32 else f'-{size}px'}.safetensors"
    if path.exists():
        judge.load_state_dict(load_state_dict(path))
    else:
        ds = load_fashion_mnist(train=True, n=2000 if small else None)
        if size != 32:
            ds = torch.utils.data.TensorDataset(F.interpolate(ds.tensors[0], size=size, mode="area"), ds.tensors[1])
        loader = torch.utils.data.DataLoader(ds, batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(0))
        train_classifier(judge, loader, epochs=1 if small else 10, lr=1e-3, seed=0)
        save_state_dict(judge.state_dict(), path)
    return judge.to(device).eval()


@torch.no_grad()
def generate_all(model, args, seed: int):
    """``{class: images}`` generated for every class prompt (in [-1, 1])."""
    out = {}
    for c in range(10):
        imgs = []
        for start in range(0, args.n_images, 100):
            n = min(100, args.n_images - start)
            imgs.append(model.generate([prompt(c)] * n, seed=seed * 1000 + c * 10 + start, guidance_scale=args.guidance,
                                       steps=args.sample_steps).cpu())
        out[c] = torch.cat(imgs)
    return out


@torch.no_grad()
def judged(judge, images, device):
    """The judge's predictions and penultimate features for generated images."""
    from erasus.models import wrap

    x = judge_input(images).to(device)
    a = wrap(judge)
    batch = (x, torch.zeros(len(x), dtype=torch.long, device=device))
    return a.logits(batch).argmax(1).cpu(), a.features(batch).cpu()


def judge_input(images):
    """Generated images in [-1, 1] as the judge sees real ones: [0, 1], 32×32 cropped back to 28×28."""
    x = images[:, :, 2:30, 2:30] if images.shape[-1] == 32 else images
    return ((x + 1) / 2).clamp(0, 1)


class JudgeFn(torch.nn.Module):
    """The judge as the attacks call it: generated 32×32 images in [-1, 1] to class logits."""

    def __init__(self, judge):
        super().__init__()
        self.judge = judge

    def forward(self, images):
        return self.judge(judge_input(images).to(next(self.judge.parameters()).device))


def attack_settings(small: bool):
    """The attacks' settings: the papers' (40 steps of prompt search, 1,000 → 300 steps of
    inversion for a small model, 50 relearning steps), or a few steps for a smoke run."""
    if small:
        return {"prompt_attack": {"n_targets": 2, "steps": 2, "check_every": 1}, "concept_inversion": {"steps": 2},
                "relearning": {"steps": 2}}
    return {"prompt_attack": {"n_targets": 20}, "concept_inversion": {"steps": 300}, "relearning": {"steps": 50}}


def attacks(model, judge, args, seed, erase, images):
    """Erasure left after each attack (``erasus.models.diffusion_attacks``)."""
    from erasus.models.diffusion_attacks import concept_inversion, prompt_attack, relearning_attack

    kw = attack_settings(args.small)
    common = dict(guidance_scale=args.guidance, sample_steps=args.sample_steps, seed=seed)
    n = min(args.n_images, 100)
    pa = dict(kw["prompt_attack"])
    k = pa.pop("n_targets")
    return {"prompt_attack": prompt_attack(model, judge, prompt(erase), erase, images[:k], **common, **pa).erasure,
            "concept_inversion": concept_inversion(model, judge, erase, images, template="a photo of a {}", n_images=n,
                                                   **common, **kw["concept_inversion"]).erasure,
            "relearning": relearning_attack(model, judge, prompt(erase), erase, images, n_images=n, **common,
                                            **kw["relearning"]).erasure}


def kid(real_feats, fake_feats):
    """KID of the judge's features (``erasus.metrics.diffusion.kid``); NaN without torchmetrics."""
    from erasus.core.exceptions import ConfigError
    from erasus.metrics.diffusion import kid as kid_metric

    try:
        return kid_metric(real_feats, fake_feats)[0]
    except ConfigError:
        return float("nan")


def evaluate(model, judge, args, seed, erase, ref_feats, device):
    gen = generate_all(model, args, seed)
    acc, feats = {}, []
    for c, imgs in gen.items():
        pred, f = judged(judge, imgs, device)
        acc[c] = float((pred == c).float().mean())
        if c != erase:
            feats.append(f)
    feats = torch.cat(feats)
    return {"erasure": 1 - acc[erase], "retention": float(np.mean([acc[c] for c in range(10) if c != erase])),
            "per_class": acc, "kid": kid(ref_feats, feats) if ref_feats is not None else 0.0}, feats


#: ``--preset cpu``: a model 2 CPU cores train in about 12 minutes (4.5 steps/s); sampled at guidance 1.5 (the
#: judge gave the original model's images their class 74% of the time at 1.5, 65% at 2, 48% at 3, 25% at 5)
CPU_PRESET = (("--image-size", 16), ("--attention", "low"), ("--width", 32), ("--train-steps", 3000), ("--batch", 64),
              ("--seeds", "0"), ("--n-images", 100), ("--guidance", 1.5), ("--name", "diffusion-cpu"))


def apply_preset(args, argv) -> None:
    """``--preset cpu``'s settings, where the command line does not set them itself."""
    if args.preset != "cpu":
        return
    for flag, value in CPU_PRESET:
        if not any(a == flag or a.startswith(flag + "=") for a in argv):
            setattr(args, flag[2:].replace("-", "_"), value)


def name_variant(args, argv) -> None:
    """``--image-guard`` and ``--bare`` write results of their own (``<name>-image-guard``,
    ``<name>-bare``) unless ``--name`` is given: the results file resumes the rows it holds, and
    those were measured otherwise."""
    if any(a == "--name" or a.startswith("--name=") for a in argv):
        return
    for flag in ("image_guard", "bare"):
        if getattr(args, flag, False):
            args.name += "-" + flag.replace("_", "-")


def main(argv=None):
    from erasus.core import list_registered
    from erasus.experiments import hardware, run_meta
    from erasus.unlearners import DiffusionUnlearner
    from erasus.unlearners.diffusion_unlearner import image_guard_refused

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (the GPU where one is visible), cpu, cuda or cuda:N")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--erase", type=int, default=7, help="the class to erase (7: sneaker)")
    p.add_argument("--methods", default="all")
    p.add_argument("--train-steps", type=int, default=20000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--n-images", type=int, default=200, help="images generated per class")
    p.add_argument("--sample-steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--image-size", type=int, choices=(32, 16), default=32,
                   help="32: Fashion-MNIST padded; 16: area-averaged to 16×16 (with --attention low, CPU-sized)")
    p.add_argument("--attention", choices=("high", "low"), default="high",
                   help="the UNet's attention at the full resolution or at the half one (toy_text_to_image)")
    p.add_argument("--preset", choices=("gpu", "cpu"), default="gpu",
                   help="cpu: 16×16 images, attention at 8×8, width 32, 3,000 training steps of batch 64, seed 0, 100 "
                        "images per class (about an hour per seed on 2 cores; results in diffusion-cpu.md)")
    p.add_argument("--small", action="store_true",
                   help="a smoke run that checks the pipeline end to end (1,000 images, 20 steps of batch 16, 10 images "
                        "per class): minutes on a CPU, no result")
    p.add_argument("--image-guard", action="store_true",
                   help="erase(image_guard=True) for the methods trained under the concept rule: the rule also judges "
                        "the preserved classes' images at every check (results in <name>-image-guard)")
    p.add_argument("--bare", action="store_true",
                   help="the bare call, DiffusionUnlearner(model, strategy=m).erase(prompt), with no prompts to preserve, "
                        "no seed and no guidance given: what a user gets from the defaults (results in <name>-bare)")
    p.add_argument("--attention-figure", action="store_true",
                   help="instead of the table: for the first seed, where each model's UNet attends to the erased "
                        "class's word (cross_attention_maps) for the original, the retrained model and each method "
                        "erased at its defaults (results in <name>-attention: .png, .md, .json)")
    p.add_argument("--cache", default=str(HERE / "cache"))
    from erasus.experiments.benchargs import (add_results_arguments, benchmark_device, parse_benchmark_args, render_only,
                                              results_file)

    add_results_arguments(p, HERE / "results", "diffusion", cells="(seed, method)")
    from erasus.experiments.tracking import track_results

    args = parse_benchmark_args(p, argv)
    args.device = str(benchmark_device(p, args.device))
    apply_preset(args, argv if argv is not None else sys.argv[1:])
    name_variant(args, argv if argv is not None else sys.argv[1:])
    if render_only(args, lambda rows, meta: markdown(meta, rows, args.erase)):
        return
    if args.small:
        args.train_steps, args.batch, args.n_images, args.width, args.sample_steps = 20, 16, 10, 16, 5
    n_train = 1000 if args.small else None
    methods = list_registered("strategy", family="diffusion") if args.methods == "all" else args.methods.split(",")
    if args.methods == "all":  # the concept-erasure methods (not the model-agnostic ones)
        from erasus.core.registry import get

        methods = [m for m in methods if tuple(get("strategy", m).supports) == ("diffusion",)]
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    meta = run_meta("diffusion.py", argv, hardware=hardware(args.device), args=vars(args))
    if args.attention_figure:
        return attention_figure(args, methods, meta, n_train)
    results = results_file(args, lambda r: (r["seed"], r["method"]), lambda rows, meta: markdown(meta, rows, args.erase),
                           meta)
    judge = train_judge(args.device, Path(args.cache), args.small, args.image_size)
    jf = JudgeFn(judge)
    for seed in [int(s) for s in args.seeds.split(",")]:
        if all(results.done((seed, m)) for m in ["original", "retrain", *methods]) or results.out_of_time():
            continue
        size = args.image_size
        original, train_s = train_model(image_data(True, n_train, size=size), args, seed, "original", args.device)
        kept = results.kept((seed, "retrain"))
        if kept is not None:                  # --resume: the retrained model's row (and time) are in the file
            retrain_s = kept["time_s"]
        else:
            gold, retrain_s = train_model(image_data(True, n_train, exclude=args.erase, size=size), args, seed,
                                          f"without{args.erase}", args.device)
        # real images of the erased class (the test split) for concept inversion and relearning
        real = torch.stack([x for x, p in image_data(False, 2000, seed=seed, size=size)
                            if p == prompt(args.erase)][:32]).to(args.device)
        ref, ref_feats = evaluate(original, judge, args, seed, args.erase, None, args.device)
        print(f"seed {seed}: the original's erasure {ref['erasure']:.3f}, retention {ref['retention']:.4f}", flush=True)
        if not results.done((seed, "original")):
            results.add({"seed": seed, "method": "original", "time_s": train_s, **ref,
                         **attacks(original, jf, args, seed, args.erase, real)})
            print(results.rows[-1], flush=True)
        if not results.done((seed, "retrain")):
            g, _ = evaluate(gold, judge, args, seed, args.erase, ref_feats, args.device)
            results.add({"seed": seed, "method": "retrain", "time_s": retrain_s, **g,
                         **attacks(gold, jf, args, seed, args.erase, real)})
            print(results.rows[-1], flush=True)
        for name in methods:
            if results.done((seed, name)) or results.out_of_time():
                continue
            t1 = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    quick = QUICK.get(name, {})
                    unl = DiffusionUnlearner(original, strategy=name, strategy_kwargs=quick if args.small else None)
                    # SLD's safety concept is a description the prompt is steered away from ("sneaker"); the
                    # prompt itself would give ε_p = ε_S, no steering, by its construction. The other classes
                    # are preserved prompts for every method: a preservation term where the method has one,
                    # and what the fine-tuning methods' stopping rule guards (ConceptStopping)
                    keep = [prompt(c) for c in range(10) if c != args.erase]
                    guard = args.image_guard and image_guard_refused(unl.strategy) is None
                    concept = CLASSES[args.erase] if name == "sld" else prompt(args.erase)
                    res = (unl.erase(concept, progress=False) if args.bare else
                           unl.erase(concept, preserve=keep, progress=False, seed=seed, guidance_scale=args.guidance,
                                     image_guard=guard))
                dt = time.perf_counter() - t1 - res.timings.get("check_s", 0.0)  # the method's time, not erase's check
                r, _ = evaluate(unl.model, judge, args, seed, args.erase, ref_feats, args.device)
                row = {"seed": seed, "method": name, "time_s": dt, "speedup": retrain_s / dt, "steps": res.steps,
                       "stop": res.stop_reason, "concept_left": res.metrics.get("concept_left"),
                       "concept_drawn": res.metrics.get("concept_drawn"), "preserve_drawn": res.metrics.get("preserve_drawn"),
                       **r,
                       **attacks(unl.model, jf, args, seed, args.erase, real)}
            except Exception as e:  # a method that fails is a row that says so
                row = {"seed": seed, "method": name, "error": f"{type(e).__name__}: {e}"[:300]}
            results.add(row)
            print(row, flush=True)
    written = results.finish()
    track_results(args, args.name, results.meta, results.all_rows(), [written, written.with_suffix('.json')])
    print(written.read_text())


def attention_figure(args, methods, meta, n_train) -> None:
    """Where each model's UNet attends to the erased class's word in its prompt
    (:func:`erasus.visualization.cross_attention_maps`: one noise prediction on seeded noise,
    each cross-attention layer's map of the word's tokens resized to the latent and averaged),
    under the image it draws: the original, the retrained model and every method erased at its
    defaults as the table erases it, for the first seed. Writes ``<name>-attention.png`` and
    the mean attention to the word per model (``.md``, ``.json``)."""
    from erasus.unlearners import DiffusionUnlearner
    from erasus.utils.io import atomic_write_text
    from erasus.visualization import cross_attention_data, cross_attention_maps

    seed = int(args.seeds.split(",")[0])
    word, text = CLASSES[args.erase], prompt(args.erase)
    keep = [prompt(c) for c in range(10) if c != args.erase]
    original, _ = train_model(image_data(True, n_train, size=args.image_size), args, seed, "original", args.device)
    gold, _ = train_model(image_data(True, n_train, exclude=args.erase, size=args.image_size), args, seed,
                          f"without{args.erase}", args.device)
    models, stops = {"original": original, "retrained": gold}, {}
    for name in methods:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            unl = DiffusionUnlearner(original, strategy=name, strategy_kwargs=QUICK.get(name) if args.small else None)
            res = unl.erase(word if name == "sld" else text, preserve=keep, progress=False, seed=seed,
                            guidance_scale=args.guidance)
        models[name], stops[name] = unl.model, f"{res.stop_reason} ({time.perf_counter() - t0:.0f} s)"
        print(name, stops[name], flush=True)
    stem = Path(args.out) / f"{args.name}-attention"
    maps = cross_attention_data(models, text, word, seed=seed)
    cross_attention_maps(models, text, word, path=stem, seed=seed, steps=args.sample_steps,
                         guidance_scale=args.guidance, overwrite=True)
    rows = [{"model": k, "mean_attention": float(v.mean()), "max_attention": float(v.max()),
             "stop": stops.get(k, "")} for k, v in maps.items()]
    meta = {**meta, "seed": seed, "prompt": text, "word": word}
    atomic_write_text(stem.with_suffix(".json"), json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [f"# Where each model attends to '{word}' in \"{text}\"", "",
             f"Command: `{meta.get('command', '')}`; {meta.get('hardware', '')}; seed {seed}.", "",
             f"![cross-attention maps]({stem.name}.png)", "",
             f"Top row: the image each model draws for \"{text}\" (same seed); bottom row: the attention each position "
             f"of the latent gives the tokens of '{word}', averaged over the cross-attention layers (one noise "
             "prediction at the middle timestep on seeded noise; one colour scale for all models). SLD changes no "
             "weight, so its map is the original's: it steers the sampling instead.", "",
             "| model | mean attention to the word | max | how it was erased |", "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['mean_attention']:.3f} | {r['max_attention']:.3f} | {r['stop'][:160]} |" for r in rows]
    atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


def markdown(meta, rows, erase) -> str:
    def pm(vals, pct=True):
        v = np.asarray([x for x in vals if x is not None and np.isfinite(x)], dtype=float)
        if not len(v):
            return "-"
        k = 100 if pct else 1
        return f"{k * v.mean():.1f} ± {k * v.std():.1f}" if pct else f"{v.mean():.4f} ± {v.std():.4f}"

    lines = [f"# Concept erasure: {CLASSES[erase]} from a text-to-image model trained on Fashion-MNIST", "",
             f"Command: {' then '.join(f'`{c}`' for c in meta.get('runs', [meta['command']]))}; "
             f"{meta.get('hardware', meta.get('device'))}, torch {meta['torch']}; {meta['total_min']:.1f} min.", "",
             *([meta["note"], ""] if meta.get("note") else []),
             *(["The bare call: `DiffusionUnlearner(model, strategy=m).erase(prompt)`, nothing else given (no prompts "
                "to preserve, erase's own seed and guidance), so no stopping rule guarded the run and no check looked at "
                "the other classes. The original and the retrained model are the cached seed-0 models of diffusion-cpu.md.", ""]
               if meta.get("args", {}).get("bare") else []),
             "erasure: % of images generated for the erased class the judge no longer assigns to it; retention: % of "
             "the other classes' images judged as their class; KID of the other classes' images to the original "
             "model's (judge features). Mean ± std over seeds.", "",
             "After each attack, the erasure left (%): prompt search (UnlearnDiffAtk-style), concept inversion, "
             "relearning; a method is broken by an attack when its erasure after it is more than 10 points below the "
             "retrained model's.", "",
             "steps: the fine-tuning steps each seed ran (its stopping rule's choice; the step it kept is in the stop "
             "reason below; rows of runs that did not record them have none); concept_left: how much of "
             "the concept's conditioning the weights keep by erase's own check (1: as before, 0: the prompt acts as its "
             "anchor); seeds: the seeds a row averages.", "",
             "| method | erasure (%) | retention (%) | KID | after prompt search | after inversion | after relearning | "
             "broken by | steps | concept_left | time (s) | seeds | errors |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    gold = {a: np.mean([r[a] for r in rows if r["method"] == "retrain" and a in r] or [np.nan])
            for a in ("prompt_attack", "concept_inversion", "relearning")}
    rows = sorted(rows, key=lambda r: r["seed"])   # rows rerun with --merge come last in the file
    for name in methods_in_order(rows):
        rs = [r for r in rows if r["method"] == name]
        ok = [r for r in rs if "error" not in r]
        after = {a: [r[a] for r in ok if a in r] for a in gold}
        broken = [a for a, v in after.items() if v and name not in ("retrain",) and np.mean(v) < gold[a] - 0.1]
        steps = [r["steps"] for r in ok if r.get("steps") is not None]
        lines.append(f"| {name} | {pm([r['erasure'] for r in ok])} | {pm([r['retention'] for r in ok])} | "
                     f"{pm([r['kid'] for r in ok], pct=False)} | "
                     + " | ".join(pm(after[a]) for a in gold)
                     + f" | {', '.join(broken) or '-'} | {'/'.join(str(n) for n in steps) or '-'} | "
                     f"{pm([r.get('concept_left') for r in ok], pct=False)} | "
                     f"{np.mean([r['time_s'] for r in ok]) if ok else float('nan'):.1f} | "
                     f"{','.join(str(r['seed']) for r in ok) or '-'} | "
                     f"{'; '.join(r['error'] for r in rs if 'error' in r)} |")
    lines += ["", criterion(rows)]
    stops = [r for r in rows if r.get("stop")]
    if stops:
        lines += ["", "Why each run stopped:", ""] + [f"- {r['method']}, seed {r['seed']}: {r['stop']}" for r in stops]
    return "\n".join(lines) + "\n"


def methods_in_order(rows):
    """The methods of ``rows``: the original and the retrained model first, then as they first
    appear."""
    present = {r["method"] for r in rows}
    return [m for m in dict.fromkeys(["original", "retrain"] + [r["method"] for r in rows]) if m in present]


def criterion(rows, erasure=0.9, points=5.0) -> str:
    """Which methods reach ``erasure`` on average over their seeds with mean retention within
    ``points`` of the original's (measured at the same seeds)."""
    orig = {r["seed"]: r["retention"] for r in rows if r["method"] == "original" and "error" not in r}
    met, near = [], []
    for name in methods_in_order(rows):
        ok = sorted((r for r in rows if r["method"] == name and "error" not in r and r["seed"] in orig),
                    key=lambda r: r["seed"])
        if name in ("original", "retrain") or not ok:
            continue
        e = np.mean([r["erasure"] for r in ok])
        gaps = [100 * (orig[r["seed"]] - r["retention"]) for r in ok]
        each = f"; seeds {'/'.join(f'{g:+.1f}' for g in gaps)}" if len(gaps) > 1 else ""
        (met if e >= erasure and np.mean(gaps) <= points else near).append(
            f"{name} ({100 * e:.1f}%, {np.mean(gaps):+.1f} points{each})")
    return (f"At least {100 * erasure:.0f}% erasure with retention at most {points:g} points below the original's "
            f"(mean over seeds; erasure, retention points lost, and lost per seed): {', '.join(met) or 'none'}; "
            f"not: {', '.join(near) or 'none'}.")


if __name__ == "__main__":
    main()
