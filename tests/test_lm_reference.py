"""Language-model and LiRA metrics against the published reference code.

``tests/data/lm_reference_values.json`` holds what the authors' code computes on the fixture
of ``tests/data/lm_fixture`` (a word-level tokenizer that adds a BOS, as LLaMA's does, and two
tiny GPT-2 models: ``original`` trained on the forget and retain data, ``gold`` on the retain
data only). ``scripts/lm_reference_values.py`` produced it by running, at the commits recorded
in the file's ``sources``:

* MUSE (github.com/swj0419/muse_bench @ fcd6651): ``eval.eval_model`` (VerbMem, KnowMem forget
  and retain, PrivLeak) and the PrivLeak AUCs of ``metrics/privleak.py``;
* Min-K%++ (github.com/zjysteven/mink-plus-plus @ 5596c65): the scoring loop of ``run.py``;
* open-unlearning (github.com/locuslab/open-unlearning @ d3d7cf9): ``MinKProbAttack``,
  ``MinKPlusPlusAttack``, ``evaluate_probability`` and ``privleak``;
* TOFU (github.com/locuslab/tofu @ bdc209e): ``get_batch_loss`` on
  ``convert_raw_data_to_model_format``, ``eval_rouge_recall``, ``get_model_utility`` and
  ``get_forget_quality``;
* LiRA (github.com/tensorflow/privacy @ 03035d5, ``research/mi_lira_2021/plot.py``):
  ``generate_ours`` and ``generate_ours_offline``.

Each test computes the same quantity with Erasus and requires equality (up to float
round-off).
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

transformers = pytest.importorskip("transformers")

DATA = Path(__file__).parent / "data"
REF = json.loads((DATA / "lm_reference_values.json").read_text())


@pytest.fixture(scope="module")
def fx():
    from transformers import AutoTokenizer, GPT2LMHeadModel

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(DATA / "lm_fixture" / "tokenizer")
    models = {n: GPT2LMHeadModel.from_pretrained(DATA / "lm_fixture" / n).eval() for n in ("original", "gold")}
    data = json.loads((DATA / "lm_fixture" / "data.json").read_text())
    return tok, models, data


def _text_stats(model, tok, texts, k=0.4):
    from erasus.evaluation.muse_wmdp import TextCollator
    from erasus.metrics.llm import lm_token_stats
    from erasus.models import wrap

    return lm_token_stats(wrap(model), DataLoader(texts, batch_size=4, collate_fn=TextCollator(tok)), k=k)


def test_muse_verbmem_knowmem_and_privleak_equal_muse_eval_model(fx):
    from erasus.data.datasets.muse_wmdp import MUSEData
    from erasus.evaluation.muse_wmdp import muse_scores

    tok, models, data = fx
    muse = MUSEData(Path("."), knowmem={"forget_qa": data["knowmem_forget"], "forget_qa_icl": data["knowmem_forget_icl"],
                                        "retain_qa": data["knowmem_retain"], "retain_qa_icl": data["knowmem_retain_icl"]},
                    verbmem=data["verbmem"],
                    privleak={"forget": data["text_forget"], "retain": data["text_retain"],
                              "holdout": data["text_holdout"]})
    gold = muse_scores(models["gold"], tok, muse)
    for name in ("original", "gold"):
        got = muse_scores(models[name], tok, muse, gold_scores=gold)
        ref = REF["muse"][name]
        for key in ("verbmem_f", "knowmem_f", "knowmem_r"):  # MUSE reports them x 100
            assert 100 * got[key] == pytest.approx(ref[key], abs=1e-9), (name, key)
        assert got["privleak"] == pytest.approx(ref["privleak"], abs=1e-6), name
        # MUSE's AUC labels the forget set the non-member class: 1 - Erasus's
        assert got["min_k_auc"] == pytest.approx(1 - ref["auc"]["forget_holdout_Min-40%"], abs=1e-12)
    assert REF["muse"]["original"]["privleak"] < -50  # a memorising model: strongly negative, as MUSE reports


def test_memorising_model_has_strongly_negative_privleak_in_muse_convention(fx):
    from erasus.metrics.llm import attack_auc, privleak

    tok, models, data = fx
    auc = {n: attack_auc(_text_stats(m, tok, data["text_forget"]), _text_stats(m, tok, data["text_holdout"]), "min_k")
           for n, m in models.items()}
    assert auc["original"] > 0.95 and privleak(auc["original"], auc["gold"]) < -80
    assert privleak(auc["gold"], auc["gold"]) == pytest.approx(0.0, abs=1e-6)
    assert privleak(auc["original"], auc["gold"], convention="erasus") > 50  # the former sign, by name


@pytest.mark.parametrize("k,key", [(0.4, "forget_holdout_Min-40%"), (0.2, "forget_holdout_Min-20%")])
def test_min_k_auc_token_count_and_bos_equal_muse(fx, k, key):
    from erasus.metrics.llm import attack_auc

    tok, models, data = fx
    for name, m in models.items():
        f, h = _text_stats(m, tok, data["text_forget"], k), _text_stats(m, tok, data["text_holdout"], k)
        assert attack_auc(f, h, "min_k") == pytest.approx(1 - REF["muse"][name]["auc"][key], abs=1e-12), name
        assert attack_auc(f, h, "loss") == pytest.approx(1 - REF["muse"][name]["auc"]["forget_holdout_PPL"], abs=1e-12)
        assert attack_auc(f, h, "zlib") == pytest.approx(1 - REF["muse"][name]["auc"]["forget_holdout_PPL/zlib"],
                                                         abs=1e-12)


def test_min_k_and_min_k_plus_plus_per_text_equal_the_authors_script(fx):
    tok, models, data = fx
    for name, m in models.items():
        s = _text_stats(m, tok, data["text_forget"] + data["text_holdout"])
        ref = REF["minkpp"][name]
        np.testing.assert_allclose(s["min_k"], ref["mink_0.4"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(s["min_k_pp"], ref["mink++_0.4"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(-s["loss"], ref["loss"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(-s["zlib"], ref["zlib"], rtol=1e-5, atol=1e-8)
        s2 = _text_stats(m, tok, data["text_forget"] + data["text_holdout"], k=0.2)
        np.testing.assert_allclose(s2["min_k"], ref["mink_0.2"], rtol=1e-5, atol=1e-6)


def test_qa_min_k_leaves_out_the_appended_eos_as_open_unlearning(fx):
    from erasus.metrics.llm import lm_token_stats
    from erasus.models import QACollator, wrap

    tok, models, data = fx
    records = data["qa_forget"] + data["qa_holdout"]
    loader = DataLoader(records, batch_size=4, collate_fn=QACollator(tok, max_length=128))
    for name, m in models.items():
        s = lm_token_stats(wrap(m), loader, k=0.4)
        ref = REF["open_unlearning"][name]
        np.testing.assert_allclose(-s["min_k"], ref["min_k"], rtol=1e-5, atol=1e-6)  # their score is negated
        np.testing.assert_allclose(-s["min_k_pp"], ref["min_k_pp"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(s["loss"], ref["loss"], rtol=1e-5, atol=1e-6)
        with_eos = lm_token_stats(wrap(m), loader, k=0.4, score_eos=True)
        assert not np.allclose(with_eos["min_k"], s["min_k"])  # the EOS is really left out by default


def test_privleak_formula_equals_open_unlearning():
    from erasus.metrics.llm import privleak

    ref = REF["open_unlearning"]["privleak"]
    assert privleak(ref["auc_unlearned"], ref["auc_retrained"]) == pytest.approx(ref["value"], rel=1e-8)


def test_tofu_scores_equal_tofu_aggregate_eval_stat(fx):
    from erasus.data.datasets.tofu import TOFUDataset, TOFURequest
    from erasus.evaluation.tofu import tofu_scores

    tok, models, data = fx
    ds = lambda recs, name: TOFUDataset(recs, name)  # noqa: E731
    req = TOFURequest(ds(data["qa_forget"], "forget"), ds(data["qa_retain"], "retain"),
                      ds(data["qa_holdout"], "holdout"), ds(data["qa_forget"], "forget_perturbed"),
                      ds(data["qa_retain"], "retain_perturbed"), ds(data["world"][:3], "real_authors_perturbed"),
                      ds(data["world"][3:], "world_facts_perturbed"))
    gold = tofu_scores(models["gold"], tok, req, n_generate=None, world=True)
    got = tofu_scores(models["original"], tok, req, gold_scores=gold, n_generate=None, world=True)
    for name, s in (("original", got), ("gold", gold)):
        ref = REF["tofu"][name]
        pairs = {"forget_prob": "Prob. Forget", "retain_prob": "Prob. Retain", "real_authors_prob": "Prob. Real Authors",
                 "world_facts_prob": "Prob. Real World", "forget_truth_ratio": "Truth Ratio Forget",
                 "retain_truth_ratio": "Truth Ratio Retain", "real_authors_truth_ratio": "Truth Ratio Real Authors",
                 "world_facts_truth_ratio": "Truth Ratio Real World", "forget_rouge": "ROUGE Forget",
                 "retain_rouge": "ROUGE Retain", "real_authors_rouge": "ROUGE Real Authors",
                 "world_facts_rouge": "ROUGE Real World", "model_utility": "Model Utility"}
        for ours, theirs in pairs.items():
            assert s[ours] == pytest.approx(ref[theirs], rel=1e-5, abs=1e-9), (name, ours)
    assert got["forget_quality"] == pytest.approx(REF["tofu"]["original"]["Forget Quality"], rel=1e-9)


@pytest.mark.parametrize("online,fix", [(True, False), (True, True), (False, False), (False, True)])
def test_lira_scores_equal_the_authors_plot_py(online, fix):
    from erasus.metrics.lira import lira_scores

    ref = REF["lira"]
    key = ("online" if online else "offline") + ("_fixed" if fix else "")
    got = lira_scores(np.array(ref["check_scores"]), np.array(ref["scores"]), np.array(ref["keep"]), online=online,
                      fix_variance=fix)
    np.testing.assert_allclose(got, ref[key], rtol=1e-9, atol=1e-9)
