"""The TOFU protocol end to end on real TOFU records with tiny GPT-2s trained here: the
finetuned model (forget + retain authors) must FAIL against the retain-only model, an
independently retrained retain-only model must reach forget quality >= 0.05."""
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("rouge_score")

from torch.utils.data import DataLoader  # noqa: E402

from erasus.data.datasets.tofu import subset_request, tofu_request  # noqa: E402
from erasus.models.causal_lm import QACollator, gpt2_lm, tofu_texts, word_tokenizer  # noqa: E402
from erasus.models.training import train_classifier  # noqa: E402


def train(records, tok, seed, epochs=40):
    model = gpt2_lm(tok, seed=seed)
    loader = DataLoader(records, batch_size=20, shuffle=True, collate_fn=QACollator(tok, max_length=96),
                        generator=torch.Generator().manual_seed(seed))
    return train_classifier(model, loader, epochs=epochs, lr=3e-3, seed=seed, cosine=False)


@pytest.fixture(scope="module")
def world():
    req = subset_request(tofu_request("forget10"), forget_authors=1, retain_authors=2)
    tok = word_tokenizer(tofu_texts(req))
    full = train(req.forget.records + req.retain.records, tok, 0)
    gold = train(req.retain.records, tok, 1)
    gold2 = train(req.retain.records, tok, 2)
    gold3 = train(req.retain.records, tok, 3)
    return req, tok, full, gold, gold2, gold3


def test_tofu_scores_and_protocol_rank_models(world):
    from erasus.evaluation import UnlearningBenchmark
    from erasus.evaluation.tofu import tofu_scores

    req, tok, full, gold, gold2, _ = world
    g = tofu_scores(gold, tok, req)
    s_full = tofu_scores(full, tok, req, gold_scores=g)
    s_gold2 = tofu_scores(gold2, tok, req, gold_scores=g)
    assert s_full["forget_rouge"] > s_gold2["forget_rouge"] + 0.3, (s_full, s_gold2)
    assert s_full["forget_prob"] > 2 * s_gold2["forget_prob"]
    assert s_full["min_k_auc"] > 0.9 and abs(s_gold2["min_k_auc"] - 0.5) < abs(s_full["min_k_auc"] - 0.5)
    assert s_gold2["forget_quality"] > s_full["forget_quality"] and s_gold2["forget_quality"] >= 0.05
    assert s_full["privleak"] < -abs(s_gold2["privleak"])  # MUSE's sign: a memorising model is strongly negative
    assert 0 < s_full["model_utility"] <= 1
    bench = UnlearningBenchmark(protocol="tofu")
    rep_full = bench.evaluate(full, forget_data=req, gold_model=gold, tokenizer=tok)
    assert rep_full.verdict == "FAIL", rep_full.summary()
    assert {r.name: r.verdict for r in rep_full.results}["forget_quality"] != "PASS", rep_full.summary()


def test_the_retrained_model_passes_and_the_intervals_come_from_the_questions(world):
    """The gold model judged against itself PASSes (before the protocol named its own
    forgetting metrics, no TOFU report could PASS: every one was INCONCLUSIVE); forget ROUGE,
    Min-K% AUC and model utility are judged on bootstrap intervals over the questions."""
    from erasus.evaluation import UnlearningBenchmark

    req, tok, full, gold, _, _ = world
    bench = UnlearningBenchmark(protocol="tofu")
    same = bench.evaluate(gold, forget_data=req, gold_model=gold, tokenizer=tok)
    assert same.verdict == "PASS", same.summary()
    rep = {r.name: r for r in bench.evaluate(full, forget_data=req, gold_model=gold, tokenizer=tok).results}
    for name in ("forget_rouge", "min_k_auc", "model_utility"):
        lo, hi = rep[name].delta_ci
        assert lo < hi and rep[name].n > 0, (name, rep[name])
    assert rep["forget_rouge"].delta_ci[0] > 0.10 and rep["forget_rouge"].verdict == "FAIL"


@pytest.mark.xfail(strict=True, reason="measured: a second model retrained with another seed has Min-K% AUC 0.52 "
                   "against the first's 0.74 on this 20-question request, outside the 0.10 tolerance; the interval "
                   "over questions does not carry the spread between retrained models (one gold model cannot "
                   "show it; gold_model=[several] can, the test below)")
def test_an_independently_retrained_model_passes(world):
    from erasus.evaluation import UnlearningBenchmark

    req, tok, _, gold, gold2, _ = world
    assert UnlearningBenchmark(protocol="tofu").evaluate(gold2, forget_data=req, gold_model=gold,
                                                         tokenizer=tok).verdict != "FAIL"


def test_against_several_retrained_models_a_retrained_model_passes_and_the_finetuned_one_fails(world):
    """With gold_model=[two models retrained with other seeds], the reference is their mean and
    each tolerance grows by their spread: a third retrained model is no longer FAILed (as it is
    against one, above), the finetuned model still is, and the report says how it judged."""
    from erasus.evaluation import UnlearningBenchmark

    req, tok, full, gold, gold2, gold3 = world
    bench = UnlearningBenchmark(protocol="tofu")
    rep = bench.evaluate(gold2, forget_data=req, gold_model=[gold, gold3], tokenizer=tok)
    assert rep.verdict != "FAIL", rep.summary()
    bad = bench.evaluate(full, forget_data=req, gold_model=[gold, gold3], tokenizer=tok)
    assert bad.verdict == "FAIL", bad.summary()
    verdicts = {r.name: r.verdict for r in bad.results}
    assert verdicts["forget_rouge"] == "FAIL" and verdicts["forget_quality"] != "PASS", bad.summary()
    mink = {r.name: r for r in rep.results}["min_k_auc"]
    assert "mean of 2 retrained models" in mink.note and mink.tolerance[0] > 0.05
    one = {r.name: r for r in bench.evaluate(gold2, forget_data=req, gold_model=[gold], tokenizer=tok).results}
    alone = {r.name: r for r in bench.evaluate(gold2, forget_data=req, gold_model=gold, tokenizer=tok).results}
    assert {k: (v.verdict, v.value, v.delta_ci) for k, v in one.items()} == {
        k: (v.verdict, v.value, v.delta_ci) for k, v in alone.items()}       # a list of one is one model


def test_a_reference_that_never_learned_the_task_cannot_anchor_the_utility_ratio(world):
    """Measured in the README's LLM example (tiny untrained models): the retrained model's
    utility was ~0, the ratio's interval reached [+2.8e8, +2.8e8] and model_utility PASSed.
    A reference below the floor leaves the metric INCONCLUSIVE, never PASS; a trained
    reference is still judged."""
    from erasus.evaluation import UnlearningBenchmark
    from erasus.evaluation.tofu import RATIO_FLOOR, tofu_scores

    req, tok, full, gold, _, _ = world
    untrained = gpt2_lm(tok, seed=5)
    assert tofu_scores(untrained, tok, req)["model_utility"] < RATIO_FLOOR
    bench = UnlearningBenchmark(protocol="tofu")
    rep = bench.evaluate(full, forget_data=req, gold_model=untrained, tokenizer=tok)
    util = {r.name: r for r in rep.results}["model_utility"]
    assert util.verdict == "INCONCLUSIVE" and "too small for a ratio" in util.note, rep.summary()
    assert rep.verdict != "PASS" and "not measured" in rep.summary()
    trained = {r.name: r for r in bench.evaluate(full, forget_data=req, gold_model=gold, tokenizer=tok).results}
    lo, hi = trained["model_utility"].delta_ci
    assert lo < hi < 1e3 and "too small" not in trained["model_utility"].note, trained["model_utility"]


@pytest.mark.parametrize("mode", ["uniform", "temperature"])
def test_an_output_filter_on_the_forget_questions_fails(world, mode):
    """A cheat that leaves the finetuned weights as they are and filters its outputs whenever a
    forget question is in the prompt (flat logits, or logits divided by 20): its answers to
    those questions are garbled, utility is untouched, and the protocol still FAILs it (the
    truth ratios and the Min-K% attack tell it from a model that never saw the authors)."""
    import copy

    from erasus.evaluation import UnlearningBenchmark

    req, tok, full, gold, _, _ = world
    questions = [tok(r["question"])["input_ids"] for r in req.forget.records]

    def asks_a_forget_question(row):
        return any(row[i:i + len(q)] == q for q in questions for i in range(len(row) - len(q) + 1))

    def hook(module, args, kwargs, out):
        ids = kwargs.get("input_ids", args[0] if args else None)
        for i in range(ids.shape[0]):
            if asks_a_forget_question(ids[i].tolist()):
                out.logits[i] = 0.0 if mode == "uniform" else out.logits[i] / 20
        return out

    cheat = copy.deepcopy(full)
    cheat.register_forward_hook(hook, with_kwargs=True)
    bench = UnlearningBenchmark(protocol="tofu")
    rep = bench.evaluate(cheat, forget_data=req, gold_model=gold, tokenizer=tok)
    finetuned = {r.name: r.value for r in bench.evaluate(full, forget_data=req, gold_model=gold, tokenizer=tok).results}
    verdicts, values = {r.name: r.verdict for r in rep.results}, {r.name: r.value for r in rep.results}
    # the filter is at work: greedy answers lose their words under flat logits; a temperature
    # keeps the arg-max (and the answers) but moves the truth ratios
    key = "forget_rouge" if mode == "uniform" else "forget_quality"
    assert abs(values[key] - finetuned[key]) > (0.2 if mode == "uniform" else 1e-3), (values, finetuned)
    assert rep.verdict == "FAIL" and verdicts["model_utility"] == "PASS", rep.summary()
    assert verdicts["forget_quality"] != "PASS" and verdicts["min_k_auc"] == "FAIL", rep.summary()
