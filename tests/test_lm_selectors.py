"""Gradient- and error-based selectors on a causal LM (a tiny GPT-2 on TOFU records): each
returns exactly k dataset indices, the same for a shuffled loader; the per-sample gradients
they use are each sample's exact gradient (checked against autograd on the full model,
LoRA parameters included); the projected Gauss-Newton influence ranks agree with the
unprojected one; EL2N is the per-token error norm averaged over answer tokens."""
import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from erasus.core.registry import build  # noqa: E402
from erasus.data.datasets.tofu import tofu_request  # noqa: E402
from erasus.models import wrap  # noqa: E402
from erasus.models.causal_lm import QACollator, gpt2_lm, qa_loader, tofu_texts, word_tokenizer  # noqa: E402
from erasus.selectors.lm_gradients import gauss_newton_influence, per_sample_gradients, token_el2n  # noqa: E402

SELECTORS = ("gradient_norm", "el2n", "influence", "tracin", "craig", "grad_match", "active_learning", "glister",
             "data_shapley")


@pytest.fixture(scope="module")
def lm():
    req = tofu_request("forget01")
    tok = word_tokenizer(tofu_texts(req))
    model = gpt2_lm(tok, n_layer=1, n_embd=32, n_head=2, seed=0)
    records = req.forget.records[:24]
    train = qa_loader(records, QACollator(tok, max_length=96), 8, seed=0)
    from erasus.models.training import train_classifier

    train_classifier(model, train, epochs=15, lr=3e-3, seed=0)  # a little memorisation: samples differ
    model.eval()
    ordered = qa_loader(records, QACollator(tok, max_length=96), 8, shuffle=False)
    shuffled = qa_loader(records, QACollator(tok, max_length=96), 8, seed=3)
    return model, tok, ordered, shuffled


@pytest.mark.parametrize("name", SELECTORS)
def test_selector_returns_k_indices_the_same_for_a_shuffled_loader(lm, name):
    model, _, ordered, shuffled = lm
    a = build("selector", name).select(model, ordered, k=8)
    b = build("selector", name).select(model, shuffled, k=8)
    assert len(a.indices) == 8 and len(set(a.indices.tolist())) == 8
    assert sorted(a.indices.tolist()) == sorted(b.indices.tolist())
    assert np.isfinite(a.scores).all()


def autograd_rows(model, loader, names=None):
    """Each sample's gradient of its mean answer NLL, by autograd on the whole model, one
    sample at a time (the reference the selectors' gradients must equal)."""
    a = wrap(model)
    params = [(n, p) for n, p in model.named_parameters() if names is None or n in names]
    rows = []
    for batch in loader:
        for i in range(batch["input_ids"].shape[0]):
            one = {k: (v[i:i + 1] if torch.is_tensor(v) and v.dim() >= 1 else v) for k, v in batch.items()}
            one["text"] = batch["text"][i:i + 1]
            n_real = int(one["attention_mask"].sum())
            for k in ("input_ids", "attention_mask", "labels"):
                one[k] = one[k][:, :n_real]
            for _, p in model.named_parameters():
                p.requires_grad_(True)
            g = torch.autograd.grad(a.per_sample_loss(one)[0], [p for _, p in params], allow_unused=True)
            rows.append(torch.cat([(x if x is not None else torch.zeros_like(p)).reshape(-1)
                                   for x, (_, p) in zip(g, params)]))
    return torch.stack(rows)


def test_per_sample_gradients_are_exact_and_norms_match(lm):
    model, _, ordered, _ = lm
    G = per_sample_gradients(wrap(model), ordered, params="all", dim=None)
    ref = autograd_rows(model, ordered)
    torch.testing.assert_close(G, ref, atol=1e-5, rtol=1e-4)
    norms = build("selector", "gradient_norm").score(wrap(model), ordered)
    np.testing.assert_allclose(norms, ref.norm(dim=1).numpy(), rtol=1e-4)
    assert norms.std() > 0.05 * norms.mean()  # the samples differ: the comparison means something


def test_lora_restricted_gradients_equal_the_full_models_gradients_on_lora_parameters(lm):
    peft = pytest.importorskip("peft")
    import copy

    model, _, ordered, _ = lm
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], init_lora_weights=False, fan_in_fan_out=True)
    pm = peft.get_peft_model(copy.deepcopy(model), cfg)
    names = [n for n, _ in pm.named_parameters() if "lora_" in n]
    G = per_sample_gradients(wrap(pm), ordered, params="lora", dim=None)
    assert not any(p.requires_grad for n, p in pm.named_parameters() if "lora_" not in n)  # flags as they were
    ref = autograd_rows(pm, ordered, names=set(names))  # autograd with every parameter trainable
    assert G.shape[1] == sum(p.numel() for n, p in pm.named_parameters() if "lora_" in n)
    assert ref.abs().max() > 0
    torch.testing.assert_close(G, ref, atol=1e-5, rtol=1e-4)


def test_projected_influence_ranks_agree_with_the_unprojected_gauss_newton_influence(lm):
    """Compares the same Gauss-Newton influence (each sample's influence on the forget set's
    loss, g_iᵀ (GᵀG/n + μI)⁻¹ Σ_j g_j) computed from the exact per-sample gradients of every
    parameter and from their 2048-dimensional CountSketch projections: the projection must keep
    the ranking (Spearman ≥ 0.8), and a 16-dimensional one is allowed to lose it."""
    from scipy.stats import spearmanr

    model, _, ordered, _ = lm
    a = wrap(model)
    exact = gauss_newton_influence(per_sample_gradients(a, ordered, params="all", dim=None))
    for seed in (0, 1):
        projected = gauss_newton_influence(per_sample_gradients(a, ordered, params="all", dim=2048, seed=seed))
        assert spearmanr(exact, projected).statistic >= 0.8
    selector = build("selector", "influence").score(a, ordered)  # the selector's defaults: dim 2048
    assert spearmanr(exact, selector).statistic >= 0.8
    tiny = gauss_newton_influence(per_sample_gradients(a, ordered, params="all", dim=16))
    assert spearmanr(exact, tiny).statistic < spearmanr(exact, selector).statistic


def test_token_el2n_is_the_error_norm_averaged_over_answer_tokens(lm):
    model, _, ordered, _ = lm
    batch = next(iter(ordered))
    scores = token_el2n(wrap(model), ordered)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    for i in range(3):
        lab = batch["labels"][i, 1:]
        m = lab != -100
        p = torch.softmax(logits[i, :-1][m].float(), -1)
        onehot = torch.nn.functional.one_hot(lab[m], p.shape[-1]).float()
        assert float(scores[i]) == pytest.approx(float((p - onehot).norm(dim=1).mean()), rel=1e-5)


def test_token_uncertainty_is_the_answer_tokens_mean_entropy(lm):
    from erasus.selectors.lm_gradients import token_uncertainty

    model, _, ordered, _ = lm
    batch = next(iter(ordered))
    ent = token_uncertainty(wrap(model), ordered, "entropy")
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    lab = batch["labels"][0, 1:]
    p = torch.softmax(logits[0, :-1][lab != -100].float(), -1)
    assert float(ent[0]) == pytest.approx(float(-(p * p.log()).sum(-1).mean()), rel=1e-5)


@pytest.mark.parametrize("name", ["representer", "valuation_network"])
def test_selectors_that_cannot_apply_to_language_models_say_why(lm, name):
    from erasus.core.exceptions import UnsupportedModelError

    model, _, ordered, _ = lm
    with pytest.raises(UnsupportedModelError, match="causal_lm.*: .*(label|classifier)"):
        build("selector", name).select(model, ordered, k=4)
