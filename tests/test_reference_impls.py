"""Metrics and gradients against reference implementations."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import mannwhitneyu
from sklearn.metrics import accuracy_score

from erasus.core.stats import loss_auc, split_stats
from erasus.metrics import MetricSuite
from erasus.models import wrap
from erasus.selectors._common import last_layer_grad_factors, per_sample_grad_norms


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


def test_mia_accuracy_is_the_best_threshold_by_brute_force(tiny):
    """``mia_accuracy``: every loss threshold tried by hand, each side "member" in turn, the
    best balanced accuracy; equal to the metric on a model, 0.5 for identical sets, 1.0 for
    separated ones in either direction."""
    from erasus.core.stats import best_threshold_accuracy

    rng = np.random.default_rng(0)
    m, n = rng.normal(0.0, 1.0, 40), rng.normal(0.7, 1.0, 60)

    def by_hand(m, n):
        best = 0.5
        for t in np.r_[m, n, np.inf]:
            tpr, fpr = (m < t).mean(), (n < t).mean()
            best = max(best, 0.5 + abs(tpr - fpr) / 2)
        return best

    assert best_threshold_accuracy(m, n) == pytest.approx(by_hand(m, n))
    assert best_threshold_accuracy(np.ones(5), np.ones(7)) == 0.5
    assert best_threshold_accuracy(np.zeros(5), np.ones(5)) == best_threshold_accuracy(np.ones(5), np.zeros(5)) == 1.0
    model, forget, retain, holdout = tiny
    out = MetricSuite(["mia_accuracy"]).run(model, forget, retain, holdout_loader=holdout)
    a, b = split_stats(wrap(model), forget)["loss"], split_stats(wrap(model), holdout)["loss"]
    assert out["mia_accuracy"] == pytest.approx(by_hand(a, b))


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


def _logreg_data(n=80, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, 2, generator=g)
    y = (x @ w).argmax(1)
    flip = torch.rand(n, generator=g) < 0.1
    y[flip] = 1 - y[flip]
    return x, y


def test_influence_matches_explicit_inverse_hessian_on_l2_logistic_regression():
    """Influence scores on an L2-regularised (damping = λ) softmax regression against the
    exact formula with an explicitly inverted Hessian: Spearman >= 0.9 for every solver."""
    from scipy.stats import spearmanr
    from torch.utils.data import DataLoader, TensorDataset

    from erasus.models.training import train_classifier
    from erasus.selectors import InfluenceSelector

    x, y = _logreg_data()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 2))
    data = DataLoader(TensorDataset(x, y), batch_size=16)
    train_classifier(model, DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True), epochs=30, lr=0.05,
                     weight_decay=0.01)
    lam = 0.01
    # exact reference: per-sample gradients and the Hessian of the mean loss, by autograd
    params = [model[0].weight, model[0].bias]

    def flat_grad(loss, create_graph=False):
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params, create_graph=create_graph)])

    G = torch.stack([flat_grad(F.cross_entropy(model(x[i:i + 1]), y[i:i + 1])) for i in range(len(x))]).double()
    g_mean = flat_grad(F.cross_entropy(model(x), y), create_graph=True)
    H = torch.stack([torch.cat([h.flatten() for h in torch.autograd.grad(g_mean[j], params, retain_graph=True)])
                     for j in range(len(g_mean))]).double()
    H = H + lam * torch.eye(len(H), dtype=torch.float64)
    exact = (G @ torch.linalg.solve(H, G.sum(0))).numpy()
    exact_self = np.einsum("ij,ij->i", G.numpy(), torch.linalg.solve(H, G.T).T.numpy())
    for solver in ("exact", "cg", "lissa"):
        sel = InfluenceSelector(solver=solver, damping=lam, last_layer=False, iters=300, scale=10.0)
        cs = sel.select(model, data, k=len(x))
        scores = np.empty(len(x))
        scores[cs.indices] = cs.scores
        assert spearmanr(scores, exact).statistic >= 0.9, solver
    self_scores = InfluenceSelector(target="self", damping=lam, last_layer=False).score(wrap(model), data)
    assert spearmanr(self_scores, exact_self).statistic >= 0.99
    # k is honoured
    assert len(InfluenceSelector(damping=lam).select(model, data, k=7)) == 7


def test_tracin_on_one_checkpoint_is_the_gradient_dot_product(tmp_path):
    from torch.utils.data import DataLoader, TensorDataset

    from erasus.selectors import CheckpointRecorder, TracInSelector

    x, y = _logreg_data(n=30)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    data = DataLoader(TensorDataset(x, y), batch_size=8)
    params = list(model.parameters())
    G = torch.stack([torch.cat([g.flatten() for g in torch.autograd.grad(
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]), params)]) for i in range(len(x))]).double()
    rec = CheckpointRecorder(tmp_path)
    rec.save(model, lr=0.5)
    s = TracInSelector(**rec.config(), last_layer=False).score(wrap(model), data)
    np.testing.assert_allclose(s, 0.5 * (G @ G.sum(0)).numpy(), rtol=1e-5, atol=1e-8)
    s_self = TracInSelector(**rec.config(), target="self", last_layer=False).score(wrap(model), data)
    np.testing.assert_allclose(s_self, 0.5 * (G * G).sum(1).numpy(), rtol=1e-5, atol=1e-8)


def test_lazy_greedy_facility_location_equals_plain_greedy_and_beats_random():
    from erasus.selectors.submodular import facility_location_greedy

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    D = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1))
    S = D.max() - D
    F = lambda A: S[:, A].max(1).sum()
    chosen, gains = facility_location_greedy(S, 8)
    plain = []
    for _ in range(8):  # plain greedy, by brute force
        plain.append(max((j for j in range(60) if j not in plain), key=lambda j: F(plain + [j])))
    assert chosen.tolist() == plain
    assert np.allclose(np.cumsum(gains)[-1], F(plain))
    assert F(plain) >= max(F(rng.choice(60, 8, replace=False).tolist()) for _ in range(50))


def test_craig_gradient_distances_match_explicit_last_layer_gradients(tiny):
    from erasus.selectors import CraigSelector
    from erasus.utils.data import ordered_loader

    model, forget, _, _ = tiny
    R, H = last_layer_grad_factors(wrap(model), ordered_loader(forget))
    x, y = next(iter(ordered_loader(forget, batch_size=100)))
    explicit = []
    for i in range(len(y)):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        explicit.append(torch.cat([model[3].weight.grad.flatten(), model[3].bias.grad]))
    E = torch.stack(explicit).double()
    implicit = torch.stack([torch.cat([torch.outer(R[i], H[i][:-1]).flatten(), R[i]]) for i in range(len(R))])
    assert torch.allclose(E, implicit, atol=1e-6)
    # the Gram matrix CRAIG and GradMatch work in is that of the explicit gradients
    K = CraigSelector()._gram(wrap(model), ordered_loader(forget))
    assert torch.allclose(K[:len(E), :len(E)], E @ E.T, atol=1e-6)


def test_forgetting_events_count_correct_to_incorrect_transitions():
    from erasus.selectors import TrainingDynamicsRecorder

    rec = TrainingDynamicsRecorder(3)
    seq = {0: [1, 0, 1, 0], 1: [0, 1, 1, 1], 2: [0, 0, 0, 0]}  # 2 events, 0 events, never learned
    for t in range(4):
        rec.update([0, 1, 2], [seq[i][t] for i in range(3)], [float(t)] * 3)
    assert rec.forgets.tolist() == [2, 0, 0] and rec.learned.tolist() == [True, True, False]
    assert rec.loss_sum.tolist() == [6.0] * 3 and rec.seen.tolist() == [4] * 3


def test_dynamics_selectors_find_mislabelled_training_samples(tmp_path):
    """Digits with 20 flipped labels: the samples with the most forgetting events and the
    highest accumulated loss over training are mostly the flipped ones (random: 20/200)."""
    from torch.utils.data import DataLoader, Subset, TensorDataset

    from erasus.data.vision import load_digits
    from erasus.models.training import train_classifier
    from erasus.models.zoo import mlp
    from erasus.selectors import ForgettingEventsSelector, LossAccumulationSelector, TrainingDynamicsRecorder
    from erasus.strategies import IndexedDataset

    clean, _ = load_digits(test_fraction=0.4, seed=0)
    x, y = clean.tensors
    y = y.clone()
    flipped = np.arange(0, 200, 10)
    y[flipped] = (y[flipped] + 3) % 10
    train = TensorDataset(x, y)
    rec = TrainingDynamicsRecorder(len(train))
    torch.manual_seed(0)
    model = mlp(64, 64, 10)
    train_classifier(model, DataLoader(IndexedDataset(train), batch_size=32, shuffle=True), epochs=20, lr=3e-3,
                     dynamics=rec)
    path = rec.save(tmp_path / "dyn.npz")
    forget = DataLoader(Subset(train, list(range(200))), batch_size=50)
    for sel in (ForgettingEventsSelector(record=str(path)), LossAccumulationSelector(record=str(path))):
        top = sel.select(model, forget, k=20).indices
        assert len(set(top.tolist()) & set(flipped.tolist())) >= 14, type(sel).__name__


def test_grad_match_reconstructs_the_forget_gradient_better_than_random(tiny):
    from scipy.optimize import nnls

    from erasus.selectors import GradMatchSelector
    from erasus.utils.data import ordered_loader

    model, forget, _, _ = tiny
    sel = GradMatchSelector(lam=0.0)
    R, H = last_layer_grad_factors(wrap(model), ordered_loader(forget))
    G = torch.stack([torch.outer(r, h).flatten() for r, h in zip(R, H)]).numpy()
    target = G.sum(0)
    cs = sel.select(model, forget, k=4)
    w = np.zeros(len(G))
    w[cs.indices] = cs.scores
    err = np.linalg.norm(G.T @ w - target)
    rng = np.random.default_rng(0)
    rand = [np.linalg.norm(G[idx].T @ nnls(G[idx].T, target)[0] - target)
            for idx in (rng.choice(len(G), 4, replace=False) for _ in range(30))]
    assert err <= np.median(rand)
    full = sel.select(model, forget, k=len(G))
    w = np.zeros(len(G))
    w[full.indices] = full.scores
    assert np.linalg.norm(G.T @ w - target) < 1e-6 * np.linalg.norm(target) + 1e-9


def test_grad_match_equals_plain_omp_with_ridge_nnls_refits(tiny):
    """The Gram-space OMP (Cholesky updates, NNLS only when the ridge fit goes negative)
    picks the same samples with the same weights as the textbook loop that refits a ridge
    NNLS on the explicit gradients after every pick."""
    from scipy.optimize import nnls

    from erasus.selectors import GradMatchSelector
    from erasus.utils.data import ordered_loader

    model, forget, _, _ = tiny
    sel = GradMatchSelector()
    R, H = last_layer_grad_factors(wrap(model), ordered_loader(forget))
    G = torch.stack([torch.outer(r, h).flatten() for r, h in zip(R, H)]).double().numpy()
    target = G.sum(0)
    lam = sel.config.lam * float((G * G).sum(1).mean())
    k = 8
    chosen, residual = [], target.copy()
    for _ in range(k):
        corr = G @ residual
        corr[chosen] = -np.inf
        chosen.append(int(np.argmax(corr)))
        A = G[chosen].T
        w_ref, _ = nnls(np.vstack([A, np.sqrt(lam) * np.eye(len(chosen))]),
                        np.concatenate([target, np.zeros(len(chosen))]))
        residual = target - A @ w_ref
    picks, w = sel._select(wrap(model), ordered_loader(forget), k)
    assert picks.tolist() == chosen
    np.testing.assert_allclose(w, w_ref, rtol=1e-6, atol=1e-9 * np.abs(w_ref).max())


def test_voting_of_one_selector_reproduces_its_ranking_and_fusion_respects_weights(tiny):
    from erasus.selectors import EL2NSelector, VotingSelector, WeightedFusionSelector

    model, forget, _, _ = tiny
    ref = EL2NSelector().select(model, forget, k=5)
    assert set(VotingSelector(selectors=["el2n"]).select(model, forget, k=5).indices) == set(ref.indices)
    fused = WeightedFusionSelector(selectors=["el2n", "kcenter"], weights=[1.0, 0.0]).select(model, forget, k=5)
    assert set(fused.indices) == set(ref.indices)


def test_hook_gradient_norms_match_vmap_on_conv_and_fall_back_for_batchnorm():
    """The closed-form (hooks) per-sample gradient norms equal torch.func's on a CNN with
    padding and stride; a BatchNorm model is outside the closed forms: auto uses vmap,
    method='hooks' says why it cannot."""
    from torch.utils.data import DataLoader, TensorDataset

    from erasus.core.exceptions import UnsupportedModelError

    torch.manual_seed(0)
    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 6, 3, stride=2, padding=1), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(6 * 4 * 4, 5))
    loader = DataLoader(TensorDataset(torch.randn(20, 1, 8, 8), torch.randint(0, 5, (20,))), batch_size=8)
    hooks = per_sample_grad_norms(wrap(cnn), loader, method="hooks")
    ref = per_sample_grad_norms(wrap(cnn), loader, method="vmap")
    np.testing.assert_allclose(hooks, ref, rtol=1e-5)
    bn = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                             torch.nn.Linear(4 * 6 * 6, 5)).eval()
    np.testing.assert_allclose(per_sample_grad_norms(wrap(bn), loader), per_sample_grad_norms(wrap(bn), loader,
                                                                                               method="vmap"))
    with pytest.raises(UnsupportedModelError, match="vmap"):
        per_sample_grad_norms(wrap(bn), loader, method="hooks")
