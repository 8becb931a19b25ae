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
    """A tiny classifier and forget/retain/holdout loaders on random data (for conformance):
    erasus.testing.tiny_problem, the problem plugin authors' checks run on."""
    from erasus.testing import tiny_problem

    return tiny_problem()
