"""One conformance suite over every registered strategy, selector and metric."""
import copy

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from erasus.core import get, list_registered
from erasus.core.strategy import LossStrategy
from erasus.metrics import MetricSuite

# the conformance suite runs on a tiny classifier; language-model-only components are
# covered by tests/test_llm.py
STRATEGIES = list_registered("strategy", family="classifier")
SELECTORS = list_registered("selector")
METRICS = list_registered("metric", family="classifier")


def make_strategy(name, tiny, tmp_path):
    """The strategy at its defaults; strategies that need training-time records get them."""
    cls = get("strategy", name)
    if name == "amnesiac":
        from erasus.models.training import train_classifier
        from erasus.strategies import AmnesiacRecorder, IndexedDataset

        model, forget, retain, _ = tiny
        trained = copy.deepcopy(model)
        rec = AmnesiacRecorder(trained, tmp_path / "amnesiac", track_ids=range(12))
        train_classifier(trained, DataLoader(IndexedDataset(forget.dataset.dataset), batch_size=8, shuffle=True),
                         epochs=1, recorder=rec)
        return cls(updates_dir=str(tmp_path / "amnesiac"))
    return cls()


def params_equal(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


# strategies ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", list_registered("strategy"))  # every family: it needs no model
def test_strategy_builds_with_defaults_and_config_round_trips(name, tmp_path):
    cls = get("strategy", name)
    s = cls()
    assert cls.__doc__ and any(ch.isdigit() for ch in cls.__doc__), "docstring must cite the paper and year"
    for suffix in (".json", ".yaml"):
        path = s.config.save(tmp_path / f"cfg{suffix}")
        assert type(s.config).load(path) == s.config


def _mechanics_kwargs(cls, steps: int) -> dict:
    """The mechanics, not the guards: a fixed schedule of ``steps`` steps for loss-based and
    composite strategies, and one-shot edits kept whatever they cost (the tiny random data
    give the guards nothing to keep)."""
    from erasus.core.strategy import OneShotStrategy

    if issubclass(cls, OneShotStrategy):
        return {"progress": False, "guard": False}
    return {"max_steps": steps, "progress": False, "stopping": "none", "min_steps": 0}


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_step_is_finite_changes_model_and_leaves_caller_untouched(name, tiny, tmp_path):
    model, forget, retain, _ = tiny
    before = copy.deepcopy(model)
    cls = get("strategy", name)
    kwargs = _mechanics_kwargs(cls, steps=3)
    res = make_strategy(name, tiny, tmp_path).unlearn(model, forget, retain, **kwargs)
    assert params_equal(model, before), "the caller's model must not change without inplace=True"
    assert all(torch.isfinite(p).all() for p in res.model.parameters())
    assert not params_equal(res.model, before), f"{name} left the model unchanged"
    if issubclass(cls, LossStrategy):
        assert res.steps == 3 and all(np.isfinite(res.history["loss"]))


@pytest.mark.parametrize("name", [n for n in STRATEGIES if issubclass(get("strategy", n), LossStrategy)])
def test_loss_strategy_changes_only_trainable_parameters(name, tiny, tmp_path):
    model, forget, retain, _ = tiny
    strategy = make_strategy(name, tiny, tmp_path)
    model[1].weight.requires_grad_(False)
    res = strategy.unlearn(model, forget, retain, max_steps=3, progress=False, stopping="none",
                                          min_steps=0)
    assert torch.equal(res.model[1].weight, model[1].weight)
    assert not torch.equal(res.model[3].weight, model[3].weight)


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_seeded_runs_are_deterministic(name, tiny, tmp_path):
    model, forget, retain, holdout = tiny
    cls = get("strategy", name)
    kw = {"max_steps": 4, "progress": False, "min_steps": 0} if issubclass(cls, LossStrategy) else {"progress": False}
    a = make_strategy(name, tiny, tmp_path).unlearn(model, forget, retain, holdout, seed=3, **kw).model
    b = make_strategy(name, tiny, tmp_path / "b").unlearn(model, forget, retain, holdout, seed=3, **kw).model
    assert params_equal(a, b)


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_inplace_modifies_the_given_model(name, tiny, tmp_path):
    model, forget, retain, _ = tiny
    before = copy.deepcopy(model)
    cls = get("strategy", name)
    kw = _mechanics_kwargs(cls, steps=2)
    res = make_strategy(name, tiny, tmp_path).unlearn(model, forget, retain, inplace=True, **kw)
    assert res.model is model and not params_equal(model, before)


# selectors ----------------------------------------------------------------------------
def make_selector(name, tiny, tmp_path):
    """The selector at its defaults; selectors that need training-time records get them."""
    cls = get("selector", name)
    if name in ("forgetting_events", "loss_accumulation"):
        from erasus.models.training import train_classifier
        from erasus.selectors import TrainingDynamicsRecorder
        from erasus.strategies import IndexedDataset

        model, forget, _, _ = tiny
        rec = TrainingDynamicsRecorder(len(forget.dataset.dataset))
        train_classifier(copy.deepcopy(model), DataLoader(IndexedDataset(forget.dataset.dataset), batch_size=8,
                                                          shuffle=True), epochs=3, dynamics=rec)
        return cls(record=str(rec.save(tmp_path / "dynamics.npz")))
    return cls()


@pytest.mark.parametrize("name", SELECTORS)
def test_selector_returns_exactly_k_dataset_indices_independent_of_shuffling(name, tiny, tmp_path):
    model, forget, _, _ = tiny
    sel = make_selector(name, tiny, tmp_path)
    n = len(forget.dataset)
    k = n if name == "full" else 7
    a = sel.select(model, forget, k=k)
    shuffled = DataLoader(forget.dataset, batch_size=5, shuffle=True, generator=torch.Generator().manual_seed(9))
    b = sel.select(model, shuffled, k=k)
    assert len(a) == k and len(set(a.indices.tolist())) == k
    assert a.indices.min() >= 0 and a.indices.max() < n
    assert np.array_equal(a.indices, b.indices)
    assert a.provenance["selector"] == name and a.provenance["k"] == k


@pytest.mark.parametrize("name", SELECTORS)
def test_selector_config_round_trips_and_prune_ratio(name, tiny, tmp_path):
    model, forget, _, _ = tiny
    sel = make_selector(name, tiny, tmp_path)
    path = sel.config.save(tmp_path / "sel.json")
    assert type(sel.config).load(path) == sel.config
    cs = sel.select(model, forget, prune_ratio=1.0)
    assert len(cs) == len(forget.dataset)


# metrics ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", METRICS)
def test_metric_declares_direction_and_reference_for_every_value(name, tiny):
    model, forget, retain, holdout = tiny
    gold = copy.deepcopy(model)
    with torch.no_grad():
        gold[3].weight.add_(0.5)
    out = MetricSuite([name]).run(model, forget, retain, holdout, holdout, gold_model=gold)
    m = get("metric", name)()
    for key in out:
        if key.startswith("gap_"):
            continue
        assert key in m.higher_is_better and key in m.reference, f"{name}: {key} lacks direction/reference"
        assert np.isfinite(out[key])
