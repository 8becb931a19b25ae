"""Each strategy at its defaults against a model retrained without the forget data.

These fail on a no-op: the untouched original is checked against the same thresholds.
"""
import warnings

import pytest

from erasus import ErasusUnlearner
from erasus.core import list_registered
from erasus.metrics import MetricSuite

STRATEGIES = list_registered("strategy", family="classifier")

# Measured defects, kept visible: strict xfail fails the suite if they start passing.
# Measured on digits class forgetting at the defaults (forget accuracy must be <= 10%):
WEAK_ON_DIGITS = {
    "bad_teacher": "distillation from a random teacher leaves ~27% forget accuracy (chance level for an "
                   "incompetent teacher's near-uniform outputs is reached, not 0%)",
    "boundary_expand": "the shadow class absorbs the forget samples, but after pruning ~35% fall back into "
                       "the forgotten class before retain accuracy limits the run",
    "fine_tune": "retain-only fine-tuning within a forget-set-sized step budget leaves ~80% forget accuracy",
    "sparse_aware": "l1-sparse retain fine-tuning within the same budget leaves ~84% forget accuracy",
    "neuron_pruning": "pruning without repair forgets the class but costs ~15 points of test accuracy",
    "lora_unlearning": "NegGrad+ through rank-8 adapters (lr 1e-2) leaves ~13% forget accuracy when calibrated "
                       "stopping reaches the retain tolerance (on the 20k-image CNN it forgets the class on 1 seed "
                       "of 3); full-weight NegGrad+ passes",
    "task_vector": "negating a 5-epoch forget-set fine-tuning leaves ~15% forget accuracy (a language-model method; "
                   "on the 20k-image CNN it reaches 0% at a 7-point test-accuracy cost)",
    "undial": "self-distillation towards the teacher with the true logit lowered by 10 leaves ~31% forget accuracy "
              "(a language-model method; it also under-forgets classes on the 20k-image CNN)",
}


def _param(name):
    if name in WEAK_ON_DIGITS:
        return pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=WEAK_ON_DIGITS[name]))
    return name


def unlearn(task, split, name, seed=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ErasusUnlearner(task.original(0), strategy=name).fit(
            split.forget, split.retain, split.holdout, **({"progress": False, "seed": seed}))
    return res


def measure(model, split, gold=None):
    return MetricSuite(["accuracy", "mia", "mia_efficacy"] + (["gold_gap"] if gold is not None else [])).run(
        model, split.forget, split.retain, split.test, split.holdout, gold_model=gold)


@pytest.fixture(scope="module")
def digits_class(digits):
    split = digits.split("class", forget_class=3)
    return digits, split, measure(digits.gold(split, 0), split), measure(digits.original(0), split)


# amnesiac needs updates recorded while the original was trained: tested in test_strategies.py
@pytest.mark.parametrize("name", [_param(n) for n in STRATEGIES if n != "amnesiac"])
def test_class_forgetting_on_digits_matches_retraining(name, digits_class):
    task, split, gold, original = digits_class
    assert original["forget_accuracy"] > 0.9  # the no-op would fail the next assertion
    m = measure(unlearn(task, split, name).model, split)
    assert m["forget_accuracy"] <= gold["forget_accuracy"] + 0.10, m
    assert m["test_accuracy"] >= gold["test_accuracy"] - 0.05, m
    assert m["retain_accuracy"] >= gold["retain_accuracy"] - 0.05, m


@pytest.fixture(scope="module")
def fmnist_random(fmnist_small):
    split = fmnist_small.split("random", seed=0)
    gold = fmnist_small.gold(split, 0)
    return fmnist_small, split, gold, measure(fmnist_small.original(0), split, gold)


# Required move of the average gap toward the retrained model (points). Measured at the defaults:
# SCRUB 6.89 -> 4.72 at 2 threads, 7.24 -> 4.41 at 1 thread (the original differs with the CPU's
# floating-point arithmetic); at its earlier defaults (paper alpha and temperature) it moved ~1 point.
REQUIRED_MOVE = {"negative_gradient": 1.0, "wga": 1.0, "simnpo": 1.0, "scrub": 1.0}


@pytest.mark.parametrize("name", list(REQUIRED_MOVE))
def test_random_forgetting_on_fashion_mnist_moves_toward_retraining(name, fmnist_random):
    """On the bundled Fashion-MNIST subset, a random 10% deletion: the unlearned model must be
    closer to the retrained model than the untouched original is (average gap), and its
    forget set must look less like training data (MIA AUC closer to 0.5)."""
    task, split, gold, original = fmnist_random
    m = measure(unlearn(task, split, name).model, split, gold)
    assert m["avg_gap"] < original["avg_gap"] - REQUIRED_MOVE[name], (m, original)
    assert abs(m["mia_auc"] - 0.5) < abs(original["mia_auc"] - 0.5), (m, original)
    assert m["test_accuracy"] > original["test_accuracy"] - 0.05


def test_coreset_run_stops_on_the_whole_request(fmnist_random):
    """A coreset of the forget set's most uncertain 10% already looks unseen; if the stopping
    rule watched only the coreset it would stop before the rest of the request moved. With
    the whole request watched (the default), the whole forget set moves toward retraining."""
    task, split, gold, original = fmnist_random
    unl = ErasusUnlearner(task.original(0), strategy="simnpo", selector="active_learning")
    cs = unl.selector.select(unl.adapter, split.forget, prune_ratio=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        watched = unl.fit(split.forget, split.retain, split.holdout, coreset=cs, progress=False, seed=0)
        m = measure(watched.model, split, gold)
        only_coreset = ErasusUnlearner(task.original(0), strategy="simnpo").fit(
            split.forget, split.retain, split.holdout, coreset=cs, forget_eval_loader=cs.to_loader(split.forget),
            progress=False, seed=0)
        m_cs = measure(only_coreset.model, split, gold)
    assert m["avg_gap"] < original["avg_gap"] - 1.0, (m, original)
    assert m["avg_gap"] < m_cs["avg_gap"], (m, m_cs)
