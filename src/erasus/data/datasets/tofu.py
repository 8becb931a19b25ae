"""TOFU (Maini, Feng, Schwarzschild, Lipton & Kolter, "TOFU: A Task of Fictitious
Unlearning for LLMs", 2024): 200 fictitious authors, 20 question-answer pairs each.

TOFU ships with Erasus (MIT licence; ``erasus/data/assets/tofu.json.gz``, provenance in
``erasus/data/assets/TOFU_SOURCE.md``), so ``load_tofu(split)`` works on a fresh install,
offline, from any folder. ``root=`` (or ``$ERASUS_TOFU_DIR``) reads local JSON files instead
(the layout of the authors' repository: ``full``, ``forget{01,05,10}``, ``retain{90,95,99}``,
``holdout{01,05,10}``, the ``*_perturbed`` evaluation files with paraphrased and perturbed
answers, ``real_authors``, ``world_facts``), and ``source="hf"`` loads the Hugging Face Hub
copy ``locuslab/TOFU`` through ``datasets`` (when the Hub is reachable). ``tofu_request(forget)`` returns the matched forget /
retain / holdout splits of one deletion request and checks that they are disjoint.
``load_idk()`` reads the refusal answers used by the IdK variants of DPO / NLL.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from torch.utils.data import Dataset

from ...core.exceptions import DataError

FORGET_SPLITS = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
SPLITS = ("full", *FORGET_SPLITS, *FORGET_SPLITS.values(), "holdout01", "holdout05", "holdout10",
          "forget01_perturbed", "forget05_perturbed", "forget10_perturbed", "retain_perturbed",
          "real_authors", "real_authors_perturbed", "world_facts", "world_facts_perturbed")


def default_root() -> Optional[Path]:
    """``$ERASUS_TOFU_DIR`` when set (a folder of TOFU JSON files), else ``None``: the copy
    shipped with the package is used."""
    if os.environ.get("ERASUS_TOFU_DIR"):
        return Path(os.environ["ERASUS_TOFU_DIR"])
    return None


_PACKAGED: Optional[Dict[str, list]] = None


def _packaged() -> Dict[str, list]:
    """The TOFU files shipped with the package (read once)."""
    global _PACKAGED
    if _PACKAGED is None:
        import gzip
        from importlib import resources

        ref = resources.files("erasus.data").joinpath("assets", "tofu.json.gz")
        if not ref.is_file():
            raise DataError("The packaged TOFU data (erasus/data/assets/tofu.json.gz) is missing: reinstall erasus "
                            "(pip install -e .), or pass root= a folder of TOFU JSON files.")
        with ref.open("rb") as fh:
            _PACKAGED = json.loads(gzip.decompress(fh.read()).decode("utf-8"))
    return _PACKAGED


def _packaged_split(split: str) -> list:
    """One split of the shipped data: stored files as they are, the others derived as the
    authors cut them (forget = the last authors of ``full``, retain = the rest; the smaller
    holdout and perturbed forget files are the first / last records of the 10% ones)."""
    data = _packaged()
    if split in data:
        return data[split]
    sizes = {"01": 40, "05": 200, "10": 400}
    full = data["full"]
    if split.startswith("forget") and split.endswith("_perturbed"):
        return data["forget10_perturbed"][-sizes[split[6:8]]:]
    if split.startswith("forget"):
        return full[-sizes[split[6:]]:]
    if split.startswith("retain"):
        return full[: len(full) - sizes[f"{100 - int(split[6:]):02d}"]]
    if split.startswith("holdout"):
        return data["holdout10"][: sizes[split[7:]]]
    raise DataError(f"No packaged TOFU split {split!r}.")


class TOFUDataset(Dataset):
    """A list of TOFU records (dicts with ``question``, ``answer`` and, in evaluation
    splits, ``paraphrased_answer``, ``perturbed_answer``, ``paraphrased_question``);
    ``split`` names the file it came from."""

    def __init__(self, records: List[dict], split: str):
        self.records, self.split = records, split

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        return self.records[i]

    @property
    def questions(self) -> List[str]:
        return [r["question"] for r in self.records]

    @property
    def answers(self) -> List[str]:
        return [r["answer"] for r in self.records]


def load_tofu(split: str = "forget10", root: Optional[os.PathLike] = None, source: str = "auto") -> TOFUDataset:
    """One TOFU split (see the module docstring). ``source``: ``"auto"`` (``root`` or
    ``$ERASUS_TOFU_DIR`` when given, else the copy shipped with the package), ``"package"``,
    ``"local"`` (JSON files under ``root`` / ``$ERASUS_TOFU_DIR``) or ``"hf"`` (the Hub, through
    ``datasets``)."""
    if split not in SPLITS:
        import difflib

        close = difflib.get_close_matches(split, SPLITS, n=1)
        raise DataError(f"Expected a TOFU split in {list(SPLITS)}, got {split!r}."
                        + (f" Did you mean {close[0]!r}?" if close else ""))
    if source not in ("auto", "package", "local", "hf"):
        raise DataError(f"Expected source 'auto', 'package', 'local' or 'hf', got {source!r}.")
    if source == "hf":
        try:
            import datasets
        except ImportError as e:
            raise ImportError("source='hf' needs the `datasets` package: pip install 'erasus[llm]'.") from e
        return TOFUDataset([dict(r) for r in datasets.load_dataset("locuslab/TOFU", split, split="train")], split)
    base = Path(root) if root is not None else default_root()
    if source == "package" or (source == "auto" and base is None):
        return TOFUDataset([dict(r) for r in _packaged_split(split)], split)
    path = base / f"{split}.json" if base is not None else None
    if path is None or not path.exists():
        raise DataError(f"TOFU file {split}.json not found (looked in {base}). Point root= (or $ERASUS_TOFU_DIR) at "
                        "a directory with the TOFU JSON files, or leave both unset to use the copy shipped with "
                        "Erasus.")
    records = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(records, list) or not records or "question" not in records[0]:
        raise DataError(f"Expected {path} to hold a JSON array of question/answer records.")
    return TOFUDataset(records, split)


def load_idk(root: Optional[os.PathLike] = None) -> List[str]:
    """The refusal answers (``idontknow.jsonl``: one plain-text line each); from ``root`` (or
    ``$ERASUS_TOFU_DIR``) when given, else from the copy shipped with the package."""
    base = Path(root) if root is not None else default_root()
    if base is None:
        return list(_packaged()["idontknow"])
    path = base / "idontknow.jsonl"
    if not path.exists():
        raise DataError(f"idontknow.jsonl not found (looked in {base}); pass root= a folder that holds it, or leave "
                        "it unset to use the copy shipped with Erasus.")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass
class TOFURequest:
    """The splits of one TOFU deletion request: ``forget`` (e.g. forget10), the matching
    ``retain`` (retain90), ``holdout`` (holdout10: never trained on, for MIAs) and the
    evaluation files with paraphrased / perturbed answers."""

    forget: TOFUDataset
    retain: TOFUDataset
    holdout: TOFUDataset
    forget_eval: TOFUDataset
    retain_eval: TOFUDataset
    real_authors: TOFUDataset
    world_facts: TOFUDataset

    def as_dict(self) -> Dict[str, TOFUDataset]:
        return dict(self.__dict__)


def tofu_request(forget: str = "forget10", root: Optional[os.PathLike] = None, source: str = "auto") -> TOFURequest:
    """All splits for ``forget`` in ``{forget01, forget05, forget10}``; raises if forget and
    retain overlap or do not make up ``full``."""
    if forget not in FORGET_SPLITS:
        raise DataError(f"Expected forget in {sorted(FORGET_SPLITS)}, got {forget!r}.")
    get = lambda s: load_tofu(s, root, source)  # noqa: E731
    f, r = get(forget), get(FORGET_SPLITS[forget])
    overlap = set(f.questions) & set(r.questions)
    if overlap:
        raise DataError(f"TOFU {forget} and {FORGET_SPLITS[forget]} share {len(overlap)} questions; expected disjoint "
                        "splits.")
    return TOFURequest(f, r, get("holdout" + forget[-2:]), get(forget + "_perturbed"), get("retain_perturbed"),
                       get("real_authors_perturbed"), get("world_facts_perturbed"))


QUESTIONS_PER_AUTHOR = 20


def subset_request(request: TOFURequest, forget_authors: int, retain_authors: int) -> TOFURequest:
    """A smaller request with the first ``forget_authors`` authors of the forget split (and
    as many held-out authors) and the first ``retain_authors`` of the retain split, with
    their evaluation records: for tests and quick benchmark runs (TOFU has 20 questions
    per author, stored author by author)."""
    nf, nr = forget_authors * QUESTIONS_PER_AUTHOR, retain_authors * QUESTIONS_PER_AUTHOR
    if nf < 1 or nr < 1 or nf > len(request.forget) or nr > len(request.retain):
        raise DataError(f"Expected 1..{len(request.forget) // QUESTIONS_PER_AUTHOR} forget and "
                        f"1..{len(request.retain) // QUESTIONS_PER_AUTHOR} retain authors, got {forget_authors} and "
                        f"{retain_authors}.")
    f, r = request.forget.records[:nf], request.retain.records[:nr]
    keep = lambda ds, qs: TOFUDataset([x for x in ds.records if x["question"] in qs], ds.split)  # noqa: E731
    return TOFURequest(TOFUDataset(f, request.forget.split), TOFUDataset(r, request.retain.split),
                       TOFUDataset(request.holdout.records[:nf], request.holdout.split),
                       keep(request.forget_eval, {x["question"] for x in f}),
                       keep(request.retain_eval, {x["question"] for x in r}),
                       request.real_authors, request.world_facts)
