"""TOFU data loading (the shipped files) and TOFU's metric formulas against hand computation."""
import math
import os

import numpy as np
import pytest
from scipy.stats import ks_2samp

from erasus.core.exceptions import DataError
from erasus.data.datasets.tofu import load_idk, load_tofu, tofu_request
from erasus.metrics.tofu import (forget_quality, model_utility, option_probability, rouge_l_recall, truth_ratio,
                                 truth_ratio_stat)


def test_tofu_request_splits_are_the_documented_partition():
    req = tofu_request("forget10")
    assert (len(req.forget), len(req.retain), len(req.holdout)) == (400, 3600, 400)
    full = load_tofu("full")
    assert len(full) == 4000
    # retain90 + forget10 == full, in order; the holdout questions are not in full
    assert full.questions == req.retain.questions + req.forget.questions
    assert not set(req.holdout.questions) & set(full.questions)
    ev = req.forget_eval[0]
    assert ev["question"] == req.forget[0]["question"] and len(ev["perturbed_answer"]) == 5
    assert "paraphrased_answer" in ev
    assert len(req.real_authors) == 100 and len(req.world_facts) == 117
    assert len(load_idk()) == 100


def test_tofu_loads_from_the_package_without_a_data_folder_or_variable(monkeypatch, tmp_path):
    """A user's fresh install: no ../shared, no $ERASUS_TOFU_DIR, run from another folder."""
    import subprocess
    import sys

    monkeypatch.delenv("ERASUS_TOFU_DIR", raising=False)
    code = ("import os; from erasus.data.datasets.tofu import tofu_request, load_idk; r = tofu_request('forget05'); "
            "print(len(r.forget), len(r.retain), len(r.holdout), len(r.forget_eval), len(load_idk()))")
    env = {k: v for k, v in os.environ.items() if k != "ERASUS_TOFU_DIR"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["200", "3800", "200", "200", "100"]
    from erasus.data.datasets import tofu as T

    assert T.default_root() is None  # nothing is looked up in the folders around the checkout


def test_tofu_errors_name_what_was_expected(tmp_path):
    with pytest.raises(DataError, match="forget10"):
        load_tofu("forget_10")
    with pytest.raises(DataError, match="not found"):
        load_tofu("forget10", root=tmp_path)
    with pytest.raises(DataError, match="forget01"):
        tofu_request("retain90")


def test_truth_ratio_probability_and_forget_quality_by_hand():
    para = np.log([0.5, 0.2])
    pert = np.log([[0.1, 0.4], [0.2, 0.2]])
    R = truth_ratio(para, pert)
    # exp(mean(log p_pert) - log p_para) = geometric mean of perturbed / paraphrased
    assert R[0] == pytest.approx(math.sqrt(0.1 * 0.4) / 0.5) and R[1] == pytest.approx(1.0)
    assert truth_ratio_stat(R, forget=True) == pytest.approx((0.4 + 1.0) / 2)
    assert truth_ratio_stat(R, forget=False) == pytest.approx((0.6 + 0.0) / 2)
    p = option_probability(np.log([0.6]), np.log([[0.2, 0.2]]))
    assert p[0] == pytest.approx(0.6)
    a, b = np.array([0.1, 0.2, 0.3, 0.9]), np.array([0.5, 0.6, 0.7, 0.8])
    assert forget_quality(a, b) == pytest.approx(ks_2samp(a, b).pvalue)
    assert forget_quality(a, a) == 1.0
    assert model_utility([0.5, 0.25]) == pytest.approx(2 / (2 + 4)) and model_utility([0.5, 0.0]) == 0.0


def test_rouge_l_recall_by_hand():
    r = rouge_l_recall(["the author is Hsiao Yun-Hwa", "nothing"], ["The author's full name is Hsiao Yun-Hwa.",
                                                                   "Paris"])
    # reference tokens: the author s full name is hsiao yun hwa (9); LCS with the prediction: 6
    assert r[0] == pytest.approx(6 / 9) and r[1] == 0.0


def test_length_grouped_batches_cover_every_record_once_with_little_padding():
    pytest.importorskip("transformers")
    from erasus.models.causal_lm import QACollator, qa_loader, tofu_texts, word_tokenizer

    req = tofu_request("forget05")
    tok = word_tokenizer(tofu_texts(req))
    recs = req.retain.records[:640]
    coll = QACollator(tok, max_length=128)
    grouped, plain = qa_loader(recs, coll, 16, seed=0), qa_loader(recs, coll, 16, seed=0, group_by_length=False)
    epoch1, epoch2 = list(grouped.batch_sampler), list(grouped.batch_sampler)
    for ep in (epoch1, epoch2):
        assert sorted(i for b in ep for i in b) == list(range(len(recs)))
    assert epoch1 != epoch2  # reshuffled every epoch
    real = sum(int(b["attention_mask"].sum()) for b in plain)
    padded = {name: sum(b["input_ids"].numel() for b in dl) for name, dl in (("grouped", grouped), ("plain", plain))}
    assert sum(int(b["attention_mask"].sum()) for b in grouped) == real
    # bucketed batches pad to one of a few lengths (multiples of 8): a little more padding than
    # the longest-in-batch, far less than random batches
    assert padded["grouped"] < 1.2 * real < padded["plain"], padded
