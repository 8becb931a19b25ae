"""A saved run: one folder per unlearning run, read back by ``erasus report``, ``erasus
visualize`` and ``erasus dashboard`` without the models or the data.

::

    RUN_DIR/
      run.json           what was asked and what happened: the config, the request, the method,
                         the steps and stop reason, the timings, the history, the verdict with
                         every metric's interval (BenchmarkReport.to_dict()), metrics per model
      views.json         the measured views for plots and the dashboard, per model (original,
                         unlearned, retrained): per-class accuracy on forget / retain / test,
                         prediction matrices, twin embeddings (one PCA for all models), per-layer
                         CKA and weight change to the retrained model, loss-attack scores
      model.safetensors  the unlearned model's weights (state dict)
      features.npz       the embedding view's features (float16), for other projections
      report.html        the self-contained HTML report

The folder is written under a temporary name and renamed into place, so a reader never sees
half a run; an existing folder is replaced only with ``overwrite=True``.
"""
from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import List, Mapping, Optional, Sequence

import numpy as np

from ..core.exceptions import DataError
from .plots import PathLike

FORMAT = 1
MODELS = ("original", "unlearned", "retrained")


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return [_jsonable(v) for v in x.tolist()] if x.dtype == object else _clean(x.tolist())
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def _clean(v):
    if isinstance(v, list):
        return [_clean(e) for e in v]
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def compute_views(models: Mapping[str, object], forget, retain, test, holdout, max_samples: int = 300,
                  seed: int = 0) -> dict:
    """The dashboard's and the report's data for classifier ``models`` (``{"original",
    "unlearned", "retrained"}`` or any names; ``"retrained"``, when present, is the reference of
    the layer view, else the first model). At most ``max_samples`` samples per split."""
    from ..utils.data import subsample_loader
    from .analysis import embedding_features, layer_similarity_data, loss_mia_scores, mia_roc_data, project
    from .plots import per_class_accuracy_data, predictions

    if not models:
        raise DataError("Expected at least one model to compute views of.")
    subs = {g: subsample_loader(d, max_samples, seed=seed) for g, d in
            (("forget", forget), ("retain", retain), ("test", test))}
    n_classes = 1 + max(int(predictions(next(iter(models.values())), d)[1].max()) for d in subs.values())
    per_class = {}
    for g, d in subs.items():
        classes, acc = per_class_accuracy_data(models, d, n_classes)
        per_class[g] = {"classes": classes, "accuracy": acc}
    matrices = {}
    for m, model in models.items():
        matrices[m] = {}
        for g in ("forget", "test"):
            p, t = predictions(model, subs[g])
            M = np.zeros((n_classes, n_classes), dtype=np.int64)
            np.add.at(M, (t, p), 1)
            matrices[m][g] = M
    feats, layer = embedding_features(models, {"forget": subs["forget"], "retain": subs["retain"]},
                                      max_samples=max_samples)
    pts = project(feats, "pca", seed)
    ref_name = "retrained" if "retrained" in models else next(iter(models))
    base_name = "original" if "original" in models else ref_name
    layers = layer_similarity_data(models, models[ref_name], subs["test"], max_samples, base=models[base_name])
    scores = loss_mia_scores(models, forget, holdout, max_samples=4 * max_samples)
    aucs = {m: r["auc"] for m, r in mia_roc_data(scores).items()}
    views = _jsonable({
        "models": list(models), "n_classes": n_classes,
        "per_class": per_class, "prediction_matrices": matrices,
        "embeddings": {"layer": layer, "method": "pca", "points": pts},
        "layers": {"reference": ref_name, "base": base_name, **layers},
        "attack": {"name": "loss", "scores": {m: {"forget": s[0], "holdout": s[1]} for m, s in scores.items()},
                   "auc": aucs},
    })
    # the features themselves go to features.npz (for other projections: `erasus visualize --method tsne`)
    views["_features"] = {f"{m}/{g}": v.astype(np.float16) for m, d in feats.items() for g, v in d.items()}
    return views


def save_run(directory: PathLike, *, config: dict, summary: dict, views: Optional[dict] = None,
             state_dict=None, overwrite: bool = False, report: bool = True) -> Path:
    """Write a run folder (see the module's docstring) atomically. ``summary``: what
    happened (``result``, ``verification``, ``metrics``, ...), stored in ``run.json`` beside
    ``config``. Returns the folder."""
    from ..utils.io import atomic_write_text, save_state_dict

    from ..utils.io import replace_dir

    out = Path(directory)

    def build(tmp: Path) -> None:
        run = {"erasus_run": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "name": out.name,
               "config": config, **summary}
        atomic_write_text(tmp / "run.json", json.dumps(_jsonable(run), indent=1))
        if views is not None:
            v = dict(views)
            feats = v.pop("_features", None)
            atomic_write_text(tmp / "views.json", json.dumps(_jsonable(v)))
            if feats:
                np.savez_compressed(tmp / "features.npz", **feats)
        if state_dict is not None:
            save_state_dict(state_dict, tmp / "model.safetensors")
        if report:
            loaded = load_run(tmp)
            loaded["name"] = out.name
            report_from_run(tmp, tmp / "report.html", _loaded=loaded)

    replace_dir(build, out, overwrite=overwrite)
    return out


def load_run(directory: PathLike) -> dict:
    """``run.json`` of a run folder, with its views under ``"views"`` (``None`` without)."""
    d = Path(directory)
    f = d / "run.json"
    if not f.is_file():
        raise DataError(f"{d}: not an Erasus run folder (no run.json). Runs are written by `erasus unlearn "
                        "--config ... --out RUN_DIR` or erasus.visualization.save_run.")
    run = json.loads(f.read_text(encoding="utf-8"))
    if run.get("erasus_run") != FORMAT:
        raise DataError(f"{f}: expected run format {FORMAT}, got {run.get('erasus_run')!r}.")
    v = d / "views.json"
    run["views"] = json.loads(v.read_text(encoding="utf-8")) if v.is_file() else None
    run["dir"] = str(d)
    return run


VIEWS = ("history", "attack", "per_class", "matrices", "embeddings", "layers")


def load_features(directory: PathLike) -> dict:
    """``{model: {group: (n, d) features}}`` saved with a run (``features.npz``)."""
    f = Path(directory) / "features.npz"
    if not f.is_file():
        raise DataError(f"{directory}: no features.npz (the run was saved without views).")
    out: dict = {}
    with np.load(f) as z:
        for key in z.files:
            m, g = key.split("/", 1)
            out.setdefault(m, {})[g] = z[key].astype(np.float32)
    return out


def run_figures(run: dict, views: Sequence[str] = VIEWS, method: str = "pca") -> List[tuple]:
    """``[(figure, caption)]`` of a loaded run, for the ``views`` named (default all):
    ``history``, ``attack`` (loss-attack ROC and scores), ``per_class`` (accuracy),
    ``matrices`` (predictions on the forget set), ``embeddings`` (``method``: the saved PCA,
    or ``"tsne"`` / ``"umap"`` recomputed from the saved features), ``layers`` (CKA)."""
    from .analysis import draw_embeddings, draw_layer_similarity, mia_roc, project
    from .plots import draw_per_class_accuracy, draw_prediction_matrix, training_history

    bad = [x for x in views if x not in VIEWS]
    if bad:
        raise DataError(f"Unknown view(s) {bad}; expected some of {list(VIEWS)}.")
    figs = []
    hist = (run.get("result") or {}).get("history")
    if "history" in views and hist and hist.get("loss"):
        figs.append((training_history(hist), "Training loss per step and validation losses; red: the stopping "
                     "rule's back-offs"))
    v = run.get("views")
    if not v:
        if set(views) - {"history"}:
            if not figs:
                raise DataError(f"{run.get('dir')}: the run has no views.json (saved with verify.views: false).")
        return figs
    att = v["attack"]
    if "attack" in views:
        figs.append((mia_roc({m: (s["forget"], s["holdout"]) for m, s in att["scores"].items()}),
                     "Loss attack, forget set vs held-out data: ROC (a retrained model sits near the diagonal) and the "
                     "score distributions (-log10 loss)"))
    if "per_class" in views:
        for g, d in v["per_class"].items():
            figs.append((draw_per_class_accuracy((d["classes"], d["accuracy"]), title=f"{g} data"),
                         f"Per-class accuracy on {g} data"))
    if "matrices" in views:
        for m, mats in v["prediction_matrices"].items():
            figs.append((draw_prediction_matrix(mats["forget"], ylabel="true class", xlabel="predicted",
                                                title=f"{m}: forget set"), f"Prediction matrix of the {m} model on the forget set"))
    if "embeddings" in views:
        e = v["embeddings"]
        pts = e["points"] if method == e["method"] else project(load_features(run["dir"]), method)
        figs.append((draw_embeddings(pts, title=f"{method.upper()} of {e['layer']} features"),
                     "Forget and retain samples in one shared projection of each model's features"))
    if "layers" not in views:
        return figs
    lay = v["layers"]
    figs.append((draw_layer_similarity(lay, reference_name=lay["reference"], base_name=lay["base"]),
                 f"Per layer: linear CKA to the {lay['reference']} model, and how far the weights moved from the "
                 f"{lay['base']} model"))
    return figs


def report_from_run(directory: PathLike, path: Optional[PathLike] = None, overwrite: bool = False,
                    _loaded: Optional[dict] = None) -> Path:
    """The HTML report of a saved run (default ``RUN_DIR/report.html``)."""
    import matplotlib.pyplot as plt

    from .report import ReportGenerator

    run = _loaded or load_run(directory)
    cfg = run.get("config") or {}
    title = f"Erasus run {run.get('name', '')}"
    rep = ReportGenerator(title)
    req = run.get("request") or {}
    if req:
        rep.add_table("Request", ["", ""], [[k, v] for k, v in req.items()])
    res = run.get("result") or {}
    rows = [[k, res[k]] for k in ("strategy", "selector", "steps", "stop_reason") if k in res]
    rows += [[f"time: {k}", f"{v:.2f} s"] for k, v in sorted((res.get("timings") or {}).items())]
    rep.add_table("Run", ["", ""], rows)
    rep.sections.append("<h3>Configuration</h3><pre>" + html.escape(json.dumps(cfg, indent=1, default=str)) + "</pre>")
    ver = run.get("verification")
    if ver:
        rep.add_verification(_ReportView(ver))
    mets = run.get("metrics") or {}
    if mets:
        keys = sorted({k for d in mets.values() for k in d})
        rep.add_table("Metrics per model", ["model"] + keys, [[m] + [_fmt(d.get(k)) for k in keys]
                                                              for m, d in mets.items()])
    for fig, cap in run_figures(run):
        rep.add_figure(fig, cap)
        plt.close(fig)
    target = Path(path) if path is not None else Path(directory) / "report.html"
    return rep.write(target, overwrite=overwrite)


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else v


class _ReportView:
    """A saved ``BenchmarkReport.to_dict()`` seen as the report object ``add_verification`` reads."""

    class _R:
        def __init__(self, name, d):
            self.name, self.value, self.reference = name, d.get("value"), d.get("reference")
            self.delta_ci = tuple(d.get("delta_ci") or (float("nan"), float("nan")))
            self.verdict, self.note = d.get("verdict", ""), d.get("note", "")

    def __init__(self, d: dict):
        self.verdict = d.get("verdict", "")
        self.results = [self._R(n, m) for n, m in (d.get("metrics") or {}).items()]
        self.notes = list(d.get("notes") or []) + ([d["verdict_note"]] if d.get("verdict_note") else [])
