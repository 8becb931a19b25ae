"""One conformance suite over every registered strategy, selector and metric."""
import copy

import pytest
from torch.utils.data import DataLoader

from erasus.core import get, list_registered
from erasus.testing import check_metric, check_selector, check_strategy

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


# strategies ---------------------------------------------------------------------------
# the checks plugin authors import (erasus.testing), run over every registered component
@pytest.mark.parametrize("name", list_registered("strategy"))  # language-model methods: config and docs only
def test_strategy_conforms(name, tiny, tmp_path):
    check_strategy(make_strategy(name, tiny, tmp_path), problem=tiny)


def test_check_strategy_catches_a_method_that_does_nothing():
    from erasus.core.strategy import ForgetRetainStrategy

    class DoesNothing(ForgetRetainStrategy):
        """A method that never changes the model (a cheat, 2026)."""

        def forget_step(self, batch, batch_idx):
            return 0.0 * sum(p.sum() for p in self.model.parameters())

        def retain_step(self, batch, batch_idx):
            return None

    with pytest.raises(AssertionError, match="left the model unchanged"):
        check_strategy(DoesNothing)


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
def test_selector_conforms(name, tiny, tmp_path):
    check_selector(make_selector(name, tiny, tmp_path), problem=tiny)


# metrics ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", METRICS)
def test_metric_conforms(name, tiny):
    check_metric(name, problem=tiny)
