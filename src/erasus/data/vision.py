"""Small real image data sets for tests, the demo and benchmarks."""
from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ..core.exceptions import DataError

FASHION_MNIST_DIR = Path(os.environ.get("ERASUS_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")


def load_digits(test_fraction: float = 0.3, seed: int = 0) -> Tuple[TensorDataset, TensorDataset]:
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes) as ``(train, test)``
    ``TensorDataset``s of ``(x: float32 [1, 8, 8] in [0, 1], y: int64)``, split stratified."""
    from sklearn.datasets import load_digits as _load
    from sklearn.model_selection import train_test_split

    d = _load()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(d.target, dtype=torch.long)
    tr, te = train_test_split(np.arange(len(y)), test_size=test_fraction, random_state=seed, stratify=d.target)
    return TensorDataset(x[tr], y[tr]), TensorDataset(x[te], y[te])


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(train: bool = True, n: Optional[int] = None, seed: int = 0,
                       root: Optional[os.PathLike] = None) -> TensorDataset:
    """Fashion-MNIST (Xiao et al., 2017) from the IDX files of Debian's
    ``dataset-fashion-mnist`` package: ``(x: float32 [1, 28, 28] in [0, 1], y: int64)``.

    ``n``: a class-stratified random subset of that size (fixed by ``seed``).
    """
    root = Path(root) if root is not None else FASHION_MNIST_DIR
    prefix = "train" if train else "t10k"
    img, lab = root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz"
    if not img.exists() or not lab.exists():
        raise DataError(
            f"Fashion-MNIST files not found under {root} (expected {img.name} and {lab.name}). Install them with "
            "`sudo apt-get install dataset-fashion-mnist`, or set ERASUS_FASHION_MNIST to a folder holding the "
            "original IDX .gz files."
        )
    x = _read_idx(img)
    y = _read_idx(lab).astype(np.int64)
    if n is not None and n < len(y):
        from sklearn.model_selection import train_test_split

        keep, _ = train_test_split(np.arange(len(y)), train_size=n, random_state=seed, stratify=y)
        keep = np.sort(keep)
        x, y = x[keep], y[keep]
    xt = torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1)
    return TensorDataset(xt, torch.from_numpy(y))


def load_fashion_mnist_small() -> Tuple[TensorDataset, TensorDataset]:
    """The bundled Fashion-MNIST subset (6,000 training / 2,000 test images, stratified;
    see ``erasus/data/assets/README.md``) as ``(train, test)`` ``TensorDataset``s."""
    path = Path(__file__).parent / "assets" / "fashion_mnist_small.npz"
    if not path.exists():
        raise DataError(f"The bundled data file {path} is missing: reinstall erasus (pip install -e .).")
    d = np.load(path)

    def ds(x, y):
        return TensorDataset(torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1),
                             torch.from_numpy(y.astype(np.int64)))

    return ds(d["x_train"], d["y_train"]), ds(d["x_test"], d["y_test"])
