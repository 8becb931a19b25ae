"""The analysis views measure what they name: linear CKA equals the HSIC form of Kornblith et
al. computed another way and has the invariances the paper states; the loss landscape's
direction is filter-normalised as Li et al. define it, its centre is the model's loss, and the
model is left exactly as it was; the gradient-flow recorder sees the gradients the trainer
applied; the MIA ROC's AUC is the Mann-Whitney statistic; and every drawing depends on its
data (two different runs give different images)."""
import copy
import hashlib
import io

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

from erasus.visualization import analysis as A  # noqa: E402


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    assert len(buf.getvalue()) > 5_000
    return hashlib.sha1(buf.getvalue()).hexdigest()


@pytest.fixture(scope="module")
def run():
    from erasus.testing import tiny_problem
    from erasus.unlearners import ErasusUnlearner

    model, forget, retain, holdout = tiny_problem()
    rec = A.GradientFlowRecorder()
    res = ErasusUnlearner(copy.deepcopy(model), strategy="gradient_ascent").fit(
        forget, retain, holdout, progress=False, max_steps=12, min_steps=0, stopping="none", callbacks=[rec])
    return model, res, rec, forget, retain, holdout


def _hsic_cka(x, y):
    """CKA as HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with linear kernels and the centring matrix."""
    n = len(x)
    H = np.eye(n) - np.ones((n, n)) / n
    K, L = H @ (x @ x.T) @ H, H @ (y @ y.T) @ H
    hsic = lambda a, b: np.trace(a @ b)  # noqa: E731
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def test_linear_cka_matches_the_hsic_form_and_its_invariances():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 8)), rng.normal(size=(60, 5))
    assert A.linear_cka(x, y) == pytest.approx(_hsic_cka(x, y), rel=1e-9)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert A.linear_cka(x, 3.0 * x @ q + 1.0) == pytest.approx(1.0)  # rotation, scale, shift
    assert A.linear_cka(x, y) < 0.5
    with pytest.raises(Exception, match="same n"):
        A.linear_cka(x, y[:10])


def test_layer_similarity_compares_each_layer(run):
    model, res, _, forget, *_ = run
    d = A.layer_similarity_data({"self": model, "unlearned": res.model}, model, forget, base=model)
    assert d["cka"]["self"] == pytest.approx(np.ones(len(d["layers"])))
    assert np.allclose(d["weight_change"]["self"], 0) and (d["weight_change"]["unlearned"] > 0).all()
    act = A.layer_activations(res.model, forget)
    ref = A.layer_activations(model, forget)
    assert d["cka"]["unlearned"] == pytest.approx([A.linear_cka(act[n], ref[n]) for n in d["layers"]])


def test_the_landscape_direction_is_filter_normalised_and_the_model_is_restored(run):
    model, _, _, forget, retain, _ = run
    m = copy.deepcopy(model)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    dirs = A.filter_normalized_direction(m, torch.Generator().manual_seed(0))
    for p, d in zip(m.parameters(), dirs):
        if p.dim() <= 1:
            assert torch.count_nonzero(d) == 0
        else:
            torch.testing.assert_close(d.flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1))
    data = A.loss_landscape_data(m, {"forget": forget, "retain": retain}, steps=5, max_samples=None)
    from erasus.core.stats import split_stats
    from erasus.models import wrap

    assert data["loss"]["forget"][2] == pytest.approx(float(np.mean(split_stats(wrap(m), forget)["loss"])), rel=1e-5)
    assert data["loss"]["forget"][0] != pytest.approx(data["loss"]["forget"][2])  # the direction moves the loss
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k])
    two = A.loss_landscape_data(m, {"forget": forget}, dims=2, steps=3)
    assert two["loss"]["forget"].shape == (3, 3)
    assert _png(A.loss_landscape(m, {"forget": forget}, steps=5)) != _png(A.loss_landscape(m, {"forget": retain}, steps=5))


def test_gradient_flow_records_the_applied_gradients(run):
    _, res, rec, *_ = run
    assert rec.steps == list(range(1, res.steps + 1))
    layers = list(rec.norms)
    assert layers and all(len(v) == res.steps for v in rec.norms.values())
    assert all(np.isfinite(v).all() and (np.asarray(v) > 0).all() for v in rec.norms.values())
    other = A.GradientFlowRecorder()
    other.norms = {k: [2 * x for x in v] for k, v in rec.norms.items()}
    other.steps = rec.steps
    assert _png(A.gradient_flow(rec)) != _png(A.gradient_flow(other))
    with pytest.raises(Exception, match="no gradient"):
        A.gradient_flow(A.GradientFlowRecorder())


def test_mia_roc_auc_is_the_mann_whitney_statistic():
    rng = np.random.default_rng(1)
    mem, non = rng.normal(0.5, 1, 80), rng.normal(0, 1, 70)
    d = A.mia_roc_data({"m": (mem, non)})
    u = np.mean([(a > b) + 0.5 * (a == b) for a in mem for b in non])
    assert d["m"]["auc"] == pytest.approx(u)
    assert _png(A.mia_roc({"m": (mem, non)})) != _png(A.mia_roc({"m": (mem + 1, non)}))


def test_embeddings_share_one_projection_and_depend_on_the_model(run):
    model, res, _, forget, retain, _ = run
    pts, layer = A.embedding_data({"a": model, "b": res.model}, {"forget": forget, "retain": retain}, max_samples=50)
    feats, _ = A.embedding_features({"a": model, "b": res.model}, {"forget": forget, "retain": retain}, max_samples=50)
    from sklearn.decomposition import PCA

    stacked = np.concatenate([feats[m][g] for m in ("a", "b") for g in ("forget", "retain")])
    want = PCA(2, random_state=0).fit_transform(stacked)
    assert np.allclose(np.concatenate([pts[m][g] for m in ("a", "b") for g in ("forget", "retain")]), want, atol=1e-4)
    assert _png(A.embeddings({"a": model}, {"forget": forget})) != _png(A.embeddings({"a": res.model}, {"forget": forget}))
    with pytest.raises(Exception, match="method"):
        A.embedding_data({"a": model}, {"forget": forget}, method="lda")


def test_attention_maps_are_the_models_attention():
    pytest.importorskip("transformers")
    from erasus.models.causal_lm import gpt2_lm, word_tokenizer

    tok = word_tokenizer(["who wrote the book", "the author wrote it"])
    a, b = gpt2_lm(tok, seed=0), gpt2_lm(tok, seed=1)
    for m in (a, b):
        m.config._attn_implementation = "eager"
    enc = tok("who wrote the book", return_tensors="pt")
    att = A.attention_data(a, enc)
    n = enc["input_ids"].shape[1]
    assert att.shape[1:] == (n, n)
    assert np.allclose(att.sum(-1), 1, atol=1e-5) and np.allclose(np.triu(att, 1), 0)  # causal rows of weights
    assert _png(A.attention_maps({"a": a}, enc)) != _png(A.attention_maps({"a": b}, enc))


def test_run_comparison_draws_the_rows():
    rows = [{"method": "x", "forget_acc": 0.1, "test_acc": 0.8, "mia_auc": 0.5, "avg_gap": 1.0, "verdict": "PASS"},
            {"method": "y", "forget_acc": 0.9, "test_acc": 0.8, "mia_auc": 0.6, "avg_gap": 9.0, "verdict": "FAIL"}]
    changed = [dict(rows[0]), {**rows[1], "forget_acc": 0.2}]
    assert _png(A.run_comparison(rows)) != _png(A.run_comparison(changed))
    with pytest.raises(Exception, match="no \\['nope'\\]"):
        A.run_comparison(rows, metrics=("nope",))


def test_umap_projection_keeps_planted_clusters_apart():
    """UMAP (umap-learn) through the same shared projection: three planted clusters in 20-D
    stay apart in 2-D (each point's 5 nearest neighbours share its cluster), one projection
    serves both models' features, and the seed fixes the result."""
    pytest.importorskip("umap")
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 8, (3, 20))
    lab = np.repeat(np.arange(3), 40)
    x = centres[lab] + rng.normal(0, 1, (120, 20))
    feats = {"a": {"forget": x[:60]}, "b": {"forget": x[60:]}}
    pts = A.project(feats, "umap", seed=0)
    assert pts["a"]["forget"].shape == (60, 2) and pts["b"]["forget"].shape == (60, 2)
    y2 = np.concatenate([pts["a"]["forget"], pts["b"]["forget"]])
    knn = KNeighborsClassifier(6).fit(y2, lab)
    same = (lab[knn.kneighbors(y2, return_distance=False)[:, 1:]] == lab[:, None]).mean()
    assert same > 0.95, same
    assert np.allclose(A.project(feats, "umap", seed=0)["a"]["forget"], pts["a"]["forget"])


def test_the_specifications_visualisation_example_as_written(run, tmp_path, monkeypatch):
    """The specification's README block, on the tiny classifier (the attention part on a tiny
    GPT-2), and what each figure draws is the number it stands for."""
    pytest.importorskip("transformers")
    from erasus.models.causal_lm import gpt2_lm, word_tokenizer
    from erasus.visualization import (EmbeddingVisualizer, GradientVisualizer, LossLandscapeVisualizer,
                                      ReportGenerator)
    from erasus.visualization.attention import AttentionVisualizer
    from erasus.visualization.comparisons import ComparisonVisualizer, metric_comparison_data
    from erasus.visualization.plots import prediction_shift_data

    model_before, res, _, forget_loader, retain, holdout = run
    model, model_after, data_loader = res.model, res.model, forget_loader
    tok = word_tokenizer(["who wrote the book", "the author wrote it"])
    lm_before, lm_after = gpt2_lm(tok, seed=0), gpt2_lm(tok, seed=1)
    for m in (lm_before, lm_after):
        m.config._attn_implementation = "eager"
    inputs = tok("who wrote the book", return_tensors="pt")
    from erasus.unlearners import ErasusUnlearner

    u = ErasusUnlearner(model_before)
    metrics_before = u.evaluate(forget_loader, retain, holdout_data=holdout)
    metrics_after = ErasusUnlearner(model_after).evaluate(forget_loader, retain, holdout_data=holdout)
    metrics = dict(metrics_after)
    monkeypatch.chdir(tmp_path)

    # t-SNE / PCA embeddings
    viz = EmbeddingVisualizer(model)
    fig_e = viz.plot(data_loader, method="tsne")
    weights = [p.detach().clone() for p in model.parameters()]
    # Loss landscape
    landscape = LossLandscapeVisualizer(model)
    fig_l = landscape.plot_2d_contour(data_loader)
    # Attention heatmaps (before vs. after)
    attn_viz = AttentionVisualizer(lm_after)
    fig_a = attn_viz.plot_attention_comparison(inputs, lm_before)
    # Before/after comparisons
    comp = ComparisonVisualizer()
    fig_p = comp.plot_prediction_shift(model_before, model_after, forget_loader)
    fig_m = comp.plot_metric_comparison(metrics_before, metrics_after)
    # HTML report
    report = ReportGenerator("Unlearning Report")
    report.add_metrics(metrics)
    report.save("report.html")

    # the embedding's points are the model's projected features
    pts, _ = viz.data(data_loader, method="tsne")
    assert np.allclose(fig_e.axes[0].collections[0].get_offsets(), pts["model"]["data"])
    # the landscape: one contour panel, and the model left exactly as it was
    assert len([ax for ax in fig_l.axes if ax.get_title()]) == 1
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), weights))
    # attention: the images are each model's head-averaged attention
    assert np.allclose(fig_a.axes[0].images[0].get_array(), A.attention_data(lm_before, inputs).mean(0))
    assert np.allclose(fig_a.axes[1].images[0].get_array(), attn_viz.attention(inputs).mean(0))
    # the prediction shift's cells count the samples
    M = prediction_shift_data(model_before, model_after, forget_loader)
    shown = {(int(round(t.get_position()[1])), int(round(t.get_position()[0]))): int(t.get_text())
             for t in fig_p.axes[0].texts}
    assert shown == {(i, j): int(M[i, j]) for i, j in zip(*np.nonzero(M))} and M.sum() == len(forget_loader.dataset)
    # the metric bars are the two runs' values
    d = metric_comparison_data({"before": metrics_before, "after": metrics_after})
    moved = [k for k in d if d[k]["before"] != d[k]["after"]]
    assert moved and {ax.get_title() for ax in fig_m.axes if ax.get_visible()} == set(d)
    for k in moved:
        panel = next(ax for ax in fig_m.axes if ax.get_title() == k)
        assert [p.get_height() for p in panel.patches] == pytest.approx([d[k]["before"], d[k]["after"]])
    # the report holds every metric, and is not overwritten unless asked
    text = (tmp_path / "report.html").read_text()
    assert all(k in text for k in metrics) and f"{metrics['forget_accuracy']:.4g}" in text
    with pytest.raises(FileExistsError):
        report.save("report.html")

    # gradients per layer: the forget set's gradient norms are those of its mean loss
    grads = GradientVisualizer(model_before)
    norms = grads.layer_norms({"forget": forget_loader, "retain": retain})
    from erasus.models import wrap
    from erasus.utils.data import ordered_loader

    model_before.zero_grad()
    adapter = wrap(model_before)
    xs = [b for b in ordered_loader(forget_loader)]
    total = sum(adapter.per_sample_loss(b).sum() for b in xs) / len(forget_loader.dataset)
    total.backward()
    name, p = next((n, p) for n, p in model_before.named_parameters() if n.endswith("weight"))
    layer = name.rsplit(".", 1)[0]
    bias = dict(model_before.named_parameters()).get(f"{layer}.bias")
    want = float(torch.sqrt(p.grad.pow(2).sum() + (bias.grad.pow(2).sum() if bias is not None else 0)))
    model_before.zero_grad(set_to_none=True)
    assert norms["forget"][layer] == pytest.approx(want, rel=1e-4)
    assert all(p.grad is None for p in model_before.parameters())  # left as it was
    assert len(grads.plot_layer_norms({"forget": forget_loader, "retain": retain}).axes[0].patches) == 2 * len(norms["forget"])
