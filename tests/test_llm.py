"""Causal-LM unlearning on real TOFU records with a tiny GPT-2 trained here from scratch
(a word-level tokenizer, 2 layers; a few seconds): every loss-based strategy that applies
to language models must raise the forget answers' loss more than the retain answers'."""
import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from torch.utils.data import DataLoader  # noqa: E402

from erasus.data.datasets.tofu import load_tofu  # noqa: E402
from erasus.models import CausalLMAdapter, QACollator, wrap  # noqa: E402
from erasus.models.causal_lm import word_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tiny_tofu():
    full = load_tofu("full")
    records = full.records[:100]  # 5 authors, 20 questions each
    forget, retain = records[80:], records[:80]
    tok = word_tokenizer([r["question"] + " " + r["answer"] for r in records] + ["Question: Answer:"])
    cfg = transformers.GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=64, n_layer=2, n_head=2,
                                  bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg)
    coll = QACollator(tok, max_length=96)
    loader = DataLoader(records, batch_size=20, shuffle=True, collate_fn=coll,
                        generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    adapter = wrap(model)
    model.train()
    for _ in range(40):
        for b in loader:
            loss = adapter.loss(b)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    mk = lambda rs, shuffle: DataLoader(rs, batch_size=10, shuffle=shuffle, collate_fn=coll,  # noqa: E731
                                        generator=torch.Generator().manual_seed(1))
    return model, mk(forget, True), mk(retain, True), mk(forget, False), mk(retain, False)


def mean_nll(model, loader):
    a = wrap(model)
    with torch.no_grad():
        return float(torch.cat([a.per_sample_loss(b) for b in loader]).mean())


def test_adapter_is_picked_and_scores_answer_tokens_only(tiny_tofu):
    model, _, _, forget_eval, _ = tiny_tofu
    a = wrap(model)
    assert isinstance(a, CausalLMAdapter) and a.family == "causal_lm"
    b = next(iter(forget_eval))
    # the memorised answers: low loss; the loss ignores prompt and padding
    assert mean_nll(model, forget_eval) < 0.5
    manual = []
    with torch.no_grad():
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    for i in range(len(b["input_ids"])):
        lp = torch.log_softmax(logits[i, :-1], -1)
        lab = b["labels"][i, 1:]
        m = lab != -100
        manual.append(-lp[m.nonzero().squeeze(1), lab[m]].mean())
    np.testing.assert_allclose(a.per_sample_loss(b).detach().numpy(), torch.stack(manual).numpy(), rtol=1e-5)
    with pytest.raises(Exception, match="input_ids"):
        a.per_sample_loss((torch.zeros(2, 3), torch.zeros(2)))


LM_STRATEGIES = ["gradient_ascent", "negative_gradient", "npo", "simnpo", "wga", "idk", "dpo", "undial", "rmu",
                 "task_vector", "activation_steering", "ssd", "token_masking", "dexperts", "causal_tracing", "attention_surgery",
                 "embedding_alignment"]

ONE_SHOT = ("task_vector", "activation_steering", "ssd", "dexperts")


def idk_forget_loader(forget):
    """The forget loader with a refusal answer per question (for idk / dpo)."""
    from erasus.data.datasets.tofu import load_idk

    tok = forget.collate_fn.tok
    coll = QACollator(tok, max_length=96, alt_answers=load_idk())
    return DataLoader(forget.dataset, batch_size=forget.batch_size, shuffle=True, collate_fn=coll,
                      generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", LM_STRATEGIES)
def test_strategy_raises_forget_loss_more_than_retain_loss(tiny_tofu, name):
    from erasus.unlearners import ErasusUnlearner

    model, forget, retain, forget_eval, retain_eval = tiny_tofu
    if name in ("idk", "dpo"):
        forget = idk_forget_loader(forget)
    f0, r0 = mean_nll(model, forget_eval), mean_nll(model, retain_eval)
    kw = dict(progress=False, seed=0)
    if name not in ONE_SHOT:  # one-shot edits: no trainer options
        kw.update(max_epochs=10, min_steps=20)
    else:  # the edit itself, not the retain-accuracy guard (SSD costs this tiny model 9.8 points of token accuracy)
        kw.update(guard=False)
    res = ErasusUnlearner(model, strategy=name).fit(forget, retain, **kw)
    f1, r1 = mean_nll(res.model, forget_eval), mean_nll(res.model, retain_eval)
    assert f1 - f0 > 0.5, (name, f0, f1)
    assert f1 - f0 > 2 * (r1 - r0), (name, f0, f1, r0, r1)
    assert mean_nll(model, forget_eval) == pytest.approx(f0)  # the caller's model is untouched
    assert "fixed schedule" in res.stop_reason or name in ONE_SHOT


def test_question_pmi_matches_hand_computation_and_token_masking_restricts_the_labels(tiny_tofu):
    """PMI of each answer token with its question, recomputed by scoring the answer after a
    BOS token alone; token_masking keeps the top 30% of each answer's tokens by it."""
    from erasus.core.registry import build
    from erasus.strategies.token_masking import question_pmi

    model, _, _, forget_eval, _ = tiny_tofu
    b = next(iter(forget_eval))
    pmi = question_pmi(wrap(model), b)
    bos = model.config.bos_token_id
    with torch.no_grad():
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        for i in range(len(b["input_ids"])):
            lab = b["labels"][i, 1:]
            pos = (lab != -100).nonzero().flatten()
            y = lab[pos]
            with_q = torch.log_softmax(logits[i, :-1], -1)[pos, y]
            alone = torch.log_softmax(model(input_ids=torch.cat([torch.tensor([bos]), y])[None]).logits[0, :-1], -1)
            expect = with_q - alone[torch.arange(len(y)), y]
            np.testing.assert_allclose(pmi[i, pos].numpy(), expect.numpy(), atol=1e-4)
            assert (pmi[i][lab == -100] == 0).all()
    strat = build("strategy", "token_masking")
    strat.selected_ = strat.scored_ = 0
    masked = strat.select(wrap(model), b)["labels"][:, 1:]
    for i in range(len(masked)):
        pos = (b["labels"][i, 1:] != -100).nonzero().flatten()
        kept = (masked[i] != -100).nonzero().flatten()
        assert len(kept) == max(1, round(0.3 * len(pos))) or (pmi[i, pos] > 0).sum() < round(0.3 * len(pos))
        assert set(kept.tolist()) <= set(pos.tolist())
        assert pmi[i, kept].min() >= pmi[i, [p for p in pos.tolist() if p not in set(kept.tolist())]].max() - 1e-6


def test_causal_trace_effects_follow_the_residual_stream(tiny_tofu):
    """Noise on the question's embeddings lowers the answers' log-probability; restoring the
    first block's clean state at the question recovers most of it, more than the last
    block's (whose state at the question reaches only the first answer token)."""
    from erasus.strategies import causal_trace

    model, _, _, forget_eval, _ = tiny_tofu
    t = causal_trace(wrap(model), forget_eval, "block", max_batches=2)
    gap = t["clean"] - t["corrupted"]
    assert gap > 0.3, t
    assert t["effect"][0] > 0.5 * gap, t
    assert t["effect"][0] > t["effect"][-1] > 0, t
    assert (t["effect"] < gap + 1e-6).all(), t
    a = causal_trace(wrap(model), forget_eval, "attn", max_batches=2)
    assert a["clean"] == pytest.approx(t["clean"]) and len(a["effect"]) == len(t["effect"])
    with pytest.raises(Exception, match="kind"):
        causal_trace(wrap(model), forget_eval, "heads")


def test_idk_strategies_explain_missing_refusals_and_lm_only_components_refuse_classifiers(tiny_tofu):
    from erasus.core.exceptions import UnsupportedModelError
    from erasus.metrics import MetricSuite
    from erasus.unlearners import ErasusUnlearner

    model, forget, retain, forget_eval, _ = tiny_tofu
    with pytest.raises(Exception, match="alt_answers"):
        ErasusUnlearner(model, strategy="idk").fit(forget, retain, progress=False, max_steps=2, min_steps=0)
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    with pytest.raises(UnsupportedModelError, match="causal_lm"):
        ErasusUnlearner(clf, strategy="rmu").fit(forget, retain, progress=False)
    xy = DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,))), batch_size=4)
    with pytest.raises(UnsupportedModelError, match="causal_lm"):
        MetricSuite(["lm_mia"]).run(clf, xy, None, None, xy)


def test_lm_token_stats_match_hand_computation(tiny_tofu):
    """Min-K%, Min-K%++, zlib, exact memorisation and extraction strength recomputed by hand
    from the logits of one batch."""
    import zlib

    from erasus.metrics.llm import lm_token_stats

    model, _, _, forget_eval, _ = tiny_tofu
    b = next(iter(forget_eval))
    s = lm_token_stats(wrap(model), [b], k=0.4)
    with torch.no_grad():
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.double()
    for i in range(len(b["input_ids"])):
        lab = b["labels"][i, 1:]
        m = lab != -100
        lp = torch.log_softmax(logits[i, :-1], -1)[m]
        y = lab[m]
        tok = lp[torch.arange(len(y)), y]
        # Min-K% / Min-K%++ as the reference code: int(k * n) tokens, the appended EOS left out
        assert int(y[-1]) == model.config.eos_token_id
        kk = max(1, int(0.4 * (len(y) - 1)))
        assert s["min_k"][i] == pytest.approx(float(torch.sort(tok[:-1]).values[:kk].mean()))
        mu = (lp.exp() * lp).sum(-1)
        sd = ((lp.exp() * lp ** 2).sum(-1) - mu ** 2).clamp_min(1e-6).sqrt()
        z = ((tok - mu) / sd)[:-1]
        assert s["min_k_pp"][i] == pytest.approx(float(torch.sort(z).values[:kk].mean()), rel=1e-6)
        assert s["zlib"][i] == pytest.approx(float(-tok.mean()) / len(zlib.compress(b["text"][i].encode())))
        hit = (lp.argmax(-1) == y).tolist()
        assert s["exact_memorization"][i] == pytest.approx(sum(hit) / len(hit))
        k = max([j + 1 for j, h in enumerate(hit) if not h], default=0)
        assert s["extraction_strength"][i] == pytest.approx(1 - k / len(hit))


def test_lm_token_stats_project_only_the_scored_tokens(tiny_tofu):
    """The output layer sees one row per answer token (prompt and padding positions get no
    logits: the README's TOFU evaluation took 97 s projecting every position, 22 s now), and a
    model whose logits must come from its full forward (a forward hook on it) gives the same
    statistics."""
    import numpy as np

    from erasus.metrics.llm import lm_token_stats

    model, _, _, forget_eval, _ = tiny_tofu
    batches = list(forget_eval)[:2]
    rows = []
    handle = model.lm_head.register_forward_hook(lambda m, i, o: rows.append(i[0].reshape(-1, i[0].shape[-1]).shape[0]))
    try:
        scored = lm_token_stats(wrap(model), batches)
    finally:
        handle.remove()
    answer_tokens = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
    assert sum(rows) == answer_tokens < sum(b["input_ids"].numel() for b in batches), (rows, answer_tokens)
    handle = model.register_forward_hook(lambda m, i, o: None)  # the full forward is then the only way in
    try:
        full = lm_token_stats(wrap(model), batches)
    finally:
        handle.remove()
    for key in scored:
        np.testing.assert_allclose(scored[key], full[key], rtol=1e-9, atol=1e-9, err_msg=key)


def test_undial_loss_is_the_papers_on_answer_tokens_only(tiny_tofu):
    """UNDIAL's forget loss is the cross-entropy to the teacher's softmax with the true logit
    lowered by γ, at the answer tokens (computed here by hand from the full logits), and the
    output layer sees only those tokens, for the student and the teacher."""
    import torch.nn.functional as F

    from erasus.strategies.llm import Undial, UndialConfig

    model, _, _, forget_eval, _ = tiny_tofu
    batch = next(iter(forget_eval))
    strat = Undial(model, UndialConfig(strength=3.0))
    strat.setup(None, None)
    rows = []
    hooks = [m.lm_head.register_forward_hook(lambda m, i, o: rows.append(i[0].reshape(-1, i[0].shape[-1]).shape[0]))
             for m in (model, strat.teacher.model)]
    try:
        with torch.no_grad():
            loss = float(strat.forget_step(batch, 0))
    finally:
        for h in hooks:
            h.remove()
    answer_tokens = int((batch["labels"][:, 1:] != -100).sum())
    assert rows == [answer_tokens, answer_tokens] and answer_tokens < batch["input_ids"].numel()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    m = labels != -100
    z, y = logits[m].double(), labels[m]
    target = torch.softmax(z - 3.0 * F.one_hot(y, z.shape[-1]).double(), -1)
    assert loss == pytest.approx(float(-(target * torch.log_softmax(z, -1)).sum(-1).mean()), rel=1e-5)


def test_neuron_pruning_removes_the_feed_forward_neurons_most_specific_to_the_forget_set(tiny_tofu):
    """Selective pruning on a causal LM (Pochinkov & Schoots): the neurons zeroed are, across
    both blocks, those with the highest ratio of mean |activation| on forget answers to retain
    answers (recomputed here with hooks over the attended tokens); nothing else changes; and
    the bare call raises the forget loss more than twice as much as the retain loss."""
    import math

    from erasus.unlearners import ErasusUnlearner

    model, forget, retain, forget_eval, retain_eval = tiny_tofu
    projections = [blk.mlp.c_proj for blk in model.transformer.h]

    def mean_abs(loader):
        sums = [0.0] * len(projections)
        count = [0]
        mask = {}

        def hook(i):
            def f(m, inp):
                a = inp[0].abs()[mask["m"]]
                sums[i] = sums[i] + a.sum(0)
                if i == 0:
                    count[0] += a.shape[0]
            return f
        hs = [p.register_forward_pre_hook(hook(i)) for i, p in enumerate(projections)]
        with torch.no_grad():
            for b in loader:
                mask["m"] = b["attention_mask"].bool()
                model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
        for h in hs:
            h.remove()
        return torch.cat([x / count[0] for x in sums])

    score = mean_abs(forget_eval) / (mean_abs(retain_eval) + 1e-6)
    k = math.ceil(0.05 * score.numel())
    expected = set(torch.topk(score, k).indices.tolist())
    res = ErasusUnlearner(model, strategy="neuron_pruning", strategy_kwargs=dict(fraction=0.05, rounds=1)).fit(
        forget, retain, progress=False, guard=False)
    width = projections[0].weight.shape[0]
    zeroed = {i * width + j for i, blk in enumerate(res.model.transformer.h)
              for j in (blk.mlp.c_proj.weight == 0).all(1).nonzero().flatten().tolist()}
    assert zeroed == expected
    changed = {n for (n, p), (_, q) in zip(model.named_parameters(), res.model.named_parameters()) if not torch.equal(p, q)}
    assert changed == {f"transformer.h.{i}.mlp.c_proj.weight" for i in range(len(projections))}
    f0, r0 = mean_nll(model, forget_eval), mean_nll(model, retain_eval)
    bare = ErasusUnlearner(model, strategy="neuron_pruning").fit(forget, retain, progress=False)
    f1, r1 = mean_nll(bare.model, forget_eval), mean_nll(bare.model, retain_eval)
    assert f1 - f0 > 0.2 and f1 - f0 > 2 * (r1 - r0), (f0, f1, r0, r1)


def test_layer_freezing_on_a_transformer_trains_weight_layers_and_forgets(tiny_tofu):
    """The bare call picks the most forget-salient weight layers, not LayerNorms (whose few
    parameters have the largest per-weight gradients: training only them left the forget
    loss where it was), and forgets more than it costs the retain answers."""
    from erasus.unlearners import ErasusUnlearner

    model, forget, retain, forget_eval, retain_eval = tiny_tofu
    res = ErasusUnlearner(model, strategy="layer_freezing").fit(forget, retain, progress=False)
    changed = {n.rsplit(".", 1)[0] for (n, p), (_, q) in zip(model.named_parameters(), res.model.named_parameters())
               if not torch.equal(p, q)}
    modules = dict(model.named_modules())
    assert changed and all(modules[m].weight.dim() == 2 for m in changed), changed
    f0, r0 = mean_nll(model, forget_eval), mean_nll(model, retain_eval)
    f1, r1 = mean_nll(res.model, forget_eval), mean_nll(res.model, retain_eval)
    assert f1 - f0 > 0.5 and f1 - f0 > 2 * (r1 - r0), (f0, f1, r0, r1)


def test_distillation_compares_answer_tokens_only(tiny_tofu):
    """SCRUB and Bad Teacher compare output distributions at the answer tokens of a language
    model (prompt and padding positions used to enter their KL): the rows are the full
    logits at those tokens, and the adapter's loss accepts them."""
    model, _, _, forget_eval, _ = tiny_tofu
    a = wrap(model)
    batch = next(iter(forget_eval))
    with torch.no_grad():
        rows = a.distillation_logits(batch)
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        m = batch["labels"][:, 1:] != -100
        assert rows.shape[0] == int(m.sum()) < batch["input_ids"].numel()
        assert torch.allclose(rows, full[m], atol=1e-5)
        assert torch.allclose(a.per_sample_loss(batch, logits=rows), a.per_sample_loss(batch), atol=1e-5)
        nll, acc = a.loss_and_accuracy(batch)
        assert torch.allclose(acc, ((full.argmax(-1) == batch["labels"][:, 1:]) & m).sum(1).double() / m.sum(1))


def test_lm_membership_attacks_rank_the_unlearned_model(tiny_tofu):
    """Forget answers the model trained on are detected (AUC well above 0.5 against retain
    answers it also saw is not the test; against unseen held-out TOFU authors it is)."""
    from erasus.data.datasets.tofu import load_tofu
    from erasus.metrics import MetricSuite

    model, forget, retain, forget_eval, retain_eval = tiny_tofu
    coll = forget_eval.collate_fn
    unseen = [r for r in load_tofu("full").records[100:140]]
    holdout = DataLoader(unseen, batch_size=10, collate_fn=coll)
    m = MetricSuite(["lm_mia", "memorization"]).run(model, forget_eval, retain_eval, None, holdout)
    assert m["loss_auc"] > 0.9 and m["min_k_auc"] > 0.9, m
    assert m["forget_exact_memorization"] > 0.8, m


def test_llm_unlearner_lora_save_and_reload(tiny_tofu, tmp_path):
    """LLMUnlearner end to end: NPO through LoRA adapters (only adapters train, merged at the
    end), forget loss rises more than retain loss, the caller's model is untouched, and
    save_pretrained writes safetensors + a model card atomically and never overwrites."""
    pytest.importorskip("peft")
    from erasus import LLMUnlearner

    model, forget, retain, forget_eval, retain_eval = tiny_tofu
    before = {k: v.clone() for k, v in model.state_dict().items()}
    f0, r0 = mean_nll(model, forget_eval), mean_nll(model, retain_eval)
    llm = LLMUnlearner(model, strategy="npo", lora={"rank": 4})
    res = llm.fit(forget, retain, progress=False, seed=0, max_epochs=10, min_steps=20)
    assert res.strategy == "lora_unlearning" and "LoRA" in res.stop_reason
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    f1, r1 = mean_nll(res.model, forget_eval), mean_nll(res.model, retain_eval)
    assert f1 - f0 > 0.5 and (f1 - f0) > 2 * (r1 - r0), (f0, f1, r0, r1)
    llm.evaluate(forget_eval, retain_eval)
    out = llm.save_pretrained(tmp_path / "unlearned")
    assert (out / "model.safetensors").exists() and "lora_unlearning" in (out / "README.md").read_text()
    with pytest.raises(FileExistsError):
        llm.save_pretrained(out)
    again = LLMUnlearner(out, strategy="gradient_ascent")
    assert mean_nll(again.model, forget_eval) == pytest.approx(f1, rel=1e-4)
    with pytest.raises(Exception, match="causal LM"):
        LLMUnlearner(torch.nn.Linear(2, 2))


def test_peft_model_trains_only_its_adapters_and_merges_on_request(tiny_tofu):
    peft = pytest.importorskip("peft")
    import copy

    from erasus import LLMUnlearner

    model, forget, retain, forget_eval, retain_eval = tiny_tofu
    pm = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"],
                                                                  fan_in_fan_out=True, task_type="CAUSAL_LM"))
    base_before = {k: v.clone() for k, v in pm.state_dict().items() if "lora_" not in k}
    lora_before = {k: v.clone() for k, v in pm.state_dict().items() if "lora_" in k}
    f0 = mean_nll(pm, forget_eval)
    llm = LLMUnlearner(pm, strategy="npo", strategy_kwargs={"lr": 1e-2})  # adapters take a larger step
    res = llm.fit(forget, retain, progress=False, seed=0, max_epochs=10, min_steps=20)
    sd = res.model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in base_before.items())  # frozen base
    assert any(not torch.equal(sd[k], v) for k, v in lora_before.items())  # adapters moved
    assert all(torch.equal(pm.state_dict()[k], v) for k, v in lora_before.items())  # the caller's copy untouched
    f1 = mean_nll(res.model, forget_eval)
    merged = llm.merge_adapters()
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    assert mean_nll(merged, forget_eval) == pytest.approx(f1, rel=1e-4) and f1 - f0 > 0.5


def test_inference_time_unlearning_keeps_weights_and_refuses_to_save(tiny_tofu, tmp_path):
    from erasus import LLMUnlearner
    from erasus.core.exceptions import ConfigError

    model, forget, retain, forget_eval, _ = tiny_tofu
    llm = LLMUnlearner(model, strategy="activation_steering")
    res = llm.fit(forget, retain, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), res.model.parameters()))
    assert mean_nll(res.model, forget_eval) > mean_nll(model, forget_eval) + 0.5
    with pytest.raises(ConfigError, match="forward hooks"):
        llm.save_pretrained(tmp_path / "out")


def test_calibrated_stopping_is_opt_in_for_language_models_and_uses_token_accuracy(tiny_tofu):
    """Held-out questions turn on the calibrated rule only when asked; split_stats gives LMs a
    per-sample token accuracy that matches a hand computation."""
    from erasus.core.stats import split_stats
    from erasus.unlearners import ErasusUnlearner

    model, forget, retain, forget_eval, _ = tiny_tofu
    s = split_stats(wrap(model), forget_eval)
    b = next(iter(forget_eval))
    with torch.no_grad():
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    lab = b["labels"][0, 1:]
    m = lab != -100
    assert s["correct"][0] == pytest.approx(float((logits[0, :-1].argmax(-1)[m] == lab[m]).float().mean()))
    hold = DataLoader(load_tofu("full").records[100:120], batch_size=10, collate_fn=forget.collate_fn)
    auto = ErasusUnlearner(model, strategy="npo").fit(forget, retain, hold, progress=False, seed=0, max_epochs=2)
    assert "fixed schedule" in auto.stop_reason
    cal = ErasusUnlearner(model, strategy="npo").fit(forget, retain, hold, progress=False, seed=0, max_epochs=4,
                                                     stopping="calibrated")
    assert cal.stop_reason.startswith("calibrated") or "calibrat" in cal.stop_reason, cal.stop_reason
    assert any("val_mia_auc" in e for e in cal.history["eval"])


def test_embedding_alignment_predictor_learns_the_future_windows(tiny_tofu):
    """Align-then-Unlearn's alignment phase: the predictor's cosine to the reference embedding
    of the next k tokens rises well above its start, and above the cosine to the reference
    of a window from another sample (so it predicts *this* text, not an average one)."""
    import torch.nn.functional as F

    from erasus.strategies import EmbeddingAlignment

    model, forget, retain, _, _ = tiny_tofu
    s = EmbeddingAlignment(align_steps=150)
    s.bind(s._prepare(model, inplace=False))  # a copy of the model
    s.setup(forget, retain)
    h = s.align_history
    assert np.mean(h[-20:]) > np.mean(h[:5]) + 0.2, (h[:5], h[-20:])
    b = s.adapter.to_device(next(iter(retain)))
    target, valid = s._windows(b)
    with torch.no_grad():
        pred = s.predictor(s._hidden(b, grad=False))[:, :target.shape[1]]
    own = F.cosine_similarity(pred[valid], target[valid], dim=-1).mean()
    other = F.cosine_similarity(pred[valid], target[valid].roll(1, 0), dim=-1).mean()
    assert own > other + 0.05, (float(own), float(other))


def test_simnpo_calibrates_beta_on_held_out_answers_for_language_models(tiny_tofu):
    """With held-out answers, SimNPO's default β is 6 / their mean token NLL under the original
    model, and the run trains exactly as one given that β; without them it keeps the paper's
    2.5 and says so; a β that is set is used as given."""
    from erasus.unlearners import ErasusUnlearner

    model, forget, retain, _, _ = tiny_tofu
    hold = DataLoader(load_tofu("full").records[100:120], batch_size=10, collate_fn=forget.collate_fn)
    held_nll = mean_nll(model, hold)  # an author the model never saw
    assert held_nll > 2.0
    beta = 6.0 / held_nll
    kw = dict(progress=False, seed=0, max_steps=6)
    unl = ErasusUnlearner(model, strategy="simnpo")
    auto = unl.fit(forget, retain, hold, **kw)
    assert f"β {beta:.3g}, calibrated on held-out answers" in auto.stop_reason, auto.stop_reason
    # the β the run used, to the last bit (the test's own mean can differ in the last digits with the thread count)
    used = unl.strategy.calibrated_beta_
    assert used == pytest.approx(beta, rel=1e-4)
    given = ErasusUnlearner(model, strategy="simnpo", strategy_kwargs={"beta": used}).fit(forget, retain, hold, **kw)
    paper = ErasusUnlearner(model, strategy="simnpo").fit(forget, retain, None, **kw)
    assert "calibrated" not in given.stop_reason and "the paper's" in paper.stop_reason
    a, g, p = (dict(r.model.named_parameters()) for r in (auto, given, paper))
    assert all(torch.allclose(a[k], g[k]) for k in a)
    assert not all(torch.allclose(a[k], p[k]) for k in a)


def test_records_and_texts_given_as_data_are_encoded_once_with_the_unlearners_tokenizer(tiny_tofu):
    """A user with the tokenizer passes question/answer records (TOFU's, a datasets.Dataset's
    rows) or plain texts straight to fit and evaluate: the run equals the run on the loader
    built by hand (qa_loader, QACollator / TextCollator at the model's context length, 16 per
    batch), and the forget answers' loss rises more than the retain answers'. (They failed with
    "Expected a causal_lm batch ... got dict".) Without a tokenizer, or with a text longer than
    the model's context, the error says what to do."""
    from erasus.core.exceptions import DataError
    from erasus.models.causal_lm import TextCollator, qa_loader
    from erasus.unlearners import LLMUnlearner

    model, _, _, f_eval, r_eval = tiny_tofu
    tok = f_eval.collate_fn.tok
    forget, retain = list(f_eval.dataset), list(r_eval.dataset)
    by_hand = lambda rs, coll: qa_loader(rs, coll, batch_size=16, seed=0, shuffle=True)  # noqa: E731
    coll = QACollator(tok, max_length=128)  # the model's n_positions
    given = LLMUnlearner(model, tokenizer=tok).fit(forget, retain, progress=False).model
    built = LLMUnlearner(model, tokenizer=tok).fit(by_hand(forget, coll), by_hand(retain, coll), progress=False).model
    for (k, a), b in zip(given.state_dict().items(), built.state_dict().values()):
        assert torch.equal(a, b), k
    rise_f = mean_nll(given, f_eval) - mean_nll(model, f_eval)
    rise_r = mean_nll(given, r_eval) - mean_nll(model, r_eval)
    assert rise_f > rise_r + 0.5, (rise_f, rise_r)

    texts = [f"{r['question']} {r['answer']}" for r in forget]
    u = LLMUnlearner(model, tokenizer=tok, strategy="gradient_ascent")
    given = u.fit(texts, max_steps=4, progress=False).model
    built = LLMUnlearner(model, tokenizer=tok, strategy="gradient_ascent").fit(
        by_hand(texts, TextCollator(tok)), max_steps=4, progress=False).model
    for (k, a), b in zip(given.state_dict().items(), built.state_dict().values()):
        assert torch.equal(a, b), k
    assert 0.0 <= u.evaluate(forget, holdout_data=retain)["loss_auc"] <= 1.0

    with pytest.raises(DataError, match="tokenizer="):
        LLMUnlearner(model).fit(forget, progress=False)
    with pytest.raises(DataError, match="more than the model's 128"):
        LLMUnlearner(model, tokenizer=tok).fit([" ".join(["Answer"] * 200)], progress=False)


def test_batches_from_hugging_face_collators_are_read_as_dicts(tiny_tofu):
    """Tokenizers and processors return ``BatchEncoding`` / ``BatchFeature`` (mappings, not
    dicts): a loader whose collator returns them gives the same run and the same evaluation as
    one returning plain dicts. (They were refused: "Expected a causal_lm batch: a dict ...,
    got BatchEncoding".)"""
    from erasus.unlearners import LLMUnlearner

    model, _, _, f_eval, r_eval = tiny_tofu
    coll = f_eval.collate_fn
    encoded = lambda rows: transformers.BatchEncoding(coll(rows))  # noqa: E731
    runs = []
    for c in (coll, encoded):
        forget = DataLoader(f_eval.dataset, batch_size=10, collate_fn=c)
        retain = DataLoader(r_eval.dataset, batch_size=10, collate_fn=c)
        u = LLMUnlearner(model, strategy="negative_gradient")
        u.fit(forget, retain, max_steps=3, progress=False)
        runs.append((u.model, dict(u.evaluate(forget, holdout_data=retain))))
    for (k, a), b in zip(runs[0][0].state_dict().items(), runs[1][0].state_dict().values()):
        assert torch.equal(a, b), k
    assert runs[0][1] == runs[1][1]
