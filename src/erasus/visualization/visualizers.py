"""The specification's visualiser classes, each bound to a model, over the view functions of
:mod:`.analysis` and :mod:`.plots` (which compute the numbers behind each figure and are
tested against them)::

    viz = EmbeddingVisualizer(model)
    viz.plot(data_loader, method="tsne")                       # a matplotlib Figure
    LossLandscapeVisualizer(model).plot_2d_contour(data_loader)
    grads = GradientVisualizer(model)
    grads.plot_layer_norms({"forget": forget_loader, "retain": retain_loader})

Every ``plot*`` method returns the figure and, given ``path``, saves it (``formats``; an
existing file is kept unless ``overwrite=True``). :class:`~.attention.AttentionVisualizer` and
:class:`~.comparisons.ComparisonVisualizer` live in their own modules, as the specification
places them.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from ..core.exceptions import DataError
from .analysis import (GradientFlowRecorder, draw_embeddings, embedding_data, gradient_flow, layer_grad_norms,
                       loss_landscape)
from .plots import PathLike, _finish, _plt


def groups_of(data, name: str = "data") -> Dict[str, object]:
    """``data`` as named groups: a mapping (``{"forget": loader, "retain": loader}``) as given,
    one loader as ``{name: loader}``."""
    if isinstance(data, Mapping):
        if not data:
            raise DataError("Expected at least one data group, got an empty mapping.")
        return dict(data)
    return {name: data}


class EmbeddingVisualizer:
    """Features of a model (the input of its last layer, or ``layer``) projected to 2-D.
    ``compare``: other models (``{"original": model}``) drawn beside it in **one** shared
    projection, so positions compare (:func:`~.analysis.embeddings`)."""

    def __init__(self, model, name: str = "model", compare: Optional[Mapping[str, object]] = None):
        self.models = {name: model, **dict(compare or {})}

    def data(self, data, method: str = "pca", layer: Optional[str] = None, max_samples: int = 300, seed: int = 0):
        """``({model: {group: (n, 2) points}}, layer)``: the numbers :meth:`plot` draws."""
        return embedding_data(self.models, groups_of(data), method, layer, max_samples, seed)

    def plot(self, data, method: str = "pca", layer: Optional[str] = None, max_samples: int = 300, seed: int = 0,
             path: Optional[PathLike] = None, formats: Sequence[str] = ("png",), overwrite: bool = False):
        """``data``: a loader or named loaders (``{"forget": ..., "retain": ...}``); ``method``
        ``"pca"``, ``"tsne"`` or ``"umap"``."""
        pts, name = self.data(data, method, layer, max_samples, seed)
        return draw_embeddings(pts, path, f"{method.upper()} of {name} features", formats, overwrite)


class LossLandscapeVisualizer:
    """The loss around the model's weights along filter-normalised random directions (Li et
    al., NeurIPS 2018; :func:`~.analysis.loss_landscape`). The model is restored exactly."""

    def __init__(self, model):
        self.model = model

    def plot_1d(self, data, steps: int = 21, span: float = 1.0, seed: int = 0, max_samples: int = 500,
                path: Optional[PathLike] = None, formats: Sequence[str] = ("png",), overwrite: bool = False):
        return loss_landscape(self.model, groups_of(data), path, 1, steps, span, seed, max_samples, formats, overwrite)

    def plot_2d_contour(self, data, steps: int = 11, span: float = 1.0, seed: int = 0, max_samples: int = 500,
                        path: Optional[PathLike] = None, formats: Sequence[str] = ("png",), overwrite: bool = False):
        """One contour panel per data group (``steps`` × ``steps`` loss evaluations each)."""
        return loss_landscape(self.model, groups_of(data), path, 2, steps, span, seed, max_samples, formats, overwrite)


def layer_gradient_norms(model, groups: Mapping[str, object], max_samples: int = 500) -> Dict[str, Dict[str, float]]:
    """``{group: {layer: norm}}``: the norm of the gradient of the mean loss on each group's
    (first ``max_samples``) samples, per layer (parameters grouped by module). Where the forget
    set's gradient is large and the retain set's small is where a gradient method will act.
    The model's weights and gradients are left as they were."""
    from ..models import wrap
    from ..utils.data import ordered_loader

    adapter = wrap(model)
    m = adapter.model
    params = [(n, p) for n, p in m.named_parameters() if p.requires_grad]
    saved = [None if p.grad is None else p.grad.detach().clone() for _, p in params]
    was = m.training
    m.eval()
    out: Dict[str, Dict[str, float]] = {}
    try:
        for g, data in groups.items():
            for _, p in params:
                p.grad = None
            seen = 0
            for batch in ordered_loader(data):
                n = adapter.batch_size(batch)
                take = min(n, max_samples - seen)
                loss = adapter.per_sample_loss(batch)[:take].sum()
                loss.backward()
                seen += take
                if seen >= max_samples:
                    break
            if not seen:
                raise DataError(f"Expected samples in data group {g!r}, got none.")
            out[g] = {k: v / seen for k, v in layer_grad_norms(m).items()}  # the mean loss's gradient
    finally:
        for (_, p), gr in zip(params, saved):
            p.grad = gr
        m.train(was)
    return out


class GradientVisualizer:
    """Gradients per layer: :meth:`plot_layer_norms` of the loss on data groups (no training),
    and :meth:`plot_flow` of an unlearning run, recorded by :attr:`recorder`
    (``fit(..., callbacks=[viz.recorder])``; it reads the loss back every step)."""

    def __init__(self, model=None):
        self.model = model
        self.recorder = GradientFlowRecorder()

    def layer_norms(self, data, max_samples: int = 500) -> Dict[str, Dict[str, float]]:
        if self.model is None:
            raise DataError("GradientVisualizer(model) is needed for layer norms of a loss.")
        return layer_gradient_norms(self.model, groups_of(data), max_samples)

    def plot_layer_norms(self, data, max_samples: int = 500, path: Optional[PathLike] = None,
                         formats: Sequence[str] = ("png",), overwrite: bool = False):
        """Bars per layer, one colour per data group, log scale."""
        norms = self.layer_norms(data, max_samples)
        layers = list(next(iter(norms.values())))
        plt = _plt()
        fig, ax = plt.subplots(figsize=(max(4.5, 0.45 * len(layers) + 2), 3.4))
        width = 0.8 / len(norms)
        for k, (g, d) in enumerate(norms.items()):
            ax.bar(np.arange(len(layers)) + k * width, [d.get(layer, 0.0) for layer in layers], width, label=g)
        ax.set_xticks(np.arange(len(layers)) + 0.4 - width / 2, layers, rotation=45, ha="right", fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("gradient norm of the mean loss")
        ax.legend(fontsize=8)
        fig.tight_layout()
        return _finish(fig, path, formats, overwrite)

    def plot_flow(self, path: Optional[PathLike] = None, formats: Sequence[str] = ("png",), overwrite: bool = False):
        return gradient_flow(self.recorder, path, formats, overwrite)


__all__ = ["EmbeddingVisualizer", "LossLandscapeVisualizer", "GradientVisualizer", "layer_gradient_norms", "groups_of"]
