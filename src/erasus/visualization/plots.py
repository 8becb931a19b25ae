"""Plots of an unlearning run, for people who would rather look than read a table.

Each plot has two halves: a ``*_data`` function that measures (plain numpy arrays, tested
against the numbers they stand for) and a drawing function that returns a matplotlib
``Figure`` (the Agg backend: no display needed) and, given ``path``, saves it as PNG and/or
SVG through :func:`save_figure` (atomic, never over an existing file unless
``overwrite=True``).

* :func:`loss_distributions`: per-sample loss histograms of forget / retain / held-out data
  for several models overlaid (the original, the unlearned, the retrained): forgetting shows
  as the forget histogram moving onto the held-out one, as the retrained model's does;
* :func:`per_class_accuracy`: accuracy of each class for each model, side by side;
* :func:`prediction_shift`: how one model's predictions map onto another's (a confusion
  matrix between two models, or against the labels);
* :func:`training_history`: a run's loss per step, its validation losses, and where the
  stopping rule backed off;
* :func:`generation_grid`: what several text-to-image models draw for the same prompts and
  seeds (the original beside a concept-erased model), one row per prompt;
* :func:`cross_attention_maps`: where each text-to-image model's UNet attends to one word of a
  prompt (the erased concept's word before and after erasure), under what it draws.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Union

import numpy as np

from ..core.exceptions import ConfigError, DataError

PathLike = Union[str, os.PathLike]


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConfigError("Plots need matplotlib: pip install 'erasus[viz]'.") from e
    return plt


def save_figure(fig, path: PathLike, formats: Sequence[str] = ("png",), overwrite: bool = False,
                dpi: int = 120) -> list:
    """Save ``fig`` as ``path`` with each suffix in ``formats`` (``"png"``, ``"svg"``, ``"pdf"``;
    a suffix already on ``path`` is replaced), each written to a temporary file and moved into
    place. An existing file is never overwritten unless ``overwrite=True``. Returns the paths."""
    base = Path(path)
    base = base.with_suffix("") if base.suffix.lower() in (".png", ".svg", ".pdf") else base
    targets = [base.with_suffix(f".{f.lower().lstrip('.')}") for f in formats]
    bad = [t for t in targets if t.suffix not in (".png", ".svg", ".pdf")]
    if bad:
        raise ConfigError(f"Expected formats among png, svg and pdf, got {[t.suffix for t in bad]}.")
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing} exist: pass overwrite=True to replace them, or another path.")
    base.parent.mkdir(parents=True, exist_ok=True)
    for t in targets:
        tmp = t.with_name(f".{t.name}.tmp{os.getpid()}")
        fig.savefig(tmp, format=t.suffix[1:], dpi=dpi, bbox_inches="tight")
        os.replace(tmp, t)
    return targets


def _finish(fig, path, formats, overwrite):
    if path is not None:
        save_figure(fig, path, formats, overwrite)
    return fig


# -- loss distributions ---------------------------------------------------------------------
def loss_distribution_data(models: Mapping[str, object], splits: Mapping[str, object],
                           max_samples: Optional[int] = 2000) -> Dict[str, Dict[str, np.ndarray]]:
    """``{split: {model: per-sample losses}}`` of every model on every split (loaders or
    datasets; at most ``max_samples`` per split, the same samples for every model)."""
    from ..core.stats import split_stats
    from ..models import wrap
    from ..utils.data import subsample_loader

    if not models or not splits:
        raise DataError("Expected at least one model and one split to plot.")
    out: Dict[str, Dict[str, np.ndarray]] = {}
    for s, data in splits.items():
        loader = subsample_loader(data, max_samples, seed=0)
        out[s] = {m: np.asarray(split_stats(wrap(model), loader)["loss"], dtype=np.float64)
                  for m, model in models.items()}
    return out


def loss_distributions(models: Mapping[str, object], splits: Mapping[str, object], path: Optional[PathLike] = None,
                       bins: int = 40, log_loss: bool = True, formats: Sequence[str] = ("png",),
                       overwrite: bool = False, max_samples: Optional[int] = 2000):
    """One panel per split, each model's per-sample loss histogram overlaid (shared bins;
    ``log_loss``: on log10(loss + 1e-6), where memorised samples' tiny losses are visible)."""
    data = loss_distribution_data(models, splits, max_samples)
    plt = _plt()
    fig, axes = plt.subplots(1, len(data), figsize=(4.2 * len(data), 3.2), squeeze=False)
    tf = (lambda v: np.log10(v + 1e-6)) if log_loss else (lambda v: v)
    allv = np.concatenate([tf(v) for d in data.values() for v in d.values()])
    allv = allv[np.isfinite(allv)]
    edges = np.linspace(allv.min(), allv.max() + 1e-9, bins + 1) if allv.size else bins
    for ax, (s, d) in zip(axes[0], data.items()):
        for m, v in d.items():
            ax.hist(tf(v), bins=edges, histtype="step", linewidth=1.6, label=m, density=True)
        ax.set_title(s)
        ax.set_xlabel("log10 loss" if log_loss else "loss")
    axes[0][0].set_ylabel("density")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    return _finish(fig, path, formats, overwrite)


# -- per-class accuracy ---------------------------------------------------------------------
def predictions(model, data) -> tuple:
    """``(predicted, true)`` class labels of a classifier on ``data``, in order."""
    import torch

    from ..models import wrap
    from ..utils.data import ordered_loader

    adapter = wrap(model)
    if adapter.family != "classifier":
        raise DataError(f"Per-class plots need a classifier; this model is a {adapter.family!r}.")
    was = adapter.model.training
    adapter.model.eval()
    pred, true = [], []
    try:
        with torch.no_grad():
            for b in ordered_loader(data):
                logits, y = adapter.logits_and_labels(b)
                pred.append(logits.argmax(1).cpu().numpy())
                true.append(y.cpu().numpy())
    finally:
        adapter.model.train(was)
    return np.concatenate(pred), np.concatenate(true)


def per_class_accuracy_data(models: Mapping[str, object], data, n_classes: Optional[int] = None):
    """``(classes, {model: accuracy per class})`` on ``data`` (NaN for a class with no sample)."""
    got = {m: predictions(model, data) for m, model in models.items()}
    n = n_classes or int(max(max(p.max(), t.max()) for p, t in got.values())) + 1
    classes = np.arange(n)
    out = {}
    for m, (p, t) in got.items():
        out[m] = np.array([(p[t == c] == c).mean() if (t == c).any() else np.nan for c in classes])
    return classes, out


def per_class_accuracy(models: Mapping[str, object], data, path: Optional[PathLike] = None,
                       class_names: Optional[Sequence[str]] = None, formats: Sequence[str] = ("png",),
                       overwrite: bool = False):
    """Grouped bars: each class's accuracy under each model (e.g. before / after / retrained)."""
    return draw_per_class_accuracy(per_class_accuracy_data(models, data, len(class_names) if class_names else None),
                                   path, class_names, formats, overwrite)


def draw_per_class_accuracy(data, path: Optional[PathLike] = None, class_names: Optional[Sequence[str]] = None,
                            formats: Sequence[str] = ("png",), overwrite: bool = False, title: str = ""):
    """:func:`per_class_accuracy` from its data ``(classes, {model: accuracy per class})``."""
    classes, acc = data
    classes = np.asarray(classes)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(classes) * max(1, len(acc)) / 2), 3.2))
    w = 0.8 / len(acc)
    for k, (m, a) in enumerate(acc.items()):
        ax.bar(classes + (k - (len(acc) - 1) / 2) * w, 100 * np.asarray(a, dtype=float), width=w, label=m)
    ax.set_xticks(classes, class_names if class_names else [str(c) for c in classes], rotation=45 if class_names else 0)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _finish(fig, path, formats, overwrite)


# -- prediction shift ------------------------------------------------------------------------
def prediction_shift_data(model_a, model_b, data, n_classes: Optional[int] = None) -> np.ndarray:
    """``M[i, j]``: how many samples ``model_a`` predicts as class ``i`` and ``model_b`` as
    ``j`` (``model_b=None``: against the true labels, a confusion matrix of ``model_a``)."""
    pa, t = predictions(model_a, data)
    pb = predictions(model_b, data)[0] if model_b is not None else t
    n = n_classes or int(max(pa.max(), pb.max(), t.max())) + 1
    M = np.zeros((n, n), dtype=np.int64)
    np.add.at(M, (pa, pb), 1)
    return M


def prediction_shift(model_a, model_b, data, path: Optional[PathLike] = None, labels: Sequence[str] = ("before", "after"),
                     class_names: Optional[Sequence[str]] = None, formats: Sequence[str] = ("png",),
                     overwrite: bool = False):
    """Heat map of :func:`prediction_shift_data`, counts written in the cells."""
    M = prediction_shift_data(model_a, model_b, data, len(class_names) if class_names else None)
    return draw_prediction_matrix(M, path, labels[0], labels[1] if model_b is not None else "true label",
                                  class_names, formats, overwrite)


def draw_prediction_matrix(M, path: Optional[PathLike] = None, ylabel: str = "before", xlabel: str = "after",
                           class_names: Optional[Sequence[str]] = None, formats: Sequence[str] = ("png",),
                           overwrite: bool = False, title: str = ""):
    """A count matrix as a heat map with the counts in the cells (:func:`prediction_shift`)."""
    M = np.asarray(M)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(0.5 * len(M) + 2.5, 0.5 * len(M) + 2))
    ax.imshow(M, cmap="Blues")
    names = class_names or [str(c) for c in range(len(M))]
    ax.set_xticks(range(len(M)), names, rotation=45)
    ax.set_yticks(range(len(M)), names)
    ax.set_ylabel(ylabel)
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title, fontsize=10)
    for i in range(len(M)):
        for j in range(len(M)):
            if M[i, j]:
                ax.text(j, i, str(M[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if M[i, j] > M.max() / 2 else "black")
    fig.tight_layout()
    return _finish(fig, path, formats, overwrite)


# -- training history ----------------------------------------------------------------------
def training_history(result, path: Optional[PathLike] = None, formats: Sequence[str] = ("png",),
                     overwrite: bool = False):
    """A run's training loss per step (left) and its validation losses per split (right), with
    the best step and the stopping rule's back-offs marked; ``result``: an
    :class:`~erasus.core.callbacks.UnlearningResult` or its ``history`` dict."""
    h = getattr(result, "history", result)
    if not isinstance(h, Mapping) or "loss" not in h:
        raise DataError("Expected an UnlearningResult or its history (a dict with 'step' and 'loss').")
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    a1.plot(h.get("step", range(1, len(h["loss"]) + 1)), h["loss"], linewidth=1)
    a1.set_xlabel("step")
    a1.set_ylabel("training loss")
    evals = h.get("eval", [])
    for key in sorted({k for e in evals for k in e if k.startswith("val_") and k.endswith("_loss")}):
        a2.plot([e["step"] for e in evals if key in e], [e[key] for e in evals if key in e], marker=".", label=key[4:-5])
    best = getattr(result, "best_step", None)
    for ax in (a1, a2):
        if best is not None:
            ax.axvline(best, color="green", linestyle="--", linewidth=1)
        for b in h.get("backoffs", []):
            ax.axvline(b["step"], color="red", linestyle=":", linewidth=1)
    a2.set_xlabel("step")
    a2.set_ylabel("validation loss")
    if evals:
        a2.legend(fontsize=8)
    fig.tight_layout()
    return _finish(fig, path, formats, overwrite)


def generation_grid_data(models: Mapping[str, object], prompts: Sequence[str], n: int = 4, seed: int = 0,
                         steps: int = 25, guidance_scale: float = 5.0) -> Dict[str, np.ndarray]:
    """``{model name: (prompts, n, H, W, C) images in [0, 1]}``: each text-to-image model's
    ``n`` images for each prompt, the same seeds for every model (so a difference between two
    columns is the models', not the noise's)."""
    if not prompts or n < 1:
        raise DataError(f"Expected at least one prompt and n >= 1, got {len(prompts)} prompt(s) and n={n}.")
    out = {}
    for name, model in models.items():
        imgs = model.generate([p for p in prompts for _ in range(n)], seed=seed, steps=steps,
                              guidance_scale=guidance_scale)
        x = ((imgs.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
        out[name] = x.reshape(len(prompts), n, *x.shape[1:])
    return out


def _show_image(ax, img: np.ndarray) -> None:
    """An ``(H, W, C)`` image in [0, 1] on ``ax``: grey for one channel, colour for three."""
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)


def generation_grid(models: Mapping[str, object], prompts: Sequence[str], path: Optional[PathLike] = None, n: int = 4,
                    seed: int = 0, steps: int = 25, guidance_scale: float = 5.0, formats: Sequence[str] = ("png",),
                    overwrite: bool = False):
    """One row per prompt, one block of ``n`` images per model (:func:`generation_grid_data`):
    the images a concept-erased model draws beside the original's for the erased and the
    preserved prompts."""
    data = generation_grid_data(models, prompts, n, seed, steps, guidance_scale)
    plt = _plt()
    names = list(data)
    fig, axes = plt.subplots(len(prompts), len(names) * n, squeeze=False,
                             figsize=(1.3 * n * len(names) + 1.5, 1.4 * len(prompts) + 0.6))
    for r, prompt in enumerate(prompts):
        for m, name in enumerate(names):
            for j in range(n):
                ax = axes[r][m * n + j]
                _show_image(ax, data[name][r, j])
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0 and j == 0:
                    ax.set_title(name, loc="left", fontsize=9)
                if m == 0 and j == 0:
                    ax.set_ylabel(prompt if len(prompt) <= 28 else prompt[:25] + "...", fontsize=8)
    fig.tight_layout()
    return _finish(fig, path, formats, overwrite)


def cross_attention_data(models: Mapping[str, object], prompt: str, word: str, timestep: Optional[int] = None,
                         seed: int = 0) -> Dict[str, np.ndarray]:
    """``{model name: (h, w) map}``: the attention each image position of the latent gives the
    tokens of ``word`` in ``prompt``, summed over the word's tokens, each cross-attention
    layer's map resized to the latent's resolution (bilinear) and averaged over the layers, as
    Prompt-to-Prompt (Hertz et al., ICLR 2023) shows a word's attention
    (:meth:`~erasus.models.StableDiffusionWrapper.get_cross_attention_maps`: one noise
    prediction at ``timestep`` on seeded noise, the same for every model)."""
    import torch.nn.functional as F

    from ..models.wrappers import StableDiffusionWrapper

    out = {}
    for name, model in models.items():
        w = model if isinstance(model, StableDiffusionWrapper) else StableDiffusionWrapper(model)
        where = w.model.word_positions(prompt, word)
        size = tuple(w.model.latent_shape(1)[2:])
        maps = w.get_cross_attention_maps(prompt, timestep=timestep, seed=seed)
        layers = [F.interpolate(m[where].sum(0)[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
                  for m in maps.values()]
        out[name] = (sum(layers) / len(layers)).numpy()
    return out


def cross_attention_maps(models: Mapping[str, object], prompt: str, word: str, path: Optional[PathLike] = None,
                         images: bool = True, timestep: Optional[int] = None, seed: int = 0, steps: int = 25,
                         guidance_scale: float = 5.0, formats: Sequence[str] = ("png",), overwrite: bool = False):
    """One column per text-to-image model: what it draws for ``prompt`` (with ``images``; the
    same seed for every model) above where its UNet attends to ``word``
    (:func:`cross_attention_data`, one colour scale for all models, so a word whose attention
    an erasure removed fades). The concept-erasure papers' picture of an erased word."""
    data = cross_attention_data(models, prompt, word, timestep, seed)
    drawn = generation_grid_data(models, [prompt], 1, seed, steps, guidance_scale) if images else {}
    plt = _plt()
    names = list(data)
    rows = 2 if images else 1
    fig, axes = plt.subplots(rows, len(names), squeeze=False, figsize=(2.2 * len(names) + 0.8, 2.2 * rows + 0.4))
    top = max(float(a.max()) for a in data.values()) or 1.0
    for c, name in enumerate(names):
        if images:
            _show_image(axes[0][c], drawn[name][0, 0])
        axes[rows - 1][c].imshow(data[name], cmap="magma", vmin=0, vmax=top)
        axes[0][c].set_title(name, fontsize=9)
        for r in range(rows):
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
    axes[rows - 1][0].set_ylabel(f"attention to '{word}'", fontsize=8)
    if images:
        axes[0][0].set_ylabel(prompt if len(prompt) <= 28 else prompt[:25] + "...", fontsize=8)
    fig.tight_layout()
    return _finish(fig, path, formats, overwrite)
