"""The README's Python blocks run as written, in order, in one namespace, the way a user
pastes them. The only substitution: the LLM block loads ``path/to/finetuned`` and
``path/to/retain_model``, which this test creates as tiny GPT-2 models with a word-level
tokenizer (no weights can be downloaded here)."""
import re
import warnings
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str):
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.fixture(scope="module")
def lm_paths(tmp_path_factory):
    pytest.importorskip("transformers")
    from erasus.data.datasets.tofu import tofu_request
    from erasus.models.causal_lm import gpt2_lm, tofu_texts, word_tokenizer

    root = tmp_path_factory.mktemp("lm")
    tok = word_tokenizer(tofu_texts(tofu_request("forget01")))
    paths = {}
    for name, seed in (("finetuned", 0), ("retain_model", 1)):
        path = root / name
        gpt2_lm(tok, n_layer=1, n_embd=32, n_head=2, n_positions=256, seed=seed).save_pretrained(path)
        tok.save_pretrained(path)
        paths[f"path/to/{name}"] = str(path)
    return paths


def test_readme_python_blocks_run_in_order(lm_paths):
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 8, "expected the quick start, verification, LiRA, LLM and custom-method blocks"
    ns = {"__name__": "__readme__"}
    torch.manual_seed(0)
    for i, code in enumerate(blocks):
        for placeholder, real in lm_paths.items():
            code = code.replace(placeholder, real)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                exec(compile(code, f"README.md python block {i + 1}", "exec"), ns)
            except Exception as err:  # say which block failed
                raise AssertionError(f"README python block {i + 1} failed: {err!r}\n{code}") from err
    # what the blocks promise
    assert ns["report"].verdict in ("PASS", "PARTIAL", "FAIL", "INCONCLUSIVE")
    assert 0.0 <= ns["metrics"]["mia_auc"] <= 1.0
    assert (Path(ns["out"]) / "README.md").exists() and "npo" in (Path(ns["out"]) / "README.md").read_text()
    from erasus.core.registry import get

    assert get("strategy", "my_method") is ns["MyMethod"]
