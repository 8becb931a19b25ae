"""``accelerate launch`` with 2 CPU processes (gloo) runs ``erasus unlearn-lm`` data-parallel
and follows the one-process loss step by step (``--multi_gpu`` is accelerate's torchrun
launcher; without GPUs the processes use gloo)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")


def test_two_process_accelerate_run_matches_one_process(tmp_path):
    from erasus.data.datasets.tofu import load_tofu
    from erasus.models.causal_lm import gpt2_lm, word_tokenizer

    records = load_tofu("full").records[:40]
    tok = word_tokenizer([r["question"] + " " + r["answer"] for r in records] + ["Question: Answer:"])
    model = gpt2_lm(tok, seed=0)
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    (tmp_path / "forget.json").write_text(json.dumps(records[:16]))
    (tmp_path / "retain.json").write_text(json.dumps(records[16:]))
    args = ["unlearn-lm", "--model", str(tmp_path / "model"), "--forget", str(tmp_path / "forget.json"),
            "--retain", str(tmp_path / "retain.json"), "--strategy", "npo", "--max-steps", "4", "--batch-size", "8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "erasus", *args, "--history", str(tmp_path / "h1.json"),
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    two = subprocess.run([launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                          "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "erasus", *args,
                          "--history", str(tmp_path / "h2.json")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    h1 = json.loads((tmp_path / "h1.json").read_text())
    h2 = json.loads((tmp_path / "h2.json").read_text())
    assert h1["world_size"] == 1 and h2["world_size"] == 2 and len(h1["loss"]) == len(h2["loss"]) == 4
    assert h2["loss"] == pytest.approx(h1["loss"], rel=1e-4, abs=1e-5)
    assert (tmp_path / "out" / "model.safetensors").exists() and "npo" in (tmp_path / "out" / "README.md").read_text()
