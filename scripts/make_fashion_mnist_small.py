"""Build src/erasus/data/assets/fashion_mnist_small.npz, the demo's bundled data.

A class-stratified subset of Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017; MIT licence):
6,000 training and 2,000 test images, read from the IDX files of Debian's
``dataset-fashion-mnist`` package. Run once; the output is committed.
"""
import numpy as np
from sklearn.model_selection import train_test_split

from erasus.data.vision import FASHION_MNIST_DIR, _read_idx


def subset(prefix, n, seed):
    x = _read_idx(FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz")
    y = _read_idx(FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    keep, _ = train_test_split(np.arange(len(y)), train_size=n, random_state=seed, stratify=y)
    keep = np.sort(keep)
    return x[keep], y[keep].astype(np.uint8), keep


if __name__ == "__main__":
    xtr, ytr, itr = subset("train", 6000, 0)
    xte, yte, ite = subset("t10k", 2000, 0)
    np.savez_compressed("src/erasus/data/assets/fashion_mnist_small.npz", x_train=xtr, y_train=ytr,
                        x_test=xte, y_test=yte, train_source_index=itr.astype(np.int32),
                        test_source_index=ite.astype(np.int32))
