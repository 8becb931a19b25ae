"""benchmarks/gpu_run.sh, the one command for every GPU measurement: its guards run before
anything is installed or written (the GPU runs themselves need a GPU: see the closing notes)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_run.sh"


def run(*steps, **env):
    return subprocess.run(["bash", str(SCRIPT), *steps], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable, **env})


def test_an_unknown_step_is_refused_before_any_work():
    res = run("llm", "tofuu")
    assert res.returncode == 2 and "unknown step 'tofuu'" in res.stderr and "llm, tofu, diffusion" in res.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_stops_at_once_and_writes_nothing():
    before = set((ROOT / "benchmarks" / "results").iterdir())
    res = run("llm")
    assert res.returncode == 1 and "no CUDA device visible" in res.stderr, res.stderr
    assert set((ROOT / "benchmarks" / "results").iterdir()) == before


def test_every_step_calls_a_script_with_options_its_parser_knows():
    """Each benchmark the script calls accepts the options it is given there (a renamed option
    would otherwise surface only on the GPU machine)."""
    import re

    text = SCRIPT.read_text()
    calls = re.findall(r'"\$PY" (benchmarks/\w+\.py)((?:[^\n]|\\\n)*)', text)
    assert {c[0] for c in calls} >= {f"benchmarks/{s}.py" for s in ("llm_throughput", "tofu", "diffusion",
                                                                       "gpu_smoke", "clip")}
    for script, rest in calls:
        opts = set(re.findall(r"(--[a-z][a-z-]*)", rest))
        helptext = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True,
                                  timeout=120, cwd=ROOT).stdout
        missing = [o for o in opts if not re.search(rf"{o}\b", helptext)]
        assert not missing, (script, missing)
