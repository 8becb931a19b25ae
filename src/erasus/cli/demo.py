"""``erasus demo``: unlearn and verify on bundled data, end to end, in a few minutes on a CPU.

Trains an MLP on the bundled Fashion-MNIST subset (6,000 training images) until it
memorises, then for two requests
(forget a random 10% of the training set; forget every sample of one class) retrains the
gold model without the forget data and runs each strategy at its default settings,
with calibrated stopping on held-out data. Prints one table: time, speed-up over
retraining, forget / retain / test accuracy, loss-MIA AUC, MIA-efficacy, the average gap
to the retrained model and the benchmark verdict (original and retrained rows are the
sanity checks: the original must FAIL where forgetting is visible, the retrained model
must PASS).
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

DEFAULT_STRATEGIES = ("gradient_ascent", "negative_gradient", "scrub", "ssd", "wga", "simnpo")


def run_demo(strategies: Sequence[str] = DEFAULT_STRATEGIES, seed: int = 0, forget_class: int = 1,
             cache_dir: Optional[Path] = None, progress: bool = True, json_out: Optional[Path] = None) -> list:
    import torch

    from ..core.registry import resolve
    from ..evaluation.protocols import fashion_mnist_small_task
    from ..experiments import format_table, run_scenario

    strategies = [resolve("strategy", s) for s in strategies]
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cache_dir = Path(cache_dir) if cache_dir else Path(tempfile.mkdtemp(prefix="erasus-demo-"))
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
    print()
    print(format_table(rows))
    print("\nStop reasons:")
    for r in rows:
        if r.method not in ("original", "retrain"):
            print(f"  {r.scenario:<9} {r.method:<18} {r.note}")
    print(f"\nforget/retain/test acc in %; MIA AUC: loss attack forget vs held-out (0.5 = unseen); avg gap: mean "
          f"|difference| to the retrained model in points over forget/retain/test acc and MIA-efficacy.\n"
          f"Total {time.perf_counter() - t0:.0f} s.")
    if json_out:
        Path(json_out).write_text(json.dumps([r.to_dict() for r in rows], indent=2))
    return rows
