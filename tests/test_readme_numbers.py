"""Every measured number in the README comes from a committed results file
(``scripts/check_readme_numbers.py``)."""
import importlib.util
from pathlib import Path


def test_readme_numbers_are_in_the_results_files_they_cite():
    path = Path(__file__).resolve().parents[1] / "scripts" / "check_readme_numbers.py"
    spec = importlib.util.spec_from_file_location("check_readme_numbers", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    problems = mod.check()
    assert not problems, "\n".join(problems)


def test_classification_table_is_rendered_from_its_results_file(tmp_path):
    """``benchmarks/classification.py --render`` rebuilds the committed markdown table from the
    committed JSON, byte for byte: the table says what the rows measured."""
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    results = root / "benchmarks" / "results"
    shutil.copy(results / "classification.json", tmp_path / "classification.json")
    subprocess.run([sys.executable, str(root / "benchmarks" / "classification.py"), "--render", "--out", str(tmp_path)],
                   check=True, capture_output=True)
    assert (tmp_path / "classification.md").read_text() == (results / "classification.md").read_text()
