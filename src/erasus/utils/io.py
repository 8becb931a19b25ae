"""Atomic, non-destructive writes and safe weight loading."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Dict, Union

import torch

PathLike = Union[str, os.PathLike]

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once, at import: files get the mode a plain open() would give them


def _atomic_replace(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a user's file should look like any other
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
    tensors, seen = {}, set()
    for k, v in state.items():
        t = v.detach().cpu()
        ptr = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)) if t.numel() else None
        # tied weights (GPT-2's input and output embeddings) share memory, which safetensors refuses to
        # store twice: each name gets its own copy, and loading gives back equal tensors under both names
        tensors[k] = t.clone().contiguous() if ptr in seen or not t.is_contiguous() else t
        if ptr is not None:
            seen.add(ptr)
    atomic_write_bytes(path, save(tensors))
    return path


def replace_dir(build, path: PathLike, overwrite: bool = False) -> Path:
    """Write a folder atomically: ``build(tmp)`` fills a fresh temporary folder made beside
    ``path``, which then takes ``path``'s place. An existing non-empty ``path`` is replaced only
    with ``overwrite=True``, and then by two renames (``path`` aside, the new folder in); if
    the second fails the old folder is put back, so ``path`` always holds the old or the new
    content. Temporary and old folders get unique names and are removed; leftovers of an
    interrupted earlier write do not get in the way."""
    import shutil

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is a file; expected a folder path.")
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"{path} exists and is not empty; pass overwrite=True or choose a new folder.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.new-", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700
    old = None
    try:
        build(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.rmdir(old)
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)  # put the old folder back: the target is never left empty
                old = None
                raise
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)
    return path


def load_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """Load weights safely: safetensors, or ``torch.load(weights_only=True)`` for .pt files."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


@contextlib.contextmanager
def file_lock(path: PathLike):
    """An exclusive lock between processes for the duration of the ``with`` block (for a
    read-modify-write of a shared file). The lock lives in the system's temporary folder, keyed
    by ``path``'s absolute name, so nothing is left beside the user's files."""
    import hashlib

    key = hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"erasus-{key}.lock", "a+b") as f:
        if os.name == "nt":
            import msvcrt

            f.seek(0)
            msvcrt.locking(f.fileno(), msvcrt.LK_LOCK, 1)
            try:
                yield
            finally:
                f.seek(0)
                msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def write_results(out: PathLike, name: str, meta: dict, rows: list, markdown: str) -> Path:
    """A benchmark's results: ``<out>/<name>.json`` (``{"meta", "rows"}``) and ``<name>.md``,
    each written atomically; returns the markdown's path."""
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{name}.json", json.dumps({"meta": meta, "rows": rows}, indent=1, default=float))
    atomic_write_text(out / f"{name}.md", markdown)
    return out / f"{name}.md"
