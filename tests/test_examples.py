"""Every script under examples/ runs end to end as a user runs it (``python examples/...``,
from a fresh process) and prints what it promises."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {
    "classifier/deletion_request.py": "verdict: ",
    "classifier/coreset_comparison.py": "wga + kcenter 25%",
    "language_models/tofu_npo_simnpo.py": "== simnpo ==",
    "language_models/lora_unlearning.py": "saved (LoRA merged)",
    "vision_language/clip_class_removal.py": "red_zero_shot_acc",
    "diffusion_models/concept_erasure.py": "judged red",
    "audio/spoken_word_removal.py": "(forgotten word 'two')",
}


def test_every_example_is_listed():
    found = {str(p.relative_to(ROOT / "examples")) for p in (ROOT / "examples").rglob("*.py")
             if not p.name.startswith("_")}
    assert found == set(EXAMPLES)
    readme = (ROOT / "examples" / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in EXAMPLES)


# the diffusion example is the README's diffusion block as a script (the same training, UCE
# edit, verification and save; tests/test_docs.py runs that block): here with -m slow
SLOW = {"diffusion_models/concept_erasure.py"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(EXAMPLES)])
def test_example_runs(name, tmp_path):
    if "language_models" in name or "vision_language" in name or "diffusion" in name or "audio" in name:
        pytest.importorskip("transformers")
    if "audio" in name and shutil.which("espeak-ng") is None:
        pytest.skip("needs the espeak-ng program (install.sh installs Debian's espeak-ng)")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    args = [] if "vision_language" in name else ["--out", str(tmp_path / "out")]
    r = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], capture_output=True, text=True,
                       timeout=900, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert EXAMPLES[name] in r.stdout, r.stdout[-2000:]
