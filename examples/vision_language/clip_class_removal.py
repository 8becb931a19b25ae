"""CLIP: forget the image-text pairs of one class (here "red" among six coloured squares)
with modality decoupling, and measure zero-shot accuracy on the forgotten and the other
classes before and after. Real use: ``transformers.CLIPModel.from_pretrained(...)``.

    python examples/vision_language/clip_class_removal.py            # about a minute on a CPU
"""
import torch
from torch.utils.data import DataLoader, TensorDataset

from erasus.models.clip import toy_clip, train_clip
from erasus.unlearners import MultimodalUnlearner

hues = {"red": (1, -1, -1), "green": (-1, 1, -1), "blue": (-1, -1, 1), "yellow": (1, 1, -1),
        "cyan": (-1, 1, 1), "magenta": (1, -1, 1)}
captions = [f"a photo of a {h} square" for h in hues]
torch.manual_seed(0)
clip, tok = toy_clip(captions)
ids = tok(captions, padding="max_length", max_length=8, return_tensors="pt").input_ids
labels = torch.arange(6).repeat_interleave(64)
pixels = torch.stack([torch.tensor(hues[h], dtype=torch.float).view(3, 1, 1).expand(3, 16, 16)
                      for h in hues]).repeat_interleave(64, 0) + 0.5 * torch.randn(384, 3, 16, 16)
clip = train_clip(clip, DataLoader(TensorDataset(pixels, ids[labels]), batch_size=32, shuffle=True))

red = labels == 0
vlm = MultimodalUnlearner.from_model(clip, class_prompts=ids)
vlm.fit(DataLoader(TensorDataset(pixels[red], ids[labels[red]]), batch_size=16, shuffle=True),
        DataLoader(TensorDataset(pixels[~red], ids[labels[~red]]), batch_size=32, shuffle=True), progress=False)
zero_shot = {"red": DataLoader(TensorDataset(pixels[red], labels[red]), batch_size=64),
             "others": DataLoader(TensorDataset(pixels[~red], labels[~red]), batch_size=64)}
print(vlm.evaluate(DataLoader(TensorDataset(pixels[red], ids[labels[red]]), batch_size=64), zero_shot=zero_shot))
