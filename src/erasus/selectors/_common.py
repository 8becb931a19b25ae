"""Shared computations for selectors: features, per-sample gradient norms."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..core.exceptions import UnsupportedModelError


@torch.no_grad()
def collect_features(adapter, loader, with_labels: bool = False):
    """Penultimate features of every sample in ``loader`` order (and their labels)."""
    feats, labels = [], []
    for b in loader:
        feats.append(adapter.features(b).float().cpu())
        if with_labels:
            labels.append(adapter.to_device(b)[1].cpu())
    X = torch.cat(feats).numpy()
    return (X, torch.cat(labels).numpy()) if with_labels else X


@torch.no_grad()
def collect_probs_labels(adapter, loader):
    probs, labels = [], []
    for b in loader:
        logits, y = adapter.logits_and_labels(b)
        probs.append(F.softmax(logits.float(), -1).cpu())
        labels.append(y.cpu())
    return torch.cat(probs), torch.cat(labels)


def _require_classifier(adapter, who: str) -> None:
    if adapter.family != "classifier":
        raise UnsupportedModelError(f"{who} needs a classifier adapter, got a {adapter.family!r} model.")


@torch.no_grad()
def last_layer_grad_factors(adapter, loader):
    """Factors of each sample's final-layer gradient ``(p − e_y) ⊗ [h, 1]``: returns
    ``R = p − e_y`` (n, C) and ``H = [h, 1]`` (n, d + 1; the 1 only when the head has a bias),
    in float64, from one forward pass."""
    _require_classifier(adapter, "last-layer gradients")
    has_bias = adapter.head is not None and adapter.head.bias is not None
    R, H = [], []
    for b in loader:
        h = adapter.features(b).float()
        logits, y = adapter.logits_and_labels(b)
        r = F.softmax(logits.float(), -1)
        r[torch.arange(len(y)), y] -= 1.0
        R.append(r.double().cpu())
        H.append((torch.cat([h, torch.ones(len(h), 1, device=h.device)], 1) if has_bias else h).double().cpu())
    return torch.cat(R), torch.cat(H)


def per_sample_grad_norms(adapter, loader, last_layer: bool = False) -> np.ndarray:
    """L2 norm of each sample's loss gradient w.r.t. the parameters.

    ``last_layer=False``: exact per-sample gradients of all trainable parameters with
    ``torch.func`` (``vmap`` over ``grad``), one batch at a time so memory is bounded by
    batch size × parameter count. ``last_layer=True``: the closed form for the final linear
    layer of a softmax classifier, ``‖p − e_y‖ · sqrt(‖h‖² + 1)`` (h: penultimate features),
    which costs one forward pass.
    """
    _require_classifier(adapter, "per-sample gradients")
    model = adapter.model
    out = []
    if last_layer:
        R, H = last_layer_grad_factors(adapter, loader)
        return (R.norm(dim=1) * H.norm(dim=1)).float().numpy()

    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_one(p, x, y):
        logits = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return F.cross_entropy(logits.float(), y.unsqueeze(0))

    g_fn = vmap(grad(loss_one), in_dims=(None, 0, 0))
    for b in loader:
        x, y = adapter.to_device(b)
        adapter.check_labels(y, adapter.num_classes or int(y.max()) + 1)
        grads = g_fn(params, x, y)
        sq = sum(g.flatten(1).float().pow(2).sum(1) for g in grads.values())
        out.append(sq.sqrt().cpu())
    return torch.cat(out).numpy()


def auto_last_layer(adapter, setting, max_params: int = 5_000_000) -> bool:
    if setting in (True, False):
        return bool(setting)
    n = sum(p.numel() for p in adapter.model.parameters() if p.requires_grad)
    return n > max_params
