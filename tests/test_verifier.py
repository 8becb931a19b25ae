"""UnlearningVerifier: hypothesis tests that rank the sanity ladder correctly."""
import copy

import pytest
import torch

from erasus.certification import UnlearningVerifier


def reset(model):
    m = copy.deepcopy(model)
    torch.manual_seed(123)
    for mod in m.modules():
        if hasattr(mod, "reset_parameters"):
            mod.reset_parameters()
    return m.eval()


@pytest.mark.parametrize("kind", ["random", "class"])
def test_verifier_fails_the_original_and_a_reset_model_and_passes_the_retrained_one(kind, fmnist_small):
    split = fmnist_small.split(kind, forget_class=1, seed=0)
    original, gold = fmnist_small.original(0), fmnist_small.gold(split, 0)
    v = UnlearningVerifier(significance=0.05)
    run = lambda m: v.verify_all(m, split.forget, split.retain, split.holdout, gold_model=gold)
    o, g, r = run(original), run(gold), run(reset(original))
    assert not o.passed and not o["forget_above_retain_mw"].passed
    assert not o["forget_accuracy_vs_gold_mcnemar"].passed
    if kind == "random":  # unseen samples of a learned class are fitted as well as seen ones: KS says nothing then
        assert not o["forget_vs_holdout_ks"].passed
    assert g.passed, str(g)
    assert not r.passed, str(r)
    assert "forget_vs_holdout_ks" in str(o) and o.to_dict()["passed"] is False


def test_verifier_rejects_bad_significance():
    with pytest.raises(ValueError, match="significance"):
        UnlearningVerifier(significance=1.5)


def test_certified_removal_newton_step_matches_retraining_and_certifies_honestly():
    """Guo et al. 2020 on L2-regularised logistic regression: the Newton removal lands
    near the model retrained without the samples (same perturbation b), the verifier
    certifies it within budget, and refuses an untouched model, a model without loss
    perturbation, a non-certifiable model, and a budget overrun."""
    import numpy as np

    from erasus.certification import CertifiedLogisticRegression, CertifiedRemovalVerifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 5))
    X /= np.linalg.norm(X, axis=1, keepdims=True)  # ||x|| <= 1, as the paper assumes
    y = (X @ rng.normal(size=5) + 0.3 * rng.normal(size=600) > 0).astype(int)
    kw = dict(lam=1e-2, sigma=5.0, seed=3)
    model = CertifiedLogisticRegression(**kw).fit(X, y)
    v = CertifiedRemovalVerifier(epsilon=1.0, delta=1e-5)
    assert not v.verify(model)["certified"] and "no removal" in v.verify(model)["reason"]
    removed = np.arange(10)
    bound = model.remove(removed)
    retrained = CertifiedLogisticRegression(**kw).fit(X[10:], y[10:])
    w_full = CertifiedLogisticRegression(**kw).fit(X, y).W
    # the Newton step moves most of the way from the original optimum to the retrained one
    assert (model.W - retrained.W).norm() < 0.1 * (w_full - retrained.W).norm()
    # and the data-dependent bound really bounds the gradient residual
    assert model.gradient_norm() <= bound + model.fit_gradient_norm + 1e-9
    # within the certified distance: the objective on the remaining n - k points is
    # λ(n - k)-strongly convex, so ||w⁻ − w'|| <= (residual(w⁻) + residual(w')) / (λ (n - k))
    certified_distance = (bound + model.fit_gradient_norm + retrained.fit_gradient_norm) / (kw["lam"] * (600 - 10))
    assert (model.W - retrained.W).norm() <= certified_distance
    res = v.verify(model)
    assert res["certified"], res
    assert res["epsilon_achieved"] <= 1.0
    # refusals
    assert not v.verify(CertifiedLogisticRegression(lam=1e-2, sigma=0.0).fit(X, y))["certified"]
    assert "not a certifiable model" in v.verify(torch.nn.Linear(5, 2))["reason"]
    strict = CertifiedRemovalVerifier(epsilon=1e-6, delta=1e-5)
    r2 = strict.verify(model)
    assert not r2["certified"] and "exceeds the budget" in r2["reason"]
