"""Every measured number in the README comes from a committed results file
(``scripts/check_readme_numbers.py``)."""
import importlib.util
from pathlib import Path

import pytest


def test_readme_numbers_are_in_the_results_files_they_cite():
    path = Path(__file__).resolve().parents[1] / "scripts" / "check_readme_numbers.py"
    spec = importlib.util.spec_from_file_location("check_readme_numbers", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    problems = mod.check()
    assert not problems, "\n".join(problems)


#: (script, results name, options): every committed table a benchmark rebuilds with ``--render``
RENDERED = [("classification.py", "classification", ()), ("classification.py", "classification-criteria", ()),
            ("coreset.py", "coreset", ()), ("coreset.py", "coreset_recorded", ()),
            ("coreset_lm.py", "coreset_lm", ()), ("coreset_lm.py", "coreset_lm-2authors", ()),
            ("coreset_lm.py", "coreset_lm-full", ()), ("tofu.py", "tofu", ()),
            ("diffusion.py", "diffusion-cpu", ("--preset", "cpu"))]


@pytest.mark.parametrize("script,name,options", RENDERED, ids=[r[1] for r in RENDERED])
def test_committed_tables_are_rendered_from_their_results_files(tmp_path, script, name, options):
    """``benchmarks/<script> --render`` rebuilds the committed markdown from the committed JSON,
    byte for byte: the table says what the rows measured (no hand edits, no stale layout)."""
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    results = root / "benchmarks" / "results"
    shutil.copy(results / f"{name}.json", tmp_path / f"{name}.json")
    subprocess.run([sys.executable, str(root / "benchmarks" / script), "--render", "--out", str(tmp_path),
                    "--name", name, *options], check=True, capture_output=True)
    assert (tmp_path / f"{name}.md").read_text() == (results / f"{name}.md").read_text()
