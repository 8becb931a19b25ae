"""Run the cheat gallery through every verification entry point.

``judge_gallery(task, kind, seed, size=...)`` builds a request on a
:class:`~erasus.evaluation.protocols.ClassificationTask` (``kind="class"``: forget one class;
``"sample"``: forget ``size`` random training samples), its original and gold (retrained)
models, a second model retrained with another seed (the honest unlearner), and the cheats of
:func:`erasus.testing.cheats.cheat_gallery`; then judges each with every entry point, the
untouched original given wherever an entry point takes it (its power check):

========================= ==================================================================
``benchmark_retrain``     ``UnlearningBenchmark(gold_standard="retrain")``
``benchmark_holdout``     ``UnlearningBenchmark(gold_standard="holdout")`` (no retrained model)
``verifier_gold``         ``UnlearningVerifier`` with the retrained model
``verifier_holdout``      ``UnlearningVerifier`` with held-out data and the original only
``suite``                 ``UnlearningVerificationSuite``
========================= ==================================================================

Every cheat must FAIL (or be INCONCLUSIVE where the request is too small to tell) and the
retrained model must PASS (or be INCONCLUSIVE where too small): ``tests/test_cheat_gallery.py``
and ``benchmarks/verification.py --part gallery``.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

ENTRY_POINTS = ("benchmark_retrain", "benchmark_holdout", "verifier_gold", "verifier_holdout", "suite")


def judge_gallery(task, kind: str, seed: int = 0, size: Optional[int] = None, forget_class: int = 1,
                  entry_points: Sequence[str] = ENTRY_POINTS, cheats: Optional[Sequence[str]] = None,
                  n_bootstrap: int = 200) -> Dict[str, Dict[str, str]]:
    """``{model name: {entry point: verdict}}`` for one request (see the module docstring)."""
    from ..certification import UnlearningVerificationSuite, UnlearningVerifier
    from ..evaluation import UnlearningBenchmark
    from .cheats import cheat_gallery

    unknown = [e for e in entry_points if e not in ENTRY_POINTS]
    if unknown:
        raise ValueError(f"Unknown entry points {unknown}; expected some of {ENTRY_POINTS}.")
    if kind == "class":
        split = task.split("class", forget_class=forget_class, seed=seed)
    elif kind == "sample":
        if not size:
            raise ValueError("Sample forgetting needs size= (how many random training samples to forget).")
        split = task.split("random", fraction=size / len(task.train), seed=seed)
    else:
        raise ValueError(f"Expected kind 'class' or 'sample', got {kind!r}.")
    original, gold = task.original(seed), task.gold(split, seed)
    models = cheat_gallery(original, kind, [forget_class], split.forget, names=cheats)
    models["retrained"] = task.gold(split, seed + 10)
    f, r, t, h = split.forget, split.retain, split.test, split.holdout
    b_retrain = UnlearningBenchmark(gold_standard="retrain", n_bootstrap=n_bootstrap, seed=seed)
    b_holdout = UnlearningBenchmark(gold_standard="holdout", n_bootstrap=n_bootstrap, seed=seed)
    verifier = UnlearningVerifier(seed=seed)
    suite = UnlearningVerificationSuite(n_bootstrap=n_bootstrap, seed=seed)
    run = {
        "benchmark_retrain": lambda m: b_retrain.evaluate(m, f, r, t, h, gold_model=gold, original_model=original),
        "benchmark_holdout": lambda m: b_holdout.evaluate(m, f, r, t, h, original_model=original),
        "verifier_gold": lambda m: verifier.verify_all(m, f, r, h, gold_model=gold, original_model=original),
        "verifier_holdout": lambda m: verifier.verify_all(m, f, r, h, original_model=original),
        "suite": lambda m: suite.run(m, f, r, t, h, gold_model=gold, original_model=original),
    }
    return {name: {e: run[e](m).verdict for e in entry_points} for name, m in models.items()}
