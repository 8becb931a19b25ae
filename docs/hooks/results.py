"""MkDocs hook: the committed benchmark results (benchmarks/results/*.md, with the figures they
show) and CONTRIBUTING.md become pages of the site, generated at build time from the files
themselves (never copied into docs/, so the site cannot drift from the results)."""
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]


def on_files(files, config):
    for md in sorted((ROOT / "benchmarks" / "results").glob("*.md")):
        files.append(File.generated(config, f"results/{md.name}", content=md.read_text(encoding="utf-8")))
    for png in sorted((ROOT / "benchmarks" / "results").glob("*.png")):  # figures the pages show
        files.append(File.generated(config, f"results/{png.name}", content=png.read_bytes()))
    files.append(File.generated(config, "contributing.md",
                                content=(ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")))
    return files
