"""Forget-set discovery recovers planted samples: a cluster of training samples like the
examples hidden in a classifier's training pool, by embedding and by gradient evidence,
with a recommended cut-off near the planted count; scores do not depend on the pool's
order (a classifier's loader, a language model's bucketed batches); arguments are checked."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from erasus.core.exceptions import ConfigError
from erasus.selectors import discover


@pytest.fixture(scope="module")
def planted():
    """A 3-class MLP trained on Gaussian blobs; 12 planted samples: a distinct 4th cluster
    labelled as class 0, part of the training data; the examples: 3 more of that cluster."""
    from erasus.models.training import train_classifier

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 10, generator=g) * 4
    x = torch.cat([centres[c] + torch.randn(100, 10, generator=g) for c in range(3)])
    y = torch.arange(3).repeat_interleave(100)
    plant = centres[3] + torch.randn(15, 10, generator=g)
    pool_x, pool_y = torch.cat([x, plant[:12]]), torch.cat([y, torch.zeros(12, dtype=torch.long)])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    train_classifier(model, DataLoader(TensorDataset(pool_x, pool_y), batch_size=32, shuffle=True,
                                       generator=torch.Generator().manual_seed(0)), epochs=30, lr=1e-2)
    pool = TensorDataset(pool_x, pool_y)
    examples = TensorDataset(plant[12:], torch.zeros(3, dtype=torch.long))
    return model.eval(), pool, examples, set(range(300, 312))


@pytest.mark.parametrize("method", ["embedding", "gradient", "both"])
def test_discovery_recovers_planted_samples(planted, method):
    model, pool, examples, truth = planted
    res = discover(model, DataLoader(pool, batch_size=64), examples, method=method)
    assert len(set(res.top(12).tolist()) & truth) >= 11  # precision at the true size
    assert 8 <= res.cutoff <= 24, res.summary()
    assert len(set(res.indices.tolist()) & truth) >= 0.8 * min(res.cutoff, 12)
    shuffled = discover(model, DataLoader(pool, batch_size=50, shuffle=True), examples, method=method)
    np.testing.assert_allclose(shuffled.scores, res.scores, rtol=1e-5, atol=1e-6)  # pool order, not loader order


def test_discovery_arguments_are_checked(planted):
    model, pool, examples, _ = planted
    with pytest.raises(ConfigError, match="examples"):
        discover(model, pool)
    with pytest.raises(ConfigError, match="method"):
        discover(model, pool, examples, method="magic")


def test_discovery_runs_on_a_language_model_whatever_the_pool_order():
    pytest.importorskip("transformers")
    from erasus.data.datasets.tofu import load_tofu
    from erasus.models.causal_lm import QACollator, gpt2_lm, qa_loader, word_tokenizer

    recs = load_tofu("full").records[:40]
    tok = word_tokenizer([r["question"] + " " + r["answer"] for r in recs] + ["Question: Answer:"])
    model = gpt2_lm(tok, n_layer=1, n_embd=32, seed=0).eval()
    coll = QACollator(tok, max_length=128)
    example = qa_loader(recs[5:6], coll, 1, shuffle=False)
    res = discover(model, qa_loader(recs, coll, 8, shuffle=False), example)
    again = discover(model, qa_loader(recs, coll, 8, seed=4), example)  # shuffled, bucketed batches
    np.testing.assert_allclose(again.scores, res.scores, rtol=1e-4, atol=1e-5)
    assert res.order[0] == 5  # the example itself is in the pool: it scores highest
    text = discover(model, qa_loader(recs, coll, 8, shuffle=False), query=recs[5]["question"], tokenizer=tok)
    assert len(text.scores) == 40 and np.isfinite(text.scores).all()
    with pytest.raises(ConfigError, match="tokenizer"):
        discover(model, recs, query="who?")
