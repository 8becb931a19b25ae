"""Seeding, device choice, parameter snapshots."""
from __future__ import annotations

import random
from typing import Dict, Optional

import numpy as np
import torch


def seed_everything(seed: Optional[int]) -> None:
    if seed is None:
        return
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class seeded_loaders:
    """Context manager: the shuffling generators of ``loaders`` (``loader.generator`` and
    ``loader.sampler.generator``) are seeded with ``seed + i`` on entry and put back to their
    previous state on exit, so a seeded run shuffles the same way however often the loaders
    were iterated before, and the caller's loaders are left as they were."""

    def __init__(self, seed: Optional[int], *loaders):
        self.seed = seed
        self.gens = []
        for loader in loaders:
            for g in (getattr(loader, "generator", None), getattr(getattr(loader, "sampler", None), "generator", None)):
                if isinstance(g, torch.Generator) and all(g is not h for h in self.gens):
                    self.gens.append(g)
        self.states = []

    def __enter__(self):
        if self.seed is not None:
            self.states = [g.get_state() for g in self.gens]
            for i, g in enumerate(self.gens):
                g.manual_seed(self.seed + 7919 * (i + 1))
        return self

    def __exit__(self, *exc):
        for g, st in zip(self.gens, self.states):
            g.set_state(st)
        return False


def resolve_device(device=None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def snapshot(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """A detached copy of the state dict (for best-checkpoint restore)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
