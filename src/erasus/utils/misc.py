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
