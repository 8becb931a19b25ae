"""Shared by the examples: where they write (``--out``, default a fresh temporary folder)."""
import argparse
import tempfile
from pathlib import Path


def out_dir(description: str) -> Path:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", type=Path, default=None, help="folder for the outputs (default: a new temporary folder)")
    a = p.parse_args()
    out = a.out or Path(tempfile.mkdtemp(prefix="erasus-example-"))
    out.mkdir(parents=True, exist_ok=True)
    return out
