"""Where in the network a method changed the model, and what an attacker sees.

Each view has a ``*_data`` function that measures (plain numpy, tested against the numbers it
stands for) and a drawing function returning a matplotlib ``Figure`` (saved with ``path``):

* :func:`embeddings` — features of forget and retain samples projected to 2-D (PCA, t-SNE,
  or UMAP when ``umap-learn`` is installed) for two or more models side by side, one shared
  projection so positions compare (Unlearning Comparator's twin embedding view);
* :func:`layer_similarity` — per layer, linear CKA (Kornblith et al., ICML 2019, "Similarity
  of Neural Network Representations Revisited") between one model's activations and a
  reference's on the same inputs, and the relative change of the layer's weights;
* :func:`loss_landscape` — the loss along one or two random directions around the weights,
  filter-normalised (Li et al., NeurIPS 2018, "Visualizing the Loss Landscape of Neural
  Nets": each filter of the direction rescaled to the norm of the weights' filter; biases and
  other 1-D parameters left out of the direction, as in the paper);
* :class:`GradientFlowRecorder` and :func:`gradient_flow` — each layer's gradient norm per
  step during unlearning (a callback of the trainer);
* :func:`attention_maps` — a transformer's attention weights on one input, before / after;
* :func:`mia_roc` — ROC curves of a membership-inference score (forget vs held-out) for
  several models, and the score distributions (the LiRA/RMIA scores of
  :mod:`erasus.privacy` or the loss attack's).
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from ..core.callbacks import Callback
from ..core.exceptions import ConfigError, DataError
from .plots import PathLike, _finish, _plt


# -- features ------------------------------------------------------------------------------------
def _layers(model: torch.nn.Module) -> Dict[str, torch.nn.Module]:
    """The layers whose outputs and weights the views compare: modules with their own weight
    (``Linear``, ``Conv``, embeddings, ...), by name."""
    return {n: m for n, m in model.named_modules()
            if n and isinstance(getattr(m, "weight", None), torch.nn.Parameter) and m.weight.dim() >= 2}


def layer_activations(model: torch.nn.Module, data, max_samples: Optional[int] = 1000,
                      layers: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
    """``{layer: (n, d) activations}`` of each layer of :func:`_layers` (or ``layers``) on the
    first ``max_samples`` samples of ``data`` in order, flattened per sample."""
    from ..models import wrap
    from ..utils.data import ordered_loader

    adapter = wrap(model)
    named = _layers(adapter.model)
    if layers is not None:
        missing = sorted(set(layers) - set(named))
        if missing:
            raise ConfigError(f"Unknown layer(s) {missing}; this model's layers: {sorted(named)}.")
        named = {n: named[n] for n in layers}
    if not named:
        raise DataError(f"{type(adapter.model).__name__} has no layer with a weight matrix to compare.")
    out: Dict[str, List[torch.Tensor]] = {n: [] for n in named}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: out[n].append(
        (o[0] if isinstance(o, tuple) else o).detach().float().flatten(1).cpu())) for n, m in named.items()]
    was, seen = adapter.model.training, 0
    adapter.model.eval()
    try:
        with torch.no_grad():
            for b in ordered_loader(data):
                adapter.logits_and_labels(b)
                seen += len(out[next(iter(named))][-1])
                if max_samples is not None and seen >= max_samples:
                    break
    finally:
        adapter.model.train(was)
        for h in hooks:
            h.remove()
    return {n: torch.cat(v)[:max_samples].numpy() for n, v in out.items()}


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two activation matrices over the same ``n`` samples (Kornblith et al.
    2019, eq. for the linear kernel): ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` on
    column-centred ``Xc``, ``Yc``. 1 for representations equal up to rotation and scale."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise DataError(f"Expected two activation matrices over the same n >= 2 samples, got {x.shape} and {y.shape}.")
    x = x - x.mean(0)
    y = y - y.mean(0)
    num = np.linalg.norm(y.T @ x) ** 2
    den = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(num / den) if den > 0 else float("nan")


# -- twin embeddings -------------------------------------------------------------------------------
def embedding_data(models: Mapping[str, torch.nn.Module], groups: Mapping[str, object], method: str = "pca",
                   layer: Optional[str] = None, max_samples: int = 300, seed: int = 0):
    """``({model: {group: (n, 2) points}}, layer)``: each model's features at ``layer``
    (default: the input of the last layer, i.e. the penultimate representation) on each data
    group (e.g. forget / retain), projected to 2-D by one projection fitted on every model's
    features together (``"pca"``; ``"tsne"``; ``"umap"`` with umap-learn)."""
    _check_method(method)
    feats, name = embedding_features(models, groups, layer, max_samples)
    return project(feats, method, seed), name


def _check_method(method):
    if method not in ("pca", "tsne", "umap"):
        raise ConfigError(f"Expected method 'pca', 'tsne' or 'umap', got {method!r}.")


def embedding_features(models: Mapping[str, torch.nn.Module], groups: Mapping[str, object],
                       layer: Optional[str] = None, max_samples: int = 300):
    """``({model: {group: (n, d) features}}, layer name)``: the inputs of ``layer`` (default
    the last layer) on the first ``max_samples`` samples of each group."""
    if not models or not groups:
        raise DataError("Expected at least one model and one data group.")
    feats: Dict[str, Dict[str, np.ndarray]] = {}
    for m, model in models.items():
        name = layer or list(_layers(model))[-1]
        feats[m] = {g: _layer_inputs(model, name, data, max_samples) for g, data in groups.items()}
    return feats, layer or "penultimate"


def project(feats: Mapping[str, Mapping[str, np.ndarray]], method: str = "pca", seed: int = 0):
    """One 2-D projection fitted on all of ``{model: {group: (n, d)}}`` together, returned in
    the same nesting (so positions compare across models)."""
    _check_method(method)
    stacked = np.concatenate([np.asarray(v, np.float32) for d in feats.values() for v in d.values()])
    if method == "pca":
        from sklearn.decomposition import PCA

        pts = PCA(2, random_state=seed).fit_transform(stacked)
    elif method == "tsne":
        from sklearn.manifold import TSNE

        pts = TSNE(2, random_state=seed, init="pca", perplexity=min(30.0, max(2.0, len(stacked) / 4 - 1))
                   ).fit_transform(stacked)
    else:
        try:
            import umap
        except ImportError as e:
            raise ConfigError("method='umap' needs umap-learn: pip install umap-learn (or use 'pca' / 'tsne').") from e
        pts = umap.UMAP(n_components=2, random_state=seed).fit_transform(stacked)
    out, k = {}, 0
    for m, d in feats.items():
        out[m] = {}
        for g, v in d.items():
            out[m][g] = pts[k:k + len(v)]
            k += len(v)
    return out


def _layer_inputs(model, name, data, max_samples):
    """The inputs of layer ``name`` (flattened per sample) on the first ``max_samples`` samples."""
    from ..models import wrap
    from ..utils.data import ordered_loader

    adapter = wrap(model)
    mod = dict(adapter.model.named_modules())[name]
    got: List[torch.Tensor] = []
    h = mod.register_forward_hook(lambda _m, i, _o: got.append(i[0].detach().float().flatten(1).cpu()))
    was = adapter.model.training
    adapter.model.eval()
    try:
        with torch.no_grad():
            for b in ordered_loader(data):
                adapter.logits_and_labels(b)
                if sum(len(g) for g in got) >= max_samples:
                    break
    finally:
        h.remove()
        adapter.model.train(was)
    return torch.cat(got)[:max_samples].numpy()


def embeddings(models: Mapping[str, torch.nn.Module], groups: Mapping[str, object], path: Optional[PathLike] = None,
               method: str = "pca", layer: Optional[str] = None, max_samples: int = 300, seed: int = 0,
               formats: Sequence[str] = ("png",), overwrite: bool = False):
    """One panel per model, the groups' points in one shared 2-D projection."""
    pts, name = embedding_data(models, groups, method, layer, max_samples, seed)
    return draw_embeddings(pts, path, f"{method.upper()} of {name} features", formats, overwrite)


def draw_embeddings(pts: Mapping[str, Mapping[str, np.ndarray]], path: Optional[PathLike] = None, title: str = "",
                    formats: Sequence[str] = ("png",), overwrite: bool = False):
    """:func:`embeddings` from its points ``{model: {group: (n, 2)}}``."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(pts), figsize=(3.6 * len(pts), 3.4), squeeze=False, sharex=True, sharey=True)
    for ax, (m, d) in zip(axes[0], pts.items()):
        for g, p in d.items():
            p = np.asarray(p, dtype=float).reshape(-1, 2)
            ax.scatter(p[:, 0], p[:, 1], s=6, alpha=0.6, label=g)
        ax.set_title(m)
    axes[0][0].legend(fontsize=8, markerscale=2)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _finish(fig, path, formats, overwrite)


# -- layer-wise similarity -------------------------------------------------------------------------
def layer_similarity_data(models: Mapping[str, torch.nn.Module], reference: torch.nn.Module, data,
                          max_samples: int = 500, base: Optional[torch.nn.Module] = None) -> Dict[str, Dict[str, np.ndarray]]:
    """``{"layers": names, "cka": {model: per-layer CKA to reference}, "weight_change":
    {model: per-layer ||W - W_base|| / ||W_base||}}`` on ``data`` (models of the reference's
    architecture). ``base``: the model the changes are measured from (the original, to see
    where a method changed it; default the reference)."""
    ref_layers = _layers(reference)
    base_layers = _layers(base) if base is not None else ref_layers
    ref_act = layer_activations(reference, data, max_samples)
    names = list(ref_act)
    cka, change = {}, {}
    for m, model in models.items():
        mine = _layers(model)
        if list(mine) != list(ref_layers):
            raise DataError(f"{m}: expected the reference's architecture (layers {list(ref_layers)}), got {list(mine)}.")
        act = layer_activations(model, data, max_samples)
        cka[m] = np.array([linear_cka(act[n], ref_act[n]) for n in names])
        change[m] = np.array([float((mine[n].weight.detach() - base_layers[n].weight.detach()).norm()
                                    / base_layers[n].weight.detach().norm().clamp_min(1e-12)) for n in names])
    return {"layers": names, "cka": cka, "weight_change": change}


def layer_similarity(models: Mapping[str, torch.nn.Module], reference: torch.nn.Module, data,
                     path: Optional[PathLike] = None, reference_name: str = "reference", max_samples: int = 500,
                     base: Optional[torch.nn.Module] = None, base_name: str = "original",
                     formats: Sequence[str] = ("png",), overwrite: bool = False):
    """Left: per-layer CKA of each model to the reference; right: per-layer relative weight
    change from ``base`` (default the reference)."""
    return draw_layer_similarity(layer_similarity_data(models, reference, data, max_samples, base), path,
                                 reference_name, base_name if base is not None else reference_name, formats, overwrite)


def draw_layer_similarity(d: Mapping[str, object], path: Optional[PathLike] = None, reference_name: str = "reference",
                          base_name: str = "original", formats: Sequence[str] = ("png",), overwrite: bool = False):
    """:func:`layer_similarity` from its data (``layers``, ``cka``, ``weight_change``)."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    x = np.arange(len(d["layers"]))
    for m in d["cka"]:
        a1.plot(x, d["cka"][m], marker="o", label=m)
        a2.plot(x, d["weight_change"][m], marker="o", label=m)
    for ax in (a1, a2):
        ax.set_xticks(x, d["layers"], rotation=45, fontsize=7)
    a1.set_ylabel(f"linear CKA to {reference_name}")
    a1.set_ylim(0, 1.05)
    a2.set_ylabel(f"weight change from {base_name} (relative)")
    a1.legend(fontsize=8)
    fig.tight_layout()
    return _finish(fig, path, formats, overwrite)


# -- loss landscape --------------------------------------------------------------------------------
def filter_normalized_direction(model: torch.nn.Module, generator: torch.Generator) -> List[torch.Tensor]:
    """A random Gaussian direction with each filter (slice along dim 0) rescaled to the norm of
    the same filter of the weights; zero for 1-D parameters (biases, norms) — Li et al. 2018."""
    out = []
    for p in model.parameters():
        if p.dim() <= 1:
            out.append(torch.zeros_like(p))
            continue
        d = torch.randn(p.shape, generator=generator, dtype=torch.float32).to(p.device, p.dtype)
        dn = d.flatten(1).norm(dim=1).clamp_min(1e-12)
        pn = p.detach().flatten(1).norm(dim=1)
        out.append(d * (pn / dn).view(-1, *([1] * (p.dim() - 1))))
    return out


def loss_landscape_data(model: torch.nn.Module, splits: Mapping[str, object], dims: int = 1, steps: int = 21,
                        span: float = 1.0, seed: int = 0, max_samples: int = 500) -> dict:
    """Mean loss of ``model`` on each split at ``θ + a·d1 (+ b·d2)`` for ``a, b`` in
    ``[-span, span]`` (``steps`` points): ``{"alphas": (steps,), "loss": {split: (steps,) or
    (steps, steps)}}``. The model is restored exactly afterwards."""
    from ..core.stats import split_stats
    from ..models import wrap
    from ..utils.data import subsample_loader

    if dims not in (1, 2):
        raise ConfigError(f"Expected dims 1 or 2, got {dims!r}.")
    if steps < 3:
        raise ConfigError(f"Expected steps >= 3, got {steps!r}.")
    adapter = wrap(model)
    params = list(adapter.model.parameters())
    g = torch.Generator().manual_seed(seed)
    dirs = [filter_normalized_direction(adapter.model, g) for _ in range(dims)]
    saved = [p.detach().clone() for p in params]
    alphas = np.linspace(-span, span, steps)
    loaders = {s: subsample_loader(d, max_samples, seed=0) for s, d in splits.items()}
    grid = [(a,) for a in alphas] if dims == 1 else [(a, b) for a in alphas for b in alphas]
    out = {s: np.empty(len(grid)) for s in splits}
    try:
        with torch.no_grad():
            for k, coef in enumerate(grid):
                for p, p0, *ds in zip(params, saved, *dirs):
                    p.copy_(p0 + sum(c * d for c, d in zip(coef, ds)))
                for s, loader in loaders.items():
                    out[s][k] = float(np.mean(split_stats(adapter, loader)["loss"]))
    finally:
        with torch.no_grad():
            for p, p0 in zip(params, saved):
                p.copy_(p0)
    shape = (steps,) if dims == 1 else (steps, steps)
    return {"alphas": alphas, "loss": {s: v.reshape(shape) for s, v in out.items()}}


def loss_landscape(model: torch.nn.Module, splits: Mapping[str, object], path: Optional[PathLike] = None,
                   dims: int = 1, steps: int = 21, span: float = 1.0, seed: int = 0, max_samples: int = 500,
                   formats: Sequence[str] = ("png",), overwrite: bool = False):
    """1-D: each split's loss along the direction; 2-D: one contour panel per split."""
    d = loss_landscape_data(model, splits, dims, steps, span, seed, max_samples)
    plt = _plt()
    a = d["alphas"]
    if dims == 1:
        fig, ax = plt.subplots(figsize=(4.8, 3.2))
        for s, v in d["loss"].items():
            ax.plot(a, v, label=s)
        ax.set_xlabel("step along a filter-normalised direction")
        ax.set_ylabel("mean loss")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    else:
        fig, axes = plt.subplots(1, len(d["loss"]), figsize=(3.8 * len(d["loss"]), 3.3), squeeze=False)
        for ax, (s, v) in zip(axes[0], d["loss"].items()):
            cs = ax.contour(a, a, np.log10(v.T + 1e-8), levels=15)
            ax.clabel(cs, fontsize=6)
            ax.plot([0], [0], "k+")
            ax.set_title(f"{s}: log10 loss")
    fig.tight_layout()
    return _finish(fig, path, formats, overwrite)


# -- gradient flow ----------------------------------------------------------------------------------
class GradientFlowRecorder(Callback):
    """Records each layer's gradient norm after every optimiser step of an unlearning run::

        rec = GradientFlowRecorder()
        ErasusUnlearner(model, "negative_gradient").fit(forget, retain, callbacks=[rec])
        gradient_flow(rec)

    ``norms[layer]`` is the list of per-step norms (layers: modules with parameters, by name).
    Watching every step makes the trainer read the loss back every step (a host
    synchronisation per step on a GPU); use it to look, not in production runs."""

    def __init__(self):
        self.norms: Dict[str, List[float]] = {}
        self.steps: List[int] = []

    def on_step_end(self, trainer, module, step, loss):
        self.steps.append(step)
        for layer, v in layer_grad_norms(module.model).items():
            self.norms.setdefault(layer, []).append(v)
        return None


def layer_grad_norms(model: torch.nn.Module) -> Dict[str, float]:
    """The norm of the gradients the model holds, per layer (parameters grouped by the module
    that owns them)."""
    per: Dict[str, float] = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            layer = name.rsplit(".", 1)[0] if "." in name else name
            per[layer] = per.get(layer, 0.0) + float(p.grad.detach().float().pow(2).sum())
    return {layer: v ** 0.5 for layer, v in per.items()}


def gradient_flow(recorder: GradientFlowRecorder, path: Optional[PathLike] = None, formats: Sequence[str] = ("png",),
                  overwrite: bool = False):
    """Left: each layer's gradient norm per step; right: mean and max per layer over the run."""
    if not recorder.norms:
        raise DataError("The recorder saw no gradient: pass it to fit(..., callbacks=[recorder]) and run first.")
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.5, 3.3))
    names = list(recorder.norms)
    for n in names:
        v = recorder.norms[n]
        a1.plot(recorder.steps[-len(v):], v, linewidth=1, label=n)
    a1.set_yscale("log")
    a1.set_xlabel("step")
    a1.set_ylabel("gradient norm")
    x = np.arange(len(names))
    a2.bar(x, [np.max(recorder.norms[n]) for n in names], color="#bbb", label="max")
    a2.bar(x, [np.mean(recorder.norms[n]) for n in names], color="#3367d6", label="mean")
    a2.set_xticks(x, names, rotation=45, fontsize=7)
    a2.set_yscale("log")
    a2.legend(fontsize=8)
    if len(names) <= 10:
        a1.legend(fontsize=6)
    fig.tight_layout()
    return _finish(fig, path, formats, overwrite)


# -- attention maps ---------------------------------------------------------------------------------
def attention_data(model, inputs: Mapping[str, torch.Tensor], layer: int = -1) -> np.ndarray:
    """``(heads, seq, seq)`` attention weights of a Hugging Face transformer at ``layer`` on
    one tokenised input (``inputs``: the tokenizer's output for one sequence)."""
    model.eval()
    ids = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
    if "input_ids" not in ids or ids["input_ids"].dim() != 2 or ids["input_ids"].shape[0] != 1:
        raise DataError("Expected one tokenised sequence: {'input_ids': (1, seq), ...}.")
    with torch.no_grad():
        try:
            out = model(**ids, output_attentions=True)
        except TypeError as e:
            raise DataError(f"{type(model).__name__} does not return attention weights "
                            "(expected a transformers model accepting output_attentions=True).") from e
    att = getattr(out, "attentions", None)
    if not att or att[layer] is None:
        raise DataError("The model returned no attention weights: load it with attn_implementation='eager'.")
    return att[layer][0].float().cpu().numpy()


def attention_maps(models: Mapping[str, object], inputs: Mapping[str, torch.Tensor], tokens: Optional[Sequence[str]] = None,
                   path: Optional[PathLike] = None, layer: int = -1, formats: Sequence[str] = ("png",),
                   overwrite: bool = False):
    """Head-averaged attention of each model at ``layer`` on one input, side by side
    (e.g. before / after unlearning), with the tokens on the axes when given."""
    maps = {m: attention_data(model, inputs, layer).mean(0) for m, model in models.items()}
    plt = _plt()
    fig, axes = plt.subplots(1, len(maps), figsize=(3.8 * len(maps), 3.6), squeeze=False)
    for ax, (m, a) in zip(axes[0], maps.items()):
        ax.imshow(a, cmap="viridis", vmin=0)
        ax.set_title(m)
        if tokens is not None:
            ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=6)
            ax.set_yticks(range(len(tokens)), tokens, fontsize=6)
    fig.tight_layout()
    return _finish(fig, path, formats, overwrite)


# -- membership inference -----------------------------------------------------------------------------
def mia_roc_data(scores: Mapping[str, tuple]) -> Dict[str, dict]:
    """``{model: {"fpr", "tpr", "auc"}}`` from ``{model: (member_scores, nonmember_scores)}``
    (higher score: "member"; e.g. the negative loss, or LiRA's / RMIA's score on the forget
    set vs held-out data)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    out = {}
    for m, (mem, non) in scores.items():
        mem, non = np.asarray(mem, np.float64), np.asarray(non, np.float64)
        if mem.size == 0 or non.size == 0:
            raise DataError(f"{m}: expected member and non-member scores, got {mem.size} and {non.size}.")
        y = np.r_[np.ones(mem.size), np.zeros(non.size)]
        s = np.r_[mem, non]
        fpr, tpr, _ = roc_curve(y, s)
        out[m] = {"fpr": fpr, "tpr": tpr, "auc": float(roc_auc_score(y, s))}
    return out


def loss_mia_scores(models: Mapping[str, torch.nn.Module], forget, holdout, max_samples: int = 2000) -> Dict[str, tuple]:
    """The loss attack's scores of each model on the forget set and on held-out data, the input
    of :func:`mia_roc`: ``-log10(loss + 1e-8)`` (higher: more likely a member; a monotone map
    of the negative loss, so the ROC is the loss attack's, and the histograms stay readable)."""
    from .plots import loss_distribution_data

    d = loss_distribution_data(models, {"forget": forget, "holdout": holdout}, max_samples)
    return {m: (-np.log10(d["forget"][m] + 1e-8), -np.log10(d["holdout"][m] + 1e-8)) for m in models}


def mia_roc(scores: Mapping[str, tuple], path: Optional[PathLike] = None, formats: Sequence[str] = ("png",),
            overwrite: bool = False):
    """Left: ROC curves (log-log, where low-FPR attacks show) with AUCs; right: each model's
    member and non-member score distributions."""
    d = mia_roc_data(scores)
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    scores = {m: (np.asarray(a, dtype=float), np.asarray(b, dtype=float)) for m, (a, b) in scores.items()}
    for m, r in d.items():
        a1.plot(np.maximum(r["fpr"], 1e-4), np.maximum(r["tpr"], 1e-4), label=f"{m} (AUC {r['auc']:.3f})")
    a1.plot([1e-4, 1], [1e-4, 1], "k:", linewidth=0.8)
    a1.set_xscale("log")
    a1.set_yscale("log")
    a1.set_xlabel("false positive rate")
    a1.set_ylabel("true positive rate")
    a1.legend(fontsize=7)
    for k, (m, (mem, non)) in enumerate(scores.items()):
        c = f"C{k}"
        a2.hist(np.asarray(mem), bins=40, histtype="step", color=c, density=True, label=f"{m}: forget")
        a2.hist(np.asarray(non), bins=40, histtype="step", color=c, linestyle="--", density=True, label=f"{m}: held-out")
    a2.set_xlabel("attack score")
    a2.legend(fontsize=6)
    fig.tight_layout()
    return _finish(fig, path, formats, overwrite)


# -- many runs -------------------------------------------------------------------------------------------
def run_comparison(rows: Sequence[Mapping[str, object]], metrics: Sequence[str] = ("forget_acc", "test_acc", "mia_auc", "avg_gap"),
                   label: str = "method", path: Optional[PathLike] = None, formats: Sequence[str] = ("png",),
                   overwrite: bool = False):
    """A benchmark table as bars: one panel per metric, one bar per row (``rows``: dicts such
    as :class:`~erasus.experiments.runner.ScenarioRow` ``.to_dict()`` or a results file's rows)."""
    if not rows:
        raise DataError("Expected at least one row to compare.")
    missing = [m for m in metrics if m not in rows[0]]
    if missing:
        raise DataError(f"Rows have no {missing}; their keys: {sorted(rows[0])}.")
    plt = _plt()
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.4), squeeze=False)
    names = [str(r.get(label, i)) for i, r in enumerate(rows)]
    colors = [{"PASS": "#137333", "FAIL": "#b3261e", "PARTIAL": "#b06000"}.get(str(r.get("verdict")), "#777")
              for r in rows]
    for ax, m in zip(axes[0], metrics):
        ax.barh(range(len(rows)), [float(r[m]) for r in rows], color=colors)
        ax.set_yticks(range(len(rows)), names if ax is axes[0][0] else [""] * len(rows), fontsize=7)
        ax.invert_yaxis()
        ax.set_title(m, fontsize=9)
    fig.tight_layout()
    return _finish(fig, path, formats, overwrite)
