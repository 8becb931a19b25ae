"""Check that every measured number in the README comes from a committed results file.

Every decimal number in the README's prose (code blocks and inline code left out) must be
found in the results files the same README section cites (``benchmarks/results/<name>.md``;
a section that cites none is checked against all of them): verbatim in the Markdown, or as a
value of the matching JSON file rounded to the same number of decimals (as a fraction or in
percent). Numbers that are settings or definitions rather than results (tolerances,
thresholds, hyperparameters) are listed in ``ALLOWED`` with the reason.

    python scripts/check_readme_numbers.py          # exit 1 and a list when a number is not found

``tests/test_readme_numbers.py`` runs it.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Set

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

#: numbers that are settings, definitions or arithmetic in the prose, not measurements
ALLOWED = {
    "0.5": "the chance level of an AUC / the reference of a membership attack",
    "0.05": "a tolerance / significance level / TOFU's forget-quality threshold",
    "0.03": "a tolerance", "0.10": "a tolerance", "0.1": "a tolerance or rate", "0.15": "a tolerance",
    "0.01": "a tolerance / FPR", "0.001": "a paper's hyperparameter", "0.2": "a detectable distance",
    "0.4": "a hyperparameter (k, β)", "0.3": "a hyperparameter", "0.6": "a hyperparameter",
    "0.75": "a hyperparameter", "0.89": "a goal", "0.47": "SimNPO's calibrated β (in tofu.md's notes)",
    "2.5": "a paper's hyperparameter", "1.5": "a rule's factor", "3.3": "a rule's factor", "1.0": "a rule",
    "0.0": "zero", "3.9": "the lowest supported Python version",
    "0.025": "arithmetic: the chance precision of discovery on TOFU, 20 of 800 pairs",
    "0.34": "arithmetic: WGA's largest distance to the best strategy (class1 bare on the CNN, 0.76 - 0.42)",
}

NUMBER = re.compile(r"(?<![\w.\-/])(\d+\.\d+)(?![\w.])")


def prose_sections(text: str) -> Dict[str, str]:
    """README prose by section heading, without code blocks or inline code."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`]*`", lambda m: m.group(0) if re.search(r"[\w\-]+\.(md|json)", m.group(0)) else "", text)
    text = re.sub(r"\[[\d.]+, [\d.]+\]", "", text)  # interval notation in definitions
    out, head = {}, "(top)"
    for line in text.splitlines():
        if line.startswith("#"):
            head = line.strip("# ").strip()
            out[head] = line + "\n"  # a heading's citations count for its section
            continue
        out[head] = out.get(head, "") + line + "\n"
    return out


def _floats(obj) -> Iterable[float]:
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield float(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _floats(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _floats(v)


def candidates(names: List[str], decimals: int, cache: Dict) -> Set[str]:
    out: Set[str] = set()
    for name in names:
        key = (name, decimals)
        if key not in cache:
            vals: Set[str] = set()
            md = RESULTS / f"{name}.md"
            if md.exists():
                vals |= set(NUMBER.findall(md.read_text()))
            js = RESULTS / f"{name}.json"
            if js.exists():
                for v in _floats(json.loads(js.read_text())):
                    for x in (v, 100 * v, abs(v), 100 * abs(v)):
                        vals.add(f"{x:.{decimals}f}")
            cache[key] = vals
        out |= cache[key]
    return out


def check(readme: Path = ROOT / "README.md") -> List[str]:
    sections = prose_sections(readme.read_text())
    all_names = sorted(p.stem for p in RESULTS.glob("*.md"))
    cache: Dict = {}
    problems = []
    for head, body in sections.items():
        cited = sorted({n for n in re.findall(r"([\w\-]+)\.(?:md|json)", body) if (RESULTS / f"{n}.md").exists()})
        names = cited or all_names
        for match in NUMBER.finditer(body):
            num = match.group(1)
            if num in ALLOWED:
                continue
            decimals = len(num.split(".")[1])
            if num not in candidates(names, decimals, cache):
                start = max(0, match.start() - 60)
                context = " ".join(body[start:match.end() + 30].split())
                problems.append(f"[{head}] {num} not in {', '.join(names) if cited else 'any results file'}: "
                                f"...{context}...")
    return problems


def main() -> int:
    problems = check()
    for p in problems:
        print(p)
    print(f"{len(problems)} number(s) not found in the results files they cite")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
