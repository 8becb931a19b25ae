"""Small audio and video data built in code, for tests, examples and the audio/video benchmark
(no data set can be downloaded here): labelled tones, clips of an image moving across the
frame, and spoken-word-like spectrogram records for speech-to-text models. They are easy
by design; what they measure is whether a method forgets one class as a model retrained
without it does, not how hard the task is."""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch

from ..exceptions import DataError


def tones(n_per: int, seed: int = 0, freqs: Sequence[float] = (200, 450, 900, 1800), samples: int = 1600,
          rate: int = 16000, noise: float = 0.3) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(waveforms (N, samples), labels)``: class ``c`` is a sine at ``freqs[c]`` Hz with a random
    phase and amplitude (0.5 to 1.5) plus Gaussian noise, ``n_per`` per class."""
    if n_per < 1 or not freqs:
        raise DataError(f"Expected n_per >= 1 and at least one frequency, got {n_per!r} and {list(freqs)!r}.")
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / rate
    xs, ys = [], []
    for c, f in enumerate(freqs):
        phase = torch.rand(n_per, 1, generator=g) * 2 * math.pi
        amp = 0.5 + torch.rand(n_per, 1, generator=g)
        xs.append(amp * torch.sin(2 * math.pi * f * t + phase) + noise * torch.randn(n_per, samples, generator=g))
        ys += [c] * n_per
    return torch.cat(xs), torch.tensor(ys)


def moving_clips(images: Optional[torch.Tensor], labels: Optional[torch.Tensor] = None, n_per: int = 64,
                 seed: int = 0, frames: int = 4, size: int = 16, step: int = 2) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(clips (N, frames, 3, size, size), labels)``.

    With ``images`` (``(N, 1 or 3, h, w)`` in [0, 1], e.g. Fashion-MNIST) and their ``labels``:
    each clip shows its image, shrunk to half the frame, sliding in a random direction by
    ``step`` pixels a frame; the label is the image's. Without: four classes, a bright 4×4
    square moving down, up, right or left (``n_per`` each) — the label is the motion."""
    g = torch.Generator().manual_seed(seed)
    if images is None:
        moves = [(1, 0), (-1, 0), (0, 1), (0, -1)]
        v = 0.3 * torch.randn(len(moves) * n_per, frames, 3, size, size, generator=g)
        ys = torch.arange(len(moves)).repeat_interleave(n_per)
        for i, c in enumerate(ys.tolist()):
            dy, dx = moves[c]
            y0, x0 = (int(k) for k in torch.randint(4, 8, (2,), generator=g))
            for f in range(frames):
                v[i, f, :, y0 + step * f * dy:y0 + step * f * dy + 4, x0 + step * f * dx:x0 + step * f * dx + 4] += 2.0
        return v, ys
    if labels is None or len(labels) != len(images) or images.dim() != 4:
        raise DataError("Expected images (N, C, h, w) and as many labels.")
    half = size // 2
    small = torch.nn.functional.interpolate(images.float(), size=(half, half), mode="bilinear", align_corners=False)
    small = small.expand(-1, 3, -1, -1) if small.shape[1] == 1 else small
    span = size - half
    v = torch.zeros(len(images), frames, 3, size, size)
    for i in range(len(images)):
        dy, dx = [(1, 0), (-1, 0), (0, 1), (0, -1)][int(torch.randint(0, 4, (1,), generator=g))]
        y0 = int(torch.randint(0, span + 1, (1,), generator=g))
        x0 = int(torch.randint(0, span + 1, (1,), generator=g))
        for f in range(frames):
            y = min(max(y0 + step * f * dy, 0), span)
            x = min(max(x0 + step * f * dx, 0), span)
            v[i, f, :, y:y + half, x:x + half] = small[i] * 2 - 1
    return v + 0.1 * torch.randn(v.shape, generator=g), labels.clone()


def spoken_records(n_per: int, seed: int = 0, words: int = 4, bins: int = 8, frames: int = 32) -> List[dict]:
    """Speech-to-text records (``input_features`` ``(bins, frames)``, ``labels``) whose class
    ``c`` lights mel bins ``2c`` and ``2c + 1``; its transcript is one word, token ``3 + c``,
    then the end token ``2`` (ids 0–2: pad, start, end)."""
    if 2 * words > bins:
        raise DataError(f"Expected bins >= 2 × words, got {bins} bins for {words} words.")
    g = torch.Generator().manual_seed(seed)
    out = []
    for c in range(words):
        x = 0.3 * torch.randn(n_per, bins, frames, generator=g)
        x[:, 2 * c:2 * c + 2] += 1.5
        out += [{"input_features": f, "labels": torch.tensor([3 + c, 2])} for f in x]
    return out
