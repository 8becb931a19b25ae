"""A second toy protocol for the diffusion guards, built unlike the coloured squares of
tests/test_diffusion.py: 8×8 grayscale patterns (horizontal stripes, vertical stripes, a
checkerboard; two phases each), so no colour channel tells the concepts apart. It trains the
toy text-to-image model (600 steps), then erases "horizontal stripes" with each strategy at
its defaults, preserving the other two, and prints what a pattern judge sees afterwards, the
stop reason and the warnings. ``--shift prediction`` runs the fine-tuning methods under
``ConceptStopping(shift="prediction")`` instead of their default.

    .venv/bin/python scripts/diffusion_stripes_probe.py [strategy ...] [--shift prediction] [--image-guard]   # ~1 min + ~10 s each

Measured on 2026-12-07 (CPU): the original judged 0.56 / 0.78 / 0.09 (the checkerboard is
not learned in 600 steps); the model-agnostic losses stopped at step 5 and kept the original,
SSD and task arithmetic were undone, neuron pruning kept (concept_left 0.89, warned), UCE
0.41 / 0.81 / 0.09, ESD 0.69 / 0.00 / 0.00 with either shift (see ConceptStopping).

erase's image check (``self_judged``; concept_drawn / preserve_drawn, 1 = as the original):
UCE 0.07 / 0.93, no warning; ESD 0.00 / 0.00 (vertical stripes 0%, the checkerboard 14%),
SalUn 0.20 / 0.57 (the checkerboard) and concept ablation 0.00 / 0.43 (vertical stripes,
judged 0.78 → 0.53) warned that preserved prompts were damaged, where the stopping rule's
guard had held; neuron pruning 1.00 / 0.93 and gradient ascent 1.00 / 1.00 warned that the
concept is still drawn.

``--image-guard`` (erase(image_guard=True): the stopping rule judges the preserved prompts'
images at every check, keeping no step below 0.85 of the original's share): ESD 0.34 / 0.75 /
0.00 (219 s with the guard's images), concept ablation 0.34 / 0.75 / 0.06, SalUn stopped at its first check (read 0.77)
with the original.
"""
import argparse
import json
import time
import warnings

import torch
from torch.utils.data import DataLoader

from erasus.models.diffusion import toy_text_to_image, train_text_to_image
from erasus.unlearners import DiffusionUnlearner

PROMPTS = ["horizontal stripes", "vertical stripes", "a checkerboard"]
_H = (((torch.arange(8).view(8, 1) // 2) % 2) * 2 - 1).float().expand(8, 8)
TEMPLATES = torch.stack([_H, _H.t(), _H * _H.t()])
DEFAULT = ["gradient_ascent", "negative_gradient", "npo", "simnpo", "wga", "lora_unlearning", "ssd", "task_vector",
           "neuron_pruning", "uce", "esd"]


def pattern_data(n_per: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [((1.0 if k % 2 == 0 else -1.0) * TEMPLATES[c] + 0.1 * torch.randn(8, 8, generator=g)).unsqueeze(0)
            for c in range(3) for k in range(n_per)], [p for p in PROMPTS for _ in range(n_per)]


def judged(model, n: int = 32) -> dict:
    """Share of the images generated for each prompt whose largest |correlation| is its pattern."""
    out = {}
    for c, p in enumerate(PROMPTS):
        imgs = model.generate([p] * n, seed=1, guidance_scale=5.0, steps=20)
        scores = (imgs[:, 0].flatten(1) @ TEMPLATES.flatten(1).t()).abs()
        out[p] = round(float((scores.argmax(1) == c).float().mean()), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("strategies", nargs="*", default=DEFAULT)
    ap.add_argument("--shift", choices=["default", "prediction"], default="default")
    ap.add_argument("--max-lr-growth", type=float, default=None,
                    help="the fine-tuning methods' ConceptStopping(max_lr_growth=...): 1 keeps the paper's rate")
    ap.add_argument("--image-guard", action="store_true",
                    help="erase(image_guard=True): the stopping rule judges the preserved prompts' images too")
    args = ap.parse_args()
    images, prompts = pattern_data()
    t = time.time()
    loader = DataLoader(list(zip(images, prompts)), batch_size=32, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    model = train_text_to_image(toy_text_to_image(prompts, channels=1), loader, steps=600, lr=2e-3)
    print(f"trained in {time.time() - t:.0f} s; original judged {judged(model)}", flush=True)
    for name in args.strategies:
        kw = {}
        if (args.shift == "prediction" or args.max_lr_growth) and name in ("esd", "concept_ablation", "salun",
                                                                            "adv_unlearn"):
            from erasus.strategies.diffusion import ConceptStopping

            rule = {"shift": "prediction"} if args.shift == "prediction" else {}
            if args.max_lr_growth:
                rule["max_lr_growth"] = args.max_lr_growth
            kw["stopping"] = ConceptStopping(**rule, images=args.image_guard)
        elif args.image_guard and name not in ("uce", "sld", "ssd", "task_vector", "neuron_pruning"):
            kw["image_guard"] = True
        t = time.time()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = DiffusionUnlearner(model, strategy=name).erase(PROMPTS[0], preserve=PROMPTS[1:], progress=False, **kw)
        drawn = {k: round(res.metrics[k], 2) for k in ("concept_left", "concept_drawn", "preserve_drawn") if k in res.metrics}
        print(name, json.dumps({"judged": judged(res.model), **drawn, "stop": res.stop_reason,
                                "seconds": round(time.time() - t),
                                "warnings": [str(w.message)[:200] for w in caught]}), flush=True)


if __name__ == "__main__":
    main()
