"""``erasus demo``: unlearn and verify on bundled data, end to end, in a few minutes on a CPU.

Trains an MLP on the bundled Fashion-MNIST subset (6,000 training images) until it
memorises, then for two requests
(forget a random 10% of the training set; forget every sample of one class) retrains the
gold model without the forget data and runs each strategy at its default settings,
with calibrated stopping on held-out data. Prints one table: time, speed-up over
retraining, forget / retain / test accuracy, loss-MIA AUC, MIA-efficacy, the average gap
to the retrained model and the benchmark verdict (original and retrained rows are the
sanity checks: the original must FAIL where forgetting is visible, the retrained model
must PASS). The selection stage is shown by one more row per request: the first strategy
run on the half of the forget set the ``kcenter`` selector picks (the coreset study's best
cheap coreset), verified on the whole request. Trained models go to a temporary folder that
is removed at the end, unless ``--cache-dir`` names one to keep.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

DEFAULT_STRATEGIES = ("gradient_ascent", "negative_gradient", "scrub", "ssd", "wga", "simnpo")


def run_demo(strategies: Sequence[str] = DEFAULT_STRATEGIES, seed: int = 0, forget_class: int = 1,
             cache_dir: Optional[Path] = None, progress: bool = True, json_out: Optional[Path] = None,
             coreset: bool = True) -> list:
    import torch

    from ..core.registry import resolve

    strategies = [resolve("strategy", s) for s in strategies]
    if json_out and Path(json_out).exists():
        from ..core.exceptions import ConfigError

        raise ConfigError(f"--json {json_out} exists: choose a new file (the demo never overwrites one).")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if cache_dir:
        return _run(strategies, seed, forget_class, Path(cache_dir), progress, json_out, coreset)
    with tempfile.TemporaryDirectory(prefix="erasus-demo-") as tmp:  # removed when the demo ends
        return _run(strategies, seed, forget_class, Path(tmp), progress, json_out, coreset)


def _run(strategies, seed, forget_class, cache_dir, progress, json_out, coreset) -> list:
    import warnings

    from ..experiments import format_table, run_scenario
    from ..evaluation.protocols import fashion_mnist_small_task
    from ..experiments.runner import _row
    from ..unlearners import ErasusUnlearner

    t0 = time.perf_counter()
    task = fashion_mnist_small_task(cache_dir=cache_dir, progress=progress)
    print(f"Erasus demo: Fashion-MNIST subset ({len(task.train)} training / {len(task.holdout_full)} held-out / "
          f"{len(task.test)} test images), MLP, seed {seed}")
    rows = []
    for kind in ("random", "class"):
        split = task.split(kind, fraction=0.1, forget_class=forget_class, seed=seed)
        what = "a random 10% of the training set" if kind == "random" else f"every image of class {forget_class}"
        print(f"\n== forget {what} ({len(split.dataset.forget_indices)} samples) ==")
        rows += run_scenario(task, split, strategies, seed=seed, progress=progress)
        if coreset and strategies:
            name = strategies[0]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t = time.perf_counter()
                res = ErasusUnlearner(task.original(seed), strategy=name, selector="kcenter").fit(
                    split.forget, split.retain, split.holdout, prune_ratio=0.5, progress=progress, seed=seed)
                dt = time.perf_counter() - t
            rows.append(_row(split.kind, f"{name} + kcenter 50%", seed, res.model, split, task.gold(split, seed), dt,
                             task.retrain_seconds(split, seed), res.stop_reason, 5000))
    print()
    print(format_table(rows))
    print("\nStop reasons:")
    for r in rows:
        if r.method not in ("original", "retrain"):
            print(f"  {r.scenario:<9} {r.method:<24} {r.note}")
    print("\nHow to read it: forget / retain / test acc in %. MIA AUC: the loss-threshold membership attack, forget "
          "set vs held-out data (0.5: the forget set looks unseen). MIA-eff.: SalUn's MIA-efficacy, the share of "
          "forget samples an SVC trained on retain vs test confidences calls unseen (compare with the retrain row). "
          "avg gap: mean |difference| to the retrained model, in points, over forget/retain/test acc and "
          "MIA-eff. verdict: UnlearningBenchmark against the retrained model (PASS: every difference's 95% interval "
          "inside its tolerance; FAIL: outside; PARTIAL: in between; INCONCLUSIVE: the request is too small to "
          "tell). The original must FAIL and the retrained model PASS: they are the sanity checks. "
          f"'+ kcenter 50%': the selection stage, the first strategy on half the forget set.\n"
          f"Total {time.perf_counter() - t0:.0f} s.")
    if json_out:
        from ..utils.io import atomic_write_text

        atomic_write_text(json_out, json.dumps([r.to_dict() for r in rows], indent=2))
    return rows
