"""The documentation site builds without a warning (``mkdocs build --strict``): every page,
every API reference resolved from the docstrings, every link, and the benchmark results and
CONTRIBUTING.md pulled in from the files themselves."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_site_builds_strictly_with_the_api_reference_and_results(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "WARNING" not in r.stderr
    unlearn = (tmp_path / "site" / "unlearn" / "index.html").read_text()
    assert "ErasusUnlearner" in unlearn and "inplace" in unlearn  # rendered from the docstring
    for name in (p.stem for p in (ROOT / "benchmarks" / "results").glob("*.md")):
        assert (tmp_path / "site" / "results" / name / "index.html").exists(), name
    assert "Adding a strategy" in (tmp_path / "site" / "contributing" / "index.html").read_text()


def test_every_image_the_docs_and_readme_show_is_committed():
    import re

    for md in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for src in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md.read_text()):
            assert (md.parent / src).is_file(), (md.name, src)


def test_every_results_file_is_linked_from_the_benchmarks_page():
    """A committed results file is a page of the site; the benchmarks page lists each one, so
    that none is reachable only by its address (the diffusion results once were)."""
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    missing = [md.name for md in sorted((ROOT / "benchmarks" / "results").glob("*.md"))
               if f"(results/{md.name})" not in page]
    assert not missing, f"results files not linked from docs/benchmarks.md: {missing}"
