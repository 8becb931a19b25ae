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
