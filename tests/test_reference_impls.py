"""Metrics and gradients against reference implementations."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import mannwhitneyu
from sklearn.metrics import accuracy_score

from erasus.core.trainer import loss_auc, split_stats
from erasus.metrics import MetricSuite
from erasus.models import wrap
from erasus.selectors._common import per_sample_grad_norms


def test_accuracy_and_mia_auc_match_sklearn_and_mann_whitney(tiny):
    model, forget, retain, holdout = tiny
    out = MetricSuite(["accuracy", "mia"]).run(model, forget, retain, holdout_loader=holdout)
    xs, ys = zip(*[forget.dataset[i] for i in range(len(forget.dataset))])
    x, y = torch.stack(xs), torch.stack(ys)
    with torch.no_grad():
        pred = model(x).argmax(1)
    assert out["forget_accuracy"] == pytest.approx(accuracy_score(y.numpy(), pred.numpy()))
    a = split_stats(wrap(model), forget)["loss"]
    b = split_stats(wrap(model), holdout)["loss"]
    u = mannwhitneyu(-a, -b).statistic / (len(a) * len(b))
    assert out["mia_auc"] == pytest.approx(u)
    assert loss_auc(np.zeros(5), np.ones(5)) == 1.0  # members with lower loss: perfectly separated


def test_per_sample_gradient_norms_match_autograd_loop(tiny):
    model, forget, _, _ = tiny
    from erasus.utils.data import ordered_loader

    loader = ordered_loader(forget)
    got = per_sample_grad_norms(wrap(model), loader)
    want = []
    for i in range(len(forget.dataset)):
        x, y = forget.dataset[i]
        model.zero_grad()
        F.cross_entropy(model(x.unsqueeze(0)), y.view(1)).backward()
        want.append(torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters())).item())
    assert np.allclose(got, want, rtol=1e-4, atol=1e-6)

    got_last = per_sample_grad_norms(wrap(model), loader, last_layer=True)
    want_last = []
    for i in range(len(forget.dataset)):
        x, y = forget.dataset[i]
        model.zero_grad()
        F.cross_entropy(model(x.unsqueeze(0)), y.view(1)).backward()
        head = model[3]
        want_last.append(torch.sqrt(head.weight.grad.pow(2).sum() + head.bias.grad.pow(2).sum()).item())
    assert np.allclose(got_last, want_last, rtol=1e-4, atol=1e-6)


def test_mia_efficacy_separates_members_from_nonmembers(fmnist_small):
    """On a memorising model, retained training samples look like members (low efficacy)
    and test samples like non-members (high efficacy)."""

    model = fmnist_small.original(0)
    split = fmnist_small.split("random", seed=0)
    m = MetricSuite(["mia_efficacy"])
    on_forget = m.run(model, split.forget, split.retain, split.test)["mia_efficacy"]
    on_test = m.run(model, split.test, split.retain, split.test)["mia_efficacy"]
    assert on_forget < 0.1 and on_test > on_forget + 0.1


def test_kcenter_covers_and_herding_tracks_the_mean(tiny):
    from erasus.selectors import HerdingSelector, KCenterSelector
    from erasus.selectors._common import collect_features
    from erasus.utils.data import ordered_loader

    model, forget, _, _ = tiny
    X = collect_features(wrap(model), ordered_loader(forget))
    rng = np.random.default_rng(0)
    k = 4
    kc = KCenterSelector().select(model, forget, k=k).indices
    radius = lambda idx: np.max(np.min(((X[:, None, :] - X[idx][None]) ** 2).sum(-1), axis=1))
    rand_r = np.median([radius(rng.choice(len(X), k, replace=False)) for _ in range(50)])
    assert radius(kc) <= rand_r
    he = HerdingSelector().select(model, forget, k=k).indices
    err = lambda idx: np.linalg.norm(X[idx].mean(0) - X.mean(0))
    rand_e = np.median([err(rng.choice(len(X), k, replace=False)) for _ in range(50)])
    assert err(he) < rand_e
