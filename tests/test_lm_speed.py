"""The fast language-model loop, checked on CPU: the tokenizer is not called during ``fit``;
TOFU forget10 batches come in at most 8 shapes per epoch; NPO and IdkDPO with the
reference's log-likelihoods cached give the losses of the per-step reference and hold no
reference model in the loop; logits exist only at answer positions (and equal the full
computation, chunked or not); erasus reads a tensor back at most once per ``log_every`` steps."""
import collections
import sys

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from erasus.core.callbacks import Callback  # noqa: E402
from erasus.data.datasets.tofu import load_idk, tofu_request  # noqa: E402
from erasus.models import wrap  # noqa: E402
from erasus.models.batching import BucketBatchSampler, bucket_edges  # noqa: E402
from erasus.models.causal_lm import QACollator, gpt2_lm, qa_loader, tofu_texts, word_tokenizer  # noqa: E402
from erasus.unlearners import LLMUnlearner  # noqa: E402


@pytest.fixture(scope="module")
def tofu10():
    req = tofu_request("forget10")
    return req, word_tokenizer(tofu_texts(req))


def small(req, tok, n_forget=48, n_retain=96, batch=8, alt=False, **kw):
    coll = lambda: QACollator(tok, max_length=128, alt_answers=load_idk() if alt else None)  # noqa: E731
    return (qa_loader(req.forget.records[:n_forget], coll(), batch, seed=0, **kw),
            qa_loader(req.retain.records[:n_retain], coll(), batch, seed=0, **kw))


def test_tofu_forget10_batches_have_at_most_8_shapes_and_cover_every_record(tofu10):
    req, tok = tofu10
    for kw in ({"batch_size": 32}, {"max_tokens": 2048}):
        for recs in (req.forget.records, req.retain.records):
            loader = qa_loader(recs, QACollator(tok, max_length=128), seed=0, **kw)
            for _ in range(2):  # two epochs, reshuffled
                shapes, seen, real, padded = collections.Counter(), [], 0, 0
                for b in loader:
                    shapes[tuple(b["input_ids"].shape)] += 1
                    seen += b["index"].tolist()
                    real += int(b["attention_mask"].sum())
                    padded += b["input_ids"].numel()
                    if "max_tokens" in kw:  # a token budget, not a count of sequences
                        assert b["input_ids"].numel() <= kw["max_tokens"] or b["input_ids"].shape[0] == 1
                assert len(shapes) <= 8, shapes
                assert sorted(seen) == list(range(len(recs)))
                assert padded < 1.2 * real  # few shapes, still little padding


def test_bucket_sampler_shapes_are_bounded_on_any_lengths():
    rng = np.random.default_rng(0)
    for trial in range(20):
        lengths = rng.integers(3, 300, size=int(rng.integers(1, 500))).tolist()
        edges = bucket_edges(lengths, buckets=int(rng.integers(1, 7)))
        assert edges[-1] >= max(lengths) and all(e % 8 == 0 for e in edges)
        kw = {"max_tokens": int(rng.integers(300, 5000))} if trial % 2 else {"batch_size": int(rng.integers(1, 40))}
        sampler = BucketBatchSampler(lengths, edges, seed=trial, **kw)
        batches = list(sampler)
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        shapes = set()
        for b in batches:
            longest = max(lengths[i] for i in b)
            shapes.add((len(b), next(e for e in edges if e >= longest)))
        assert len(shapes) <= len(edges) + 1, (shapes, edges)


def test_bucket_edges_minimise_padding_exactly():
    rng = np.random.default_rng(1)
    lengths = rng.integers(5, 90, size=60)
    rounded = -(-lengths // 8) * 8
    cand = sorted(set(rounded.tolist()))
    waste = lambda es: sum(min(e for e in es if e >= n) - n for n in lengths)  # noqa: E731
    import itertools

    best = min(waste(list(c) + [cand[-1]]) for c in itertools.combinations(cand[:-1], 2))
    assert waste(bucket_edges(lengths, buckets=3)) == best


def test_the_tokenizer_is_not_called_during_fit(tofu10, monkeypatch):
    req, tok = tofu10
    forget, retain = small(req, tok)
    calls = collections.Counter()
    cls = type(tok)
    for name in ("__call__", "encode", "_encode_plus", "_batch_encode_plus", "batch_encode_plus"):
        if hasattr(cls, name):
            orig = getattr(cls, name)
            monkeypatch.setattr(cls, name, lambda self, *a, _o=orig, _n=name, **k: (calls.update([_n]), _o(self, *a, **k))[1])
    for strategy in ("npo", "wga"):
        LLMUnlearner(gpt2_lm(tok), strategy=strategy).fit(forget, retain, max_steps=8, stopping="none", progress=False)
    assert not calls, calls


def reference_run(tok, req, strategy, mode, steps=10):
    forget, retain = small(req, tok, alt=strategy == "dpo")
    model = gpt2_lm(tok, n_layer=2, n_embd=64)
    holds = []

    class Watch(Callback):
        def on_step_end(self, trainer, module, step, loss):
            holds.append(module.reference is not None)

    res = LLMUnlearner(model, strategy=strategy, strategy_kwargs={"reference": mode, "lr": 1e-3}).fit(
        forget, retain, max_steps=steps, stopping="none", progress=False, callbacks=[Watch()])
    return np.array(res.history["loss"]), holds, res


@pytest.mark.parametrize("strategy", ["npo", "dpo"])
def test_cached_reference_gives_the_per_step_losses_and_frees_the_model(tofu10, strategy):
    req, tok = tofu10
    cached, held_c, res = reference_run(tok, req, strategy, "auto")
    per_step, held_p, _ = reference_run(tok, req, strategy, "per_step")
    assert len(cached) == len(per_step) == 10
    np.testing.assert_allclose(cached, per_step, atol=1e-5, rtol=0)
    assert not any(held_c) and all(held_p)  # the cached run holds no reference model in its loop
    assert "computed every step" not in res.stop_reason


def test_cached_reference_needs_indexed_batches(tofu10):
    from torch.utils.data import DataLoader

    from erasus.core.exceptions import DataError

    req, tok = tofu10
    plain = DataLoader(req.forget.records[:16], batch_size=8, collate_fn=QACollator(tok))
    model = gpt2_lm(tok)
    with pytest.raises(DataError, match="index"):
        LLMUnlearner(model, strategy="npo", strategy_kwargs={"reference": "cached"}).fit(
            plain, max_steps=2, stopping="none", progress=False)
    res = LLMUnlearner(model, strategy="npo").fit(plain, max_steps=2, stopping="none", progress=False)
    assert "computed every step" in res.stop_reason  # auto says it could not cache


def test_logits_only_at_answer_positions_and_equal_to_the_full_computation(tofu10, monkeypatch):
    import erasus.models.causal_lm as cl

    req, tok = tofu10
    b = next(iter(qa_loader(req.forget.records[:16], QACollator(tok, max_length=128), 8, seed=0)))
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, pad_token_id=0))
    torch.manual_seed(0)
    for model in (gpt2_lm(tok), llama):
        a = wrap(model)
        sizes = []
        h = model.get_output_embeddings().register_forward_hook(lambda m, i, o: sizes.append(o.numel()))

        def run(chunk=None, full=False):
            if chunk:
                monkeypatch.setattr(cl, "CHUNK_ELEMENTS", chunk)
            sizes.clear()
            model.zero_grad()
            loss = a.per_sample_loss(b, logits=a.logits(b) if full else None)
            (loss * torch.arange(1.0, 9.0)).sum().backward()
            _, acc = a.loss_and_accuracy(b)
            monkeypatch.setattr(cl, "CHUNK_ELEMENTS", 1 << 26)
            return loss.detach(), acc, [p.grad.clone() for p in model.parameters()], sum(sizes)

        n_scored = int((b["labels"][:, 1:] != -100).sum())
        fast, fast_acc, g_fast, elems = run()
        # one forward for the loss, one for the accuracy: each with logits at the answer tokens only
        assert elems == 2 * n_scored * len(tok) < b["input_ids"].numel() * len(tok)
        full, full_acc, g_full, _ = run(full=True)
        chunked, ch_acc, g_chunk, _ = run(chunk=7 * len(tok))  # 7 tokens per chunk, recomputed in backward
        for other, acc, g in ((full, full_acc, g_full), (chunked, ch_acc, g_chunk)):
            torch.testing.assert_close(fast, other, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(fast_acc, acc)
            for x, y in zip(g_fast, g):
                torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)
        h.remove()


def test_models_with_their_own_forward_hooks_get_full_logits(tofu10):
    req, tok = tofu10
    model = gpt2_lm(tok)
    b = next(iter(qa_loader(req.forget.records[:8], QACollator(tok, max_length=128), 8, seed=0)))
    a = wrap(model)
    assert a.scored_hidden(a.to_device(b)) is not None
    handle = model.register_forward_hook(lambda m, i, o: o)  # e.g. DExperts' decoding-time hook
    assert a.scored_hidden(a.to_device(b)) is None
    handle.remove()


def test_erasus_reads_tensors_back_at_most_once_per_log_every_steps(tofu10, monkeypatch):
    req, tok = tofu10
    forget, retain = small(req, tok)
    import os

    import erasus

    root = os.path.dirname(os.path.abspath(erasus.__file__)).replace("\\", "/") + "/"  # Erasus' own code only
    counting = [False]
    reads = collections.Counter()

    def wrap_method(name):
        orig = getattr(torch.Tensor, name)

        def counted(self, *a, **k):
            if counting[0]:
                f = sys._getframe(1).f_code.co_filename.replace("\\", "/")
                if f.startswith(root) and not f.endswith("batching.py"):  # batching: the CPU shuffle, per epoch
                    reads[f"{f.rsplit('/', 1)[-1]}:{sys._getframe(1).f_lineno}"] += 1
            return orig(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counted)

    for name in ("item", "tolist", "__float__", "__bool__", "__int__"):
        wrap_method(name)

    class Window(Callback):
        def on_fit_start(self, trainer, module):
            counting[0] = True

        def on_fit_end(self, trainer, module, result):
            counting[0] = False

    res = LLMUnlearner(gpt2_lm(tok), strategy="npo").fit(forget, retain, max_steps=40, stopping="none", progress=False,
                                                         callbacks=[Window()], log_every=10)
    assert res.steps == 40 and len(res.history["loss"]) == 40
    assert sum(reads.values()) <= 1 + 40 // 10, reads  # the first step's check, then one read per 10 steps


def test_gradient_accumulation_equals_one_large_batch():
    from torch.utils.data import DataLoader, TensorDataset

    from erasus.core import UnlearningModule, UnlearningTrainer

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 5, generator=g), torch.randint(0, 3, (16,), generator=g)

    class Ascent(UnlearningModule):
        def forget_step(self, batch, i):
            return -self.adapter.loss(batch)

    def run(batch, accumulate):
        torch.manual_seed(0)
        model = torch.nn.Linear(5, 3)
        module = Ascent(model)
        UnlearningTrainer(max_steps=2, min_steps=0, stopping="none", optimizer="sgd", momentum=0.0, lr=0.5,
                          grad_clip=None, progress=False, accumulate=accumulate).fit(
            module, DataLoader(TensorDataset(x, y), batch_size=batch))
        return torch.cat([p.detach().flatten() for p in module.model.parameters()])

    one, accumulated, single_small = run(8, 1), run(4, 2), run(4, 1)
    torch.testing.assert_close(accumulated, one, atol=1e-6, rtol=1e-6)
    assert (single_small - one).abs().max() > 1e-3  # the comparison can fail


@pytest.mark.slow
def test_compiled_forward_gives_the_same_losses(tofu10):
    req, tok = tofu10
    forget, retain = small(req, tok, n_forget=16, n_retain=16)
    losses = []
    for compile_ in (False, True):
        model = gpt2_lm(tok)
        res = LLMUnlearner(model, strategy="npo").fit(forget, retain, max_steps=4, stopping="none", progress=False,
                                                      compile=compile_)
        losses.append(np.array(res.history["loss"]))
        assert getattr(res.model.transformer, "_compiled_call_impl", None) is None  # returned uncompiled
    np.testing.assert_allclose(losses[1], losses[0], atol=1e-4, rtol=1e-4)
