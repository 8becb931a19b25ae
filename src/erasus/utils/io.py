"""Atomic, non-destructive writes and safe weight loading."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Dict, Union

import torch

PathLike = Union[str, os.PathLike]


def _atomic_replace(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: PathLike, text: str) -> None:
    _atomic_replace(Path(path), lambda fh: fh.write(text.encode("utf-8")))


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    _atomic_replace(Path(path), lambda fh: fh.write(data))


def save_state_dict(state: Dict[str, torch.Tensor], path: PathLike, overwrite: bool = False) -> Path:
    """Save tensors with safetensors, atomically; refuses to overwrite unless asked."""
    from safetensors.torch import save

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} exists. Erasus never overwrites a checkpoint: choose a new path or pass overwrite=True."
        )
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    atomic_write_bytes(path, save(tensors))
    return path


def load_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """Load weights safely: safetensors, or ``torch.load(weights_only=True)`` for .pt files."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)
