"""MUSE and WMDP loaders, from their published file layouts.

MUSE (Shi et al., "MUSE: Machine Unlearning Six-Way Evaluation for Language Models",
2024; ``muse-bench`` on GitHub / the Hub), one folder per corpus (``news`` / ``books``)::

    raw/forget.txt, raw/retain1.txt, raw/retain2.txt, raw/holdout.txt   (plain text corpora)
    knowmem/forget_qa.json, knowmem/retain2_qa.json (or retain_qa.json)  [{"question", "answer"}]
    knowmem/forget_qa_icl.json, knowmem/retain_qa_icl.json               (in-context examples)
    verbmem/forget.json                                                   [{"prompt", "gt"}]
    privleak/forget.json, privleak/retain2.json, privleak/holdout.json    ["text", ...]

WMDP (Li et al., "The WMDP Benchmark", ICML 2024): multiple-choice files
``wmdp-bio.json`` / ``wmdp-cyber.json`` / ``wmdp-chem.json`` (``[{"question", "choices",
"answer"}]``, ``answer`` the index of the right choice; ``.jsonl`` accepted too) and the
unlearning corpora ``bio-forget-corpus.jsonl`` / ``cyber-forget-corpus.jsonl`` /
``*-retain-corpus.jsonl`` (one JSON object with a ``text`` field, or a JSON string, per line).

Nothing is downloaded: pass the folder where the files are. Missing optional parts are
``None``; a folder with none of the expected files is an error that lists what was looked for.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from ...core.exceptions import DataError
from ...models.causal_lm import chunk_text  # noqa: F401  (MUSE corpora are unlearned in token chunks)


def _read_json_list(path: Path) -> list:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list, got {type(data).__name__}.")
    return data


def _check_keys(rows: list, keys: tuple, path: Path) -> list:
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or any(k not in r for k in keys):
            raise DataError(f"{path}: record {i} should have the keys {keys}, got {r if not isinstance(r, dict) else sorted(r)}.")
    return rows


@dataclass
class MUSEData:
    """One MUSE corpus: ``raw`` texts, ``knowmem`` QA, ``verbmem`` prompts, ``privleak`` texts."""

    root: Path
    raw: Dict[str, str] = field(default_factory=dict)
    knowmem: Dict[str, List[dict]] = field(default_factory=dict)
    verbmem: List[dict] = field(default_factory=list)
    privleak: Dict[str, List[str]] = field(default_factory=dict)


def load_muse(root: os.PathLike) -> MUSEData:
    """Load a MUSE corpus folder (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"MUSE folder {root} does not exist; download MUSE-News or MUSE-Books (muse-bench) and pass "
                        "the corpus folder (the one holding raw/, knowmem/, verbmem/, privleak/).")
    d = MUSEData(root)
    for name in ("forget", "retain1", "retain2", "holdout"):
        p = root / "raw" / f"{name}.txt"
        if p.exists():
            d.raw[name] = p.read_text(encoding="utf-8")
    for name in ("forget_qa", "retain2_qa", "retain_qa", "forget_qa_icl", "retain_qa_icl"):
        p = root / "knowmem" / f"{name}.json"
        if p.exists():
            d.knowmem["retain_qa" if name == "retain2_qa" else name] = _check_keys(_read_json_list(p),
                                                                                  ("question", "answer"), p)
    p = root / "verbmem" / "forget.json"
    if p.exists():
        d.verbmem = _check_keys(_read_json_list(p), ("prompt", "gt"), p)
    for name in ("forget", "retain2", "retain", "holdout"):
        p = root / "privleak" / f"{name}.json"
        if p.exists():
            rows = _read_json_list(p)
            if not all(isinstance(t, str) for t in rows):
                raise DataError(f"{p}: expected a JSON list of strings.")
            d.privleak["retain" if name == "retain2" else name] = rows
    if not (d.raw or d.knowmem or d.verbmem or d.privleak):
        raise DataError(f"No MUSE files under {root}: expected raw/*.txt, knowmem/*_qa.json, verbmem/forget.json or "
                        "privleak/*.json.")
    return d


@dataclass
class WMDPData:
    """WMDP multiple-choice questions per domain and the forget / retain corpora."""

    root: Path
    questions: Dict[str, List[dict]] = field(default_factory=dict)
    corpora: Dict[str, List[str]] = field(default_factory=dict)


def load_wmdp(root: os.PathLike, domains: Optional[List[str]] = None) -> WMDPData:
    """Load WMDP files from ``root`` (see the module docstring); ``domains`` defaults to every
    domain found."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"WMDP folder {root} does not exist; pass the folder holding wmdp-*.json and the corpora.")
    d = WMDPData(root)
    for p in sorted(root.glob("wmdp-*.json*")):
        domain = p.name.split(".")[0][len("wmdp-"):]
        if domains and domain not in domains:
            continue
        rows = _check_keys(_read_json_list(p), ("question", "choices", "answer"), p)
        for i, r in enumerate(rows):
            if not 0 <= int(r["answer"]) < len(r["choices"]):
                raise DataError(f"{p}: record {i} has answer {r['answer']} for {len(r['choices'])} choices.")
        d.questions[domain] = rows
    for p in sorted(root.glob("*-corpus.jsonl")):
        name = p.name[: -len("-corpus.jsonl")]
        texts = []
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines()):
            if not line.strip():
                continue
            obj = json.loads(line)
            if isinstance(obj, dict) and "text" not in obj:
                raise DataError(f"{p}: line {i + 1} has no 'text' field.")
            texts.append(obj["text"] if isinstance(obj, dict) else str(obj))
        d.corpora[name] = texts
    if not (d.questions or d.corpora):
        raise DataError(f"No WMDP files under {root}: expected wmdp-<domain>.json(l) or <name>-corpus.jsonl.")
    return d
