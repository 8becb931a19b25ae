"""Encoder-decoder (T5) and masked (BERT) language models trained here from scratch on five
TOFU authors: the adapters score the target tokens exactly as a hand computation does, and
the likelihood-based strategies raise the forget answers' loss more than the retain answers'."""
import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from erasus.data.datasets.tofu import load_tofu  # noqa: E402
from erasus.models import (  # noqa: E402
    MaskedLMAdapter,
    MaskingCollator,
    Seq2SeqCollator,
    Seq2SeqLMAdapter,
    wrap,
)
from erasus.models.causal_lm import qa_loader, word_tokenizer  # noqa: E402
from erasus.models.training import train_classifier  # noqa: E402


def _world(kind):
    recs = load_tofu("full").records[:100]
    tok = word_tokenizer([r["question"] + " " + r["answer"] for r in recs] + ["question:"], mask_token=kind == "mlm")
    torch.manual_seed(0)
    if kind == "t5":
        cfg = transformers.T5Config(vocab_size=len(tok), d_model=64, d_ff=128, d_kv=16, num_layers=2,
                                    num_decoder_layers=2, num_heads=4, pad_token_id=0, eos_token_id=2,
                                    decoder_start_token_id=0, dropout_rate=0.0)
        model, coll = transformers.T5ForConditionalGeneration(cfg), Seq2SeqCollator(tok, max_length=96)
        epochs = 60
    else:
        cfg = transformers.BertConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=128, max_position_embeddings=128, pad_token_id=0,
                                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        model, coll = transformers.BertForMaskedLM(cfg), MaskingCollator(tok, max_length=96, mask_prob=0.3)
        epochs = 120  # the masked tokens are fixed per record (seed), so the model memorises them
    loader = qa_loader(recs, coll, 20, seed=0, group_by_length=False)
    train_classifier(model, loader, epochs=epochs, lr=3e-3, seed=0)
    forget, retain = recs[80:], recs[:80]
    mk = lambda rs, shuffle: qa_loader(rs, coll, 10, seed=1, shuffle=shuffle, group_by_length=False)  # noqa: E731
    return model.eval(), mk(forget, True), mk(retain, True), mk(forget, False), mk(retain, False)


@pytest.fixture(scope="module", params=["t5", "mlm"])
def world(request):
    return request.param, _world(request.param)


def mean_nll(model, loader):
    with torch.no_grad():
        return float(torch.cat([wrap(model).per_sample_loss(b) for b in loader]).mean())


def test_adapters_score_the_target_tokens_like_a_hand_computation(world):
    kind, (model, _, _, forget_eval, _) = world
    a = wrap(model)
    assert isinstance(a, Seq2SeqLMAdapter if kind == "t5" else MaskedLMAdapter)
    b = next(iter(forget_eval))
    with torch.no_grad():
        if kind == "t5":
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).logits
        else:
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    manual = []
    for i in range(len(b["input_ids"])):
        m = b["labels"][i] != -100
        lp = torch.log_softmax(logits[i][m], -1)
        manual.append(-lp[torch.arange(int(m.sum())), b["labels"][i][m]].mean())
    np.testing.assert_allclose(a.per_sample_loss(b).detach().numpy(), torch.stack(manual).numpy(), rtol=1e-5)
    assert mean_nll(model, forget_eval) < 1.0  # the answers are learnt
    with pytest.raises(Exception, match="labels"):
        a.per_sample_loss({"input_ids": b["input_ids"]})


@pytest.mark.parametrize("name", ["gradient_ascent", "negative_gradient", "npo", "simnpo", "undial"])
def test_likelihood_strategies_forget_on_seq2seq_and_masked_lms(world, name):
    from erasus.unlearners import ErasusUnlearner

    kind, (model, forget, retain, forget_eval, retain_eval) = world
    f0, r0 = mean_nll(model, forget_eval), mean_nll(model, retain_eval)
    res = ErasusUnlearner(model, strategy=name).fit(forget, retain, progress=False, seed=0, max_epochs=10, min_steps=20)
    f1, r1 = mean_nll(res.model, forget_eval), mean_nll(res.model, retain_eval)
    assert f1 - f0 > 0.5 and f1 - f0 > 2 * (r1 - r0), (kind, name, f0, f1, r0, r1)
    assert mean_nll(model, forget_eval) == pytest.approx(f0)


def test_masking_collator_masks_only_answer_tokens_and_is_deterministic():
    recs = load_tofu("full").records[:4]
    tok = word_tokenizer([r["question"] + " " + r["answer"] for r in recs], mask_token=True)
    coll = MaskingCollator(tok, mask_prob=0.5, seed=3)
    b1, b2 = coll(recs), coll(recs)
    assert torch.equal(b1["input_ids"], b2["input_ids"])
    for i, r in enumerate(recs):
        nq = len(tok(r["question"])["input_ids"])
        scored = (b1["labels"][i] != -100).nonzero().flatten()
        assert (scored >= nq).all() and len(scored) >= 1
        assert (b1["input_ids"][i][scored] == tok.mask_token_id).all()
    with pytest.raises(Exception, match="mask token"):
        MaskingCollator(word_tokenizer(["a b"]))
