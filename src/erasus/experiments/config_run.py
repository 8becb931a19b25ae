"""What ``erasus unlearn|evaluate|benchmark --config`` do with a classifier config
(:mod:`.configs`): build the task and the request, unlearn, verify against the retrained
model, measure the views, and save a run folder (:mod:`erasus.visualization.runs`)."""
from __future__ import annotations

import importlib
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Optional

from ..core.exceptions import ConfigError


def make_task(cfg: Dict[str, Any], progress: bool = True):
    """The config's :class:`~erasus.evaluation.protocols.ClassificationTask` and its request (a ``Split``)."""
    from ..evaluation import protocols

    t = cfg["task"]
    cache = Path(t["cache_dir"]) if t["cache_dir"] else None
    if t["factory"]:
        mod, _, fn = t["factory"].partition(":")
        try:
            task = getattr(importlib.import_module(mod), fn)()
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"task.factory {t['factory']!r}: could not import it ({e}).") from e
        if not isinstance(task, protocols.ClassificationTask):
            raise ConfigError(f"task.factory {t['factory']!r} returned {type(task).__name__}; expected a "
                              "ClassificationTask.")
        if cache is not None:
            task.cache_dir = cache
        task.progress = progress
    else:
        task = {"digits": protocols.digits_task, "fmnist_small": protocols.fashion_mnist_small_task,
                "fmnist": protocols.fashion_mnist_task}[t["name"]](cache_dir=cache, progress=progress)
    split = task.split(t["request"], fraction=t["fraction"], forget_class=t["forget_class"], seed=t["seed"])
    return task, split


def original_model(cfg, task):
    """The model to unlearn from: ``model.path``'s weights in the task's architecture, else the
    task's recipe trained on the whole training set (cached under ``task.cache_dir``)."""
    path = cfg["model"]["path"]
    if path is None:
        return task.original(cfg["task"]["seed"])
    return load_weights(task, path, "model.path")


def load_weights(task, path, what: str):
    """The task's architecture with the weights at ``path`` (a clear error when they do not fit)."""
    from ..utils.io import load_state_dict

    model = task.model_fn()
    try:
        model.load_state_dict(load_state_dict(path))
    except RuntimeError as e:
        raise ConfigError(f"{what} {path}: these weights do not fit the task's architecture "
                          f"({type(model).__name__}): {str(e).splitlines()[0]}") from e
    return model.eval()


def _verify(cfg, split, models: Dict[str, Any], gold):
    from ..evaluation.benchmark import UnlearningBenchmark
    from ..metrics import MetricSuite

    ms = cfg["verify"]["max_samples"]
    report = None
    if gold is not None:
        report = UnlearningBenchmark(gold_standard="retrain", max_samples=ms).evaluate(
            models["unlearned"], split.forget, split.retain, split.test, split.holdout, gold_model=gold)
    metrics = {}
    for name, m in models.items():
        r = MetricSuite(("accuracy", "mia", "mia_efficacy"), max_samples=ms).run(
            m, split.forget, split.retain, split.test, split.holdout)
        metrics[name] = {k: float(v) for k, v in r.items()}
    return report, metrics


def _request(cfg, split) -> dict:
    t = cfg["task"]
    return {"task": t["factory"] or t["name"], "request": split.kind, "forget samples": len(split.dataset.forget_indices),
            "retain samples": len(split.dataset.retain_indices), "seed": t["seed"]}


def _save(cfg, out, split, models, gold, result, overwrite, progress):
    from ..visualization.runs import compute_views, save_run

    report, metrics = _verify(cfg, split, models, gold)
    all_models = {**models, **({"retrained": gold} if gold is not None else {})}
    views = None
    if cfg["verify"]["views"]:
        views = compute_views(all_models, split.forget, split.retain, split.test, split.holdout)
    summary = {"request": _request(cfg, split), "result": result,
               "verification": report.to_dict() if report is not None else None, "metrics": metrics}
    path = None
    if out is not None:
        path = save_run(out, config=cfg, summary=summary, views=views, state_dict=models["unlearned"].state_dict(),
                        overwrite=overwrite)
    return path, report, metrics


def _tracker(cfg):
    from .tracking import ExperimentTracker

    o = cfg["output"]
    if not o["tracking"]:
        return None
    t = cfg["task"]
    return ExperimentTracker(o["tracking"], directory=o["tracking_dir"], tracking_uri=o["tracking_uri"],
                             tags={"task": t["factory"] or t["name"], "request": t["request"], "seed": t["seed"]})


def _verification_metrics(report, metrics) -> dict:
    out = {f"{m}.{k}": v for m, d in metrics.items() for k, v in d.items()}
    if report is not None:
        out.update({f"verify.{r.name}": r.value for r in report.results})
        out.update({f"verify.{r.name}.delta_lo": r.delta_ci[0] for r in report.results})
        out.update({f"verify.{r.name}.delta_hi": r.delta_ci[1] for r in report.results})
    return out


def _run_files(path) -> list:
    return [] if path is None else [p for p in (Path(path) / "report.html", Path(path) / "run.json") if p.exists()]


def _check_out(out, overwrite):
    if out is None:
        return
    p = Path(out)
    if p.exists() and not (p.is_dir() and not any(p.iterdir())) and not overwrite:
        raise ConfigError(f"output {p} exists: choose a new run folder, or pass --overwrite "
                          "(output.overwrite: true).")


def saved_model_folder(cfg: Dict[str, Any], out: Optional[str]):
    """``(folder, overwrite)`` where a config run that saves a model writes it (``out`` or
    ``output.dir``), checked before the model loads."""
    out = out or cfg["output"]["dir"]
    if out is None:
        raise ConfigError("erasus unlearn saves the unlearned model: pass --out FOLDER (or set output.dir in the "
                          "config).")
    overwrite = bool(cfg["output"]["overwrite"])
    _check_out(out, overwrite)
    return out, overwrite


def run_unlearn(cfg: Dict[str, Any], out: Optional[str] = None, progress: bool = True) -> dict:
    """Unlearn the config's request, verify, save the run (``out`` or ``output.dir``; not saved
    when both are empty). Returns ``{"dir", "verdict", "report", "metrics", "result"}``."""
    from ..unlearners import ErasusUnlearner

    out = out or cfg["output"]["dir"]
    overwrite = bool(cfg["output"]["overwrite"])
    _check_out(out, overwrite)
    task, split = make_task(cfg, progress)
    original = original_model(cfg, task)
    seed = cfg["task"]["seed"]
    s, sel, u = cfg["strategy"], cfg["selector"], cfg["unlearn"]
    unl = ErasusUnlearner(original, strategy=s["name"], strategy_kwargs={k: v for k, v in s.items() if k != "name"},
                          selector=sel["name"], selector_kwargs={k: v for k, v in sel.items()
                                                                 if k not in ("name", "prune_ratio")} or None)
    fit_kw = {}
    if hasattr(unl.strategy, "trainer_config"):
        fit_kw = {k: u[k] for k in ("max_steps",) if u[k] is not None}
        if u["epochs"] is not None:
            fit_kw["epochs"] = u["epochs"]
    if sel["name"]:
        fit_kw["prune_ratio"] = sel["prune_ratio"] if sel["prune_ratio"] is not None else 0.5
    tracker = _tracker(cfg)
    if tracker is not None and hasattr(unl.strategy, "trainer_config"):
        fit_kw["callbacks"] = [tracker]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        res = unl.fit(split.forget, split.retain, split.holdout if u["holdout"] else None, progress=progress,
                      seed=seed, **fit_kw)
        dt = time.perf_counter() - t0
    gold = task.gold(split, seed) if cfg["verify"]["gold"] == "retrain" else None
    result = {"strategy": s["name"], "selector": sel["name"], "steps": res.steps, "stop_reason": res.stop_reason,
              "timings": {**res.timings, "unlearn_s": dt,
                          **({"retrain_s": task.retrain_seconds(split, seed)} if gold is not None else {})},
              "history": res.history, "coreset": len(res.coreset) if res.coreset is not None else None}
    path, report, metrics = _save(cfg, out, split, {"original": original, "unlearned": res.model}, gold, result,
                                  overwrite, progress)
    if tracker is not None:
        if tracker.runs:  # the trainer's run: add what verification found and the files
            tracker.record(_verification_metrics(report, metrics), _run_files(path))
        else:  # a one-shot edit (no trainer): one record of the whole run
            tracker.log_run({"strategy": s["name"], "config": cfg}, _verification_metrics(report, metrics),
                            _run_files(path))
    return {"dir": path, "verdict": report.verdict if report else None, "report": report, "metrics": metrics,
            "result": result, "model": res.model, "tracked": tracker.runs[-1] if tracker is not None else None}


def run_evaluate(cfg: Dict[str, Any], model_path, out: Optional[str] = None, progress: bool = True) -> dict:
    """Verify the weights at ``model_path`` (the task's architecture) against the config's
    retrained model: the verdict of a model made elsewhere."""

    overwrite = bool(cfg["output"]["overwrite"])
    _check_out(out, overwrite)
    if not Path(model_path).is_file():
        raise ConfigError(f"--model {model_path}: not a file (expected .safetensors or .pt weights).")
    if cfg["verify"]["gold"] != "retrain":
        raise ConfigError("erasus evaluate judges against the retrained model: set verify.gold: retrain.")
    task, split = make_task(cfg, progress)
    original = original_model(cfg, task)
    model = load_weights(task, model_path, "--model")
    gold = task.gold(split, cfg["task"]["seed"])
    result = {"strategy": f"evaluated: {Path(model_path).name}", "steps": 0, "stop_reason": "not run here"}
    path, report, metrics = _save(cfg, out, split, {"original": original, "unlearned": model}, gold, result,
                                  overwrite, progress)
    return {"dir": path, "verdict": report.verdict, "report": report, "metrics": metrics}


def run_benchmark(cfg: Dict[str, Any], out: Optional[str] = None, progress: bool = True) -> dict:
    """``benchmark.strategies`` × ``benchmark.seeds`` on the config's request, with the
    original and retrained rows, and each strategy again on each of ``benchmark.selectors``'
    coresets (``selector.prune_ratio``, default 0.5): a markdown table, the rows as JSON and a
    comparison plot in ``out`` (or ``output.dir``)."""
    import json

    from ..utils.io import atomic_write_text
    from ..visualization.analysis import run_comparison
    from .runner import coreset_row, format_table, run_scenario

    out = out or cfg["output"]["dir"]
    if out is None:
        raise ConfigError("erasus benchmark writes a results folder: pass --out DIR (or output.dir).")
    _check_out(out, bool(cfg["output"]["overwrite"]))
    b = cfg["benchmark"]
    if not b["strategies"]:
        raise ConfigError("benchmark.strategies is empty: list the strategies to compare.")
    task, split = make_task(cfg, progress)
    rows = []
    ratio = cfg["selector"]["prune_ratio"] if cfg["selector"]["prune_ratio"] is not None else 0.5
    for seed in b["seeds"]:
        rows += run_scenario(task, split, b["strategies"], seed=seed, progress=progress,
                             max_samples=cfg["verify"]["max_samples"])
        rows += [coreset_row(task, split, s, sel, ratio, seed, progress, cfg["verify"]["max_samples"])
                 for sel in b["selectors"] for s in b["strategies"]]
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    table = format_table(rows, markdown=True)
    atomic_write_text(d / "results.md", f"# Benchmark: {split.kind} on {task.name}\n\n{table}\n")
    atomic_write_text(d / "results.json", json.dumps({"config": cfg, "rows": [r.to_dict() for r in rows]}, indent=1))
    run_comparison([r.to_dict() for r in rows], path=d / "comparison", overwrite=True)
    tracker = _tracker(cfg)
    if tracker is not None:
        tracker.log_run({"benchmark": split.kind, "config": cfg},
                        {f"{r.method}.s{r.seed}.{k}": getattr(r, k) for r in rows
                         for k in ("forget_acc", "retain_acc", "test_acc", "mia_auc", "avg_gap", "time_s")},
                        [d / "results.md", d / "results.json", d / "comparison.png"])
    return {"dir": d, "rows": rows, "table": format_table(rows), "tracked": tracker.runs[-1] if tracker else None}
