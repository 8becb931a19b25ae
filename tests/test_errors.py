"""Bad input gets a clear error, and nothing is lost."""
import copy

import pytest
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

from erasus import ErasusUnlearner
from erasus.core import DataError, DivergenceError, UnknownNameError
from erasus.data.datasets import UnlearningDataset


def same(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_unknown_strategy_and_selector_suggest_closest(tiny):
    model = tiny[0]
    with pytest.raises(UnknownNameError, match=r"Did you mean 'scrub'.*Known strategy names: .*negative_gradient"):
        ErasusUnlearner(model, strategy="scrubb")
    with pytest.raises(UnknownNameError, match=r"Did you mean 'kcenter'"):
        ErasusUnlearner(model, strategy="scrub", selector="k_centre")
    with pytest.raises(ValueError):  # UnknownNameError is a ValueError too
        ErasusUnlearner(model, strategy="nonsense_method_xyz")


def test_empty_forget_set():
    ds = TensorDataset(torch.randn(10, 4), torch.zeros(10, dtype=torch.long))
    with pytest.raises(DataError, match="forget set is empty"):
        UnlearningDataset(ds).to_loaders()
    model = torch.nn.Linear(4, 2)
    with pytest.raises(DataError, match="forget set is empty"):
        ErasusUnlearner(model, strategy="gradient_ascent").fit(DataLoader(Subset(ds, [])), DataLoader(ds))


def test_forget_retain_overlap_is_refused(tiny):
    model, forget, retain, _ = tiny
    base = forget.dataset.dataset
    overlapping = DataLoader(Subset(base, list(range(5, 40))), batch_size=8)
    with pytest.raises(DataError, match="overlap"):
        ErasusUnlearner(model, strategy="negative_gradient").fit(forget, overlapping)
    # two separate TensorDatasets holding the same samples are caught by content
    x, y = base.tensors
    f2 = DataLoader(TensorDataset(x[:10].clone(), y[:10].clone()))
    r2 = DataLoader(TensorDataset(x[5:50].clone(), y[5:50].clone()))
    with pytest.raises(DataError, match="overlap"):
        ErasusUnlearner(model, strategy="negative_gradient").fit(f2, r2)


def test_labels_out_of_range(tiny):
    model, _, retain, _ = tiny
    bad = DataLoader(TensorDataset(torch.randn(8, 1, 4, 4), torch.full((8,), 7)), batch_size=4)
    before = copy.deepcopy(model)
    with pytest.raises(DataError, match=r"Expected labels in \[0, 2\].*got labels in \[7, 7\]"):
        ErasusUnlearner(model, strategy="gradient_ascent").fit(bad, retain, progress=False)
    assert same(model, before)


def test_batch_the_model_cannot_take(tiny):
    model, _, retain, _ = tiny
    wrong_shape = DataLoader(TensorDataset(torch.randn(8, 5), torch.zeros(8, dtype=torch.long)), batch_size=4)
    with pytest.raises(DataError, match="could not take an input batch of shape"):
        ErasusUnlearner(model, strategy="gradient_ascent").fit(wrong_shape, retain, progress=False)
    not_pairs = DataLoader(torch.randn(8, 1, 4, 4), batch_size=4)
    with pytest.raises(DataError, match=r"Expected a classifier batch \(x, y\)"):
        ErasusUnlearner(model, strategy="gradient_ascent").fit(not_pairs, retain, progress=False)
    float_labels = DataLoader(TensorDataset(torch.randn(8, 1, 4, 4), torch.zeros(8)), batch_size=4)
    with pytest.raises(DataError, match="integer class labels"):
        ErasusUnlearner(model, strategy="gradient_ascent").fit(float_labels, retain, progress=False)


def test_nan_loss_raises_and_leaves_model_as_it_was(tiny):
    model, _, retain, _ = tiny
    x = torch.randn(8, 1, 4, 4)
    x[0, 0, 0, 0] = float("nan")
    nan_data = DataLoader(TensorDataset(x, torch.zeros(8, dtype=torch.long)), batch_size=8)
    before = copy.deepcopy(model)
    # caught before any step: the forget data's loss is not finite when first evaluated
    with pytest.raises(DataError, match="check them for NaN"):
        ErasusUnlearner(model, strategy="gradient_ascent").fit(nan_data, retain, progress=False)
    assert same(model, before)
    with pytest.raises(DataError):
        ErasusUnlearner(model, strategy="gradient_ascent", inplace=True).fit(nan_data, retain, progress=False)
    assert same(model, before), "even inplace, bad data must leave the weights as they were"
    with pytest.raises(DivergenceError, match="check the data for NaN"):  # the fixed schedule: caught at step 0
        ErasusUnlearner(model, strategy="gradient_ascent").fit(nan_data, retain, progress=False, stopping="none")
    assert same(model, before)


def test_divergence_mid_run_restores_best_checkpoint_and_says_so(tiny):
    from erasus.core import UnlearningModule, UnlearningTrainer

    model, forget, retain, holdout = tiny

    class Explodes(UnlearningModule):
        def forget_step(self, batch, i):
            loss = -self.adapter.loss(batch)
            return loss * float("nan") if i >= 6 else loss

    module = Explodes(copy.deepcopy(model))
    res = UnlearningTrainer(max_steps=20, min_steps=0, eval_every_steps=2, progress=False, lr=1e-3).fit(
        module, forget, retain, holdout)
    from erasus.core import StopKind

    assert res.stop.kind is StopKind.DIVERGED and res.stop_reason.startswith("diverged: non-finite loss at step 6")
    assert all(torch.isfinite(p).all() for p in res.model.parameters())
    assert res.steps == 6


def test_caller_model_unchanged_unless_inplace(tiny):
    model, forget, retain, holdout = tiny
    before = copy.deepcopy(model)
    res = ErasusUnlearner(model, strategy="negative_gradient").fit(forget, retain, holdout, progress=False,
                                                                   stopping="none", max_steps=5)
    assert same(model, before) and res.model is not model
    res = ErasusUnlearner(model, strategy="negative_gradient", inplace=True).fit(
        forget, retain, progress=False, stopping="none", max_steps=5)
    assert res.model is model and not same(model, before)


def test_bad_config_values_name_the_field():
    from erasus.strategies import NegativeGradientConfig

    with pytest.raises(ValueError, match=r"NegativeGradientConfig.beta: expected a value in \[0.0, 1.0\], got 1.5"):
        NegativeGradientConfig(beta=1.5)
    with pytest.raises(ValueError, match="unknown field"):
        NegativeGradientConfig.from_dict({"betta": 0.5})
    with pytest.raises(ValueError, match=r"Unknown trainer option\(s\) \['lrr'\]"):
        from erasus.strategies import NegativeGradient

        NegativeGradient().trainer_config(lrr=1)


def test_checkpoints_are_never_overwritten(tmp_path):
    from erasus.utils.io import load_state_dict, save_state_dict

    m = torch.nn.Linear(3, 2)
    p = save_state_dict(m.state_dict(), tmp_path / "m.safetensors")
    with pytest.raises(FileExistsError, match="never overwrites"):
        save_state_dict(m.state_dict(), p)
    loaded = load_state_dict(p)
    assert torch.equal(loaded["weight"], m.weight.detach())


def test_fashion_mnist_missing_files_say_how_to_install(tmp_path):
    from erasus.data.datasets import load_fashion_mnist

    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(root=tmp_path)
