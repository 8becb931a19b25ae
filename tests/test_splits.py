"""Stage 3 takes one currency: every verification entry point accepts a ``Splits`` and gives
what it gives for the loaders one by one; ``gold_model`` is a keyword, and the older call forms
still work for one release, with a DeprecationWarning."""
import warnings

import pytest

from erasus import ErasusUnlearner
from erasus.certification import UnlearningVerificationSuite, UnlearningVerifier
from erasus.data import Splits, UnlearningDataset
from erasus.evaluation import UnlearningBenchmark
from erasus.metrics import MetricSuite, attack_report


@pytest.fixture(scope="module")
def case(digits):
    split = digits.split("random", fraction=0.1)
    return digits.original(0), digits.gold(split, 0), split


def test_every_entry_point_takes_splits(case):
    original, gold, split = case
    s = split.splits
    f, r, t, h = split.forget, split.retain, split.test, split.holdout
    assert MetricSuite(["accuracy", "mia"]).run(original, s, gold_model=gold) == \
        MetricSuite(["accuracy", "mia"]).run(original, f, r, t, h, gold_model=gold)
    bench = UnlearningBenchmark(n_bootstrap=50, refit=False)
    a, b = bench.evaluate(original, s, gold_model=gold), bench.evaluate(original, f, r, t, h, gold_model=gold)
    assert a.verdict == b.verdict and a.metrics == b.metrics
    v = UnlearningVerifier(refit=False)
    assert v.verify_all(original, s, gold_model=gold).to_dict() == v.verify_all(original, f, r, h, gold_model=gold).to_dict()
    suite = UnlearningVerificationSuite(families=("membership",))
    assert suite.run(original, s, gold_model=gold).to_dict() == suite.run(original, f, r, t, h, gold_model=gold).to_dict()
    unl = ErasusUnlearner(original)
    assert unl.evaluate(s) == unl.evaluate(f, r, t, h)
    with pytest.raises(ValueError, match="either a Splits or loaders"):
        MetricSuite(["accuracy"]).run(original, s, r)


def test_old_call_forms_warn_and_agree(case):
    original, gold, split = case
    f, r, t, h = split.forget, split.retain, split.test, split.holdout
    suite = UnlearningVerificationSuite(families=("membership",))
    new = suite.run(original, f, r, t, h, gold_model=gold).to_dict()
    with pytest.warns(DeprecationWarning, match="deprecated"):
        old = suite.run(original, gold, f, r, t, h).to_dict()
    assert old == new
    with pytest.warns(DeprecationWarning, match="gold_model"):
        old = MetricSuite(["accuracy", "mia"]).run(original, f, r, t, h, gold)
    assert old == MetricSuite(["accuracy", "mia"]).run(original, f, r, t, h, gold_model=gold)
    with pytest.warns(DeprecationWarning):
        rep = attack_report(original, gold, f, r, t, h, ("quantization",))
    assert set(rep) and all(set(v) == {"model", "gold"} for v in rep.values())
    with pytest.raises(TypeError, match="given twice"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            suite.run(original, gold, f, r, gold_model=gold)


def test_unlearning_dataset_gives_splits(digits):
    ds = UnlearningDataset(digits.train, forget_indices=list(range(20)), holdout=digits.test_full)
    s = ds.splits(batch_size=16)
    assert isinstance(s, Splits) and len(s.forget.dataset) == 20 and s.holdout is not None and s.test is None
    assert len(s.retain.dataset) == len(digits.train) - 20


def test_dict_samples_split_and_unlearn_as_tuples(digits):
    """Samples given as dicts, as a Hugging Face data set's rows are (``{"pixel_values": x,
    "label": y}``): ``forget_classes`` finds the class's samples by the label field, and the run
    on the dict loaders equals the run on the (x, y) loaders weight for weight. (The labels were
    read as ``sample[1]``: a KeyError.)"""
    import torch
    from torch.utils.data import Dataset

    class Rows(Dataset):
        def __init__(self, base):
            self.base = base

        def __len__(self):
            return len(self.base)

        def __getitem__(self, i):
            x, y = self.base[i]
            return {"pixel_values": x, "label": y}

    model = digits.original(0)
    runs = []
    for data in (digits.train, Rows(digits.train)):
        ds = UnlearningDataset(data, forget_classes=[3])
        forget, retain = ds.to_loaders(batch_size=32)
        runs.append((sorted(forget.dataset.indices), ErasusUnlearner(model, strategy="negative_gradient").fit(
            forget, retain, max_steps=3, stopping="none", progress=False).model))
    assert runs[0][0] == runs[1][0] and len(runs[0][0]) > 0
    for (k, a), b in zip(runs[0][1].state_dict().items(), runs[1][1].state_dict().values()):
        assert torch.equal(a, b), k
