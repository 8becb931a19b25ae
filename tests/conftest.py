import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("ERASUS_TEST_THREADS", min(2, os.cpu_count() or 1))))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """Trained models are cached per session; set ERASUS_TEST_CACHE to reuse them across runs."""
    if os.environ.get("ERASUS_TEST_CACHE"):
        return os.environ["ERASUS_TEST_CACHE"]
    return tmp_path_factory.mktemp("erasus-cache")


@pytest.fixture(scope="session")
def digits(cache_dir):
    from erasus.evaluation.protocols import digits_task

    return digits_task(cache_dir=cache_dir)


@pytest.fixture(scope="session")
def fmnist_small(cache_dir):
    from erasus.evaluation.protocols import fashion_mnist_small_task

    return fashion_mnist_small_task(cache_dir=cache_dir)


@pytest.fixture
def tiny():
    """A tiny classifier and forget/retain/holdout loaders on random data (for conformance)."""
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 1, 4, 4, generator=g)
    x[:12] += 3.0  # the forget set is a distinct sub-population, as in real deletion requests
    y = torch.randint(0, 3, (96,), generator=g)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    ds = TensorDataset(x, y)
    forget = DataLoader(torch.utils.data.Subset(ds, list(range(12))), batch_size=4, shuffle=True)
    retain = DataLoader(torch.utils.data.Subset(ds, list(range(12, 72))), batch_size=8, shuffle=True)
    holdout = DataLoader(torch.utils.data.Subset(ds, list(range(72, 96))), batch_size=8)
    return model, forget, retain, holdout
