"""benchmarks/llm_throughput.py counts what both loops train on: the same number of
sequences gives about the same number of real tokens, the reference model's forwards are
counted apart (the plain loop scores each forget batch with it, Erasus the whole forget set
once), and bucketed batches are far less padding than batches padded to the maximum length."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[1]


def test_throughput_benchmark_counts_tokens_alike(tmp_path):
    spec = importlib.util.spec_from_file_location("llm_throughput", ROOT / "benchmarks" / "llm_throughput.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    threads = torch.get_num_threads()  # the script sets the thread count: keep the suite's
    mod.main(["--steps", "3", "--batch-size", "8", "--threads", str(threads), "--out", str(tmp_path), "--name", "t"])
    assert torch.get_num_threads() == threads
    plain, erasus = json.loads((tmp_path / "t.json").read_text())["rows"]
    # 3 steps x (8 forget + 8 retain) sequences each; different records, similar lengths
    assert 0.6 < erasus["tokens"] / plain["tokens"] < 1.6, (plain, erasus)
    # the plain loop runs its reference on every forget batch (the forget half of its tokens);
    # Erasus runs it once over the whole forget set before the first step
    assert 0.2 * plain["tokens"] < plain["reference_tokens"] < 0.8 * plain["tokens"], plain
    from erasus.data.datasets.tofu import tofu_request

    forget = tofu_request("forget10").forget.records
    assert erasus["reference_tokens"] > 0.9 * sum(len((r["question"] + " " + r["answer"]).split()) for r in forget)
    for r in (plain, erasus):
        assert r["tokens_per_s"] > 0 and r["steady_tokens_per_s"] > 0 and r["achieved_tflops"] > 0
        assert 0 < r["startup_s"] < r["seconds"]
    assert erasus["pad_fraction"] < 0.5 * plain["pad_fraction"], (plain, erasus)
    assert (tmp_path / "t.md").read_text().count("| plain") == 1
