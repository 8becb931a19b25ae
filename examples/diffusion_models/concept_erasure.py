"""Concept erasure in a text-to-image diffusion model: a small diffusers UNet learns coloured
squares, "red" is erased with UCE (a closed-form edit of the cross-attention), and the erasure
is judged before and after a relearning attack. Real use: ``DiffusionUnlearner`` on a
``StableDiffusionPipeline`` (or its folder / Hub name) with ``strategy="esd"`` and the like.

    python examples/diffusion_models/concept_erasure.py [--out DIR]   # about a minute on a CPU
"""
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import out_dir  # noqa: E402

from erasus.models.diffusion import toy_text_to_image, train_text_to_image  # noqa: E402
from erasus.unlearners import DiffusionUnlearner  # noqa: E402

out = out_dir(__doc__.splitlines()[0])
torch.manual_seed(0)
colours = {"red": 0, "green": 1, "blue": 2}
squares = []
for name, ch in colours.items():
    img = -torch.ones(3, 8, 8)
    img[ch] = 1.0
    squares += [(img + 0.1 * torch.randn(3, 8, 8), f"a {name} square") for _ in range(64)]
t2i = toy_text_to_image([p for _, p in squares])
t2i = train_text_to_image(t2i, DataLoader(squares, batch_size=32, shuffle=True), steps=600)

unl = DiffusionUnlearner(t2i, strategy="uce")
unl.erase("a red square", preserve=["a green square", "a blue square"])
judge = lambda x: x.mean((2, 3))  # noqa: E731  (images -> class logits: the dominant colour)
for prompt in ("a red square", "a green square"):
    share = (judge(unl.generate([prompt] * 8, seed=0)).argmax(1) == colours["red"]).float().mean()
    print(f"{prompt!r}: {float(share):.2f} of the images judged red")
report = unl.verify(judge, colours["red"], {"a green square": 1, "a blue square": 2}, attacks=("relearning",),
                    steps=20)
print(report.to_markdown())
print(f"saved: {unl.save_pretrained(out / 'red-erased')}")
