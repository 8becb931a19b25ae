"""A deletion request on an image classifier: forget 600 training images (10%) of an MLP
trained on the Fashion-MNIST subset shipped with Erasus, check the result against a model
retrained without them, and write the evidence (an HTML report with the verdict and plots).

    python examples/classifier/deletion_request.py [--out DIR]      # about a minute on a CPU
"""
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, random_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import out_dir  # noqa: E402

from erasus import ErasusUnlearner  # noqa: E402
from erasus.data import Splits  # noqa: E402
from erasus.data.datasets import UnlearningDataset  # noqa: E402
from erasus.data.vision import load_fashion_mnist_small  # noqa: E402
from erasus.evaluation import UnlearningBenchmark  # noqa: E402
from erasus.models.training import train_classifier  # noqa: E402
from erasus.models.zoo import mlp  # noqa: E402
from erasus.visualization import run_report  # noqa: E402

out = out_dir(__doc__.splitlines()[0])
train_set, unseen = load_fashion_mnist_small()
holdout_set, test_set = random_split(unseen, [1000, 1000], generator=torch.Generator().manual_seed(0))
request = np.random.default_rng(0).choice(len(train_set), 600, replace=False)


def train(dataset, seed):
    torch.manual_seed(seed)
    loader = DataLoader(dataset, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(seed))
    return train_classifier(mlp(784, 256, 10), loader, epochs=40, lr=1e-3, seed=seed).eval()


model = train(train_set, seed=0)
ds = UnlearningDataset(train_set, forget_indices=request, holdout=holdout_set)
forget, retain = ds.to_loaders(batch_size=64)
splits = Splits(forget, retain, DataLoader(test_set, batch_size=256), ds.holdout_loader())
retrained = train(ds.retain_dataset, seed=1)                    # the gold standard

result = ErasusUnlearner(model, strategy="wga").fit(forget, retain, ds.holdout_loader())
report = UnlearningBenchmark().evaluate(result.model, splits, gold_model=retrained, original_model=model)
print(report.summary())
path = out / "deletion_request.html"
run_report(result, path, report=report, models={"original": model, "unlearned": result.model, "retrained": retrained},
           splits={"forget": forget, "held-out": ds.holdout_loader()}, title="Deletion request: 600 images")
print(f"verdict: {report.verdict}; report: {path}")
