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
is removed at the end, unless ``--cache-dir`` names one to keep. The demo ends by writing an
HTML report (the table, the verdicts as bars, and for the class request the loss attack,
per-class accuracy, prediction matrices, embeddings and layer similarity of the original, the
first strategy's and the retrained model) and says where; an existing file is never replaced
(``erasus-demo-report-1.html`` and so on).
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

from ..visualization.report import _Verdict

DEFAULT_STRATEGIES = ("gradient_ascent", "negative_gradient", "scrub", "ssd", "wga", "simnpo")


def run_demo(strategies: Sequence[str] = DEFAULT_STRATEGIES, seed: int = 0, forget_class: int = 1,
             cache_dir: Optional[Path] = None, progress: bool = True, json_out: Optional[Path] = None,
             coreset: bool = True, report: Optional[Path] = None) -> list:
    import torch

    from ..core.registry import resolve

    strategies = [resolve("strategy", s) for s in strategies]
    if json_out and Path(json_out).exists():
        from ..core.exceptions import ConfigError

        raise ConfigError(f"--json {json_out} exists: choose a new file (the demo never overwrites one).")
    if report is not None and Path(report).exists():
        from ..core.exceptions import ConfigError

        raise ConfigError(f"--report {report} exists: choose a new file (the demo never overwrites one).")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if cache_dir:
        return _run(strategies, seed, forget_class, Path(cache_dir), progress, json_out, coreset, report)
    with tempfile.TemporaryDirectory(prefix="erasus-demo-") as tmp:  # removed when the demo ends
        return _run(strategies, seed, forget_class, Path(tmp), progress, json_out, coreset, report)


def free_report_path(name: str = "erasus-demo-report.html") -> Path:
    """``name`` in the current folder, or ``stem-1``, ``stem-2``, ... if it is taken."""
    p = Path(name)
    k = 0
    while p.exists():
        k += 1
        p = Path(f"{Path(name).stem}-{k}{Path(name).suffix}")
    return p


def _run(strategies, seed, forget_class, cache_dir, progress, json_out, coreset, report=None) -> list:
    from ..evaluation.protocols import fashion_mnist_small_task
    from ..experiments import format_table, run_scenario
    from ..experiments.runner import coreset_row

    t0 = time.perf_counter()
    task = fashion_mnist_small_task(cache_dir=cache_dir, progress=progress)
    print(f"Erasus demo: Fashion-MNIST subset ({len(task.train)} training / {len(task.holdout_full)} held-out / "
          f"{len(task.test)} test images), MLP, seed {seed}")
    rows = []
    class_split = None
    for kind in ("random", "class"):
        split = task.split(kind, fraction=0.1, forget_class=forget_class, seed=seed)
        what = "a random 10% of the training set" if kind == "random" else f"every image of class {forget_class}"
        print(f"\n== forget {what} ({len(split.dataset.forget_indices)} samples) ==")
        rows += run_scenario(task, split, strategies, seed=seed, progress=progress)
        class_split = split if kind == "class" else class_split
        if coreset and strategies:
            rows.append(coreset_row(task, split, strategies[0], "kcenter", 0.5, seed, progress))
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
    if report is not None:
        _write_report(report, task, class_split, strategies, rows, seed)
        print(f"\nReport: {Path(report).resolve()} (open it in a browser)")
    return rows


def _write_report(path, task, split, strategies, rows, seed) -> None:
    """The demo's HTML report: the table and verdict bars per request; for the class request,
    the views of the original, the first strategy's and the retrained model."""
    import warnings

    import matplotlib.pyplot as plt

    from ..unlearners import ErasusUnlearner
    from ..visualization.analysis import run_comparison
    from ..visualization.report import ReportGenerator
    from ..visualization.runs import compute_views, run_figures

    rep = ReportGenerator("Erasus demo")
    rep.add_text("What ran", f"{task.name}: {len(task.train)} training images, MLP, seed {seed}. Two requests (a "
                 f"random 10% of the training set; every image of class {split.forget_classes[0]}), each strategy at "
                 "its defaults with calibrated stopping on held-out data, judged against a model retrained without "
                 "the forget data. The original must FAIL and the retrained model PASS.")
    head = ["scenario", "method", "time (s)", "forget acc", "retain acc", "test acc", "MIA AUC", "avg gap", "verdict"]
    rep.add_table("Results", head, [[r.scenario, r.method, f"{r.time_s:.1f}", f"{100 * r.forget_acc:.1f}",
                                     f"{100 * r.retain_acc:.1f}", f"{100 * r.test_acc:.1f}", f"{r.mia_auc:.3f}",
                                     f"{r.avg_gap:.2f}", _Verdict(r.verdict)] for r in rows])
    for scen in dict.fromkeys(r.scenario for r in rows):
        fig = run_comparison([r.to_dict() for r in rows if r.scenario == scen])
        rep.add_figure(fig, f"{scen}: forget / test accuracy, loss-attack AUC and average gap to the retrained model "
                       "per method (green PASS, red FAIL, orange PARTIAL)")
        plt.close(fig)
    if strategies and split is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = ErasusUnlearner(task.original(seed), strategy=strategies[0]).fit(
                split.forget, split.retain, split.holdout, progress=False, seed=seed)
        models = {"original": task.original(seed), "unlearned": res.model, "retrained": task.gold(split, seed)}
        views = compute_views(models, split.forget, split.retain, split.test, split.holdout)
        rep.add_text(f"{split.kind}: {strategies[0]} up close", f"The views below compare the original, "
                     f"{strategies[0]}'s model (unlearned) and the retrained model on the class request.")
        for fig, cap in run_figures({"views": views, "result": {"history": res.history}}):
            rep.add_figure(fig, cap)
            plt.close(fig)
    rep.write(path)
