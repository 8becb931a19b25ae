"""Shared computations for selectors: features, per-sample gradient norms."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..core.exceptions import ConfigError, UnsupportedModelError


@torch.no_grad()
def collect_features(adapter, loader, with_labels: bool = False):
    """Penultimate features of every sample in ``loader`` order (and their labels)."""
    feats, labels = [], []
    for b in loader:
        feats.append(adapter.features(b).float().cpu())
        if with_labels:
            labels.append(adapter.labels(b).cpu())
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


def per_sample_grad_norms(adapter, loader, last_layer: bool = False, method: str = "auto") -> np.ndarray:
    """L2 norm of each sample's loss gradient w.r.t. the parameters.

    ``last_layer=False``: exact per-sample gradient norms of all trainable parameters.
    ``method="hooks"`` computes them from one forward pass and one activation-only backward
    pass per batch: for a linear layer ``‖∇W_i‖² = ‖a_i‖²‖g_i‖²`` and for a convolution the
    per-sample weight gradient ``G_i · unfold(A_i)ᵀ`` is formed directly (the per-example
    gradient tricks of Goodfellow, "Efficient Per-Example Gradient Computations", 2015, and
    Rochette et al., 2019; ``a``: the layer's input, ``g``: the loss gradient at its output),
    so no per-sample copy of the whole parameter vector is ever built. It applies when every
    trainable parameter belongs to an ``nn.Linear`` or ungrouped ``nn.Conv2d`` used once per
    forward pass. ``method="vmap"`` uses ``torch.func`` (``vmap`` over ``grad``) for any
    architecture, one batch at a time. ``"auto"``: hooks where they apply, else vmap (both
    exact). ``last_layer=True``: the closed form for the final linear layer of a softmax
    classifier, ``‖p − e_y‖ · sqrt(‖h‖² + 1)`` (h: penultimate features), one forward pass.
    """
    _require_classifier(adapter, "per-sample gradients")
    if last_layer:
        R, H = last_layer_grad_factors(adapter, loader)
        return (R.norm(dim=1) * H.norm(dim=1)).float().numpy()
    if method not in ("auto", "hooks", "vmap"):
        raise ConfigError(f"Expected method 'auto', 'hooks' or 'vmap', got {method!r}.")
    if method != "vmap":
        out = _hook_grad_norms(adapter, loader)
        if out is not None:
            return out
        if method == "hooks":
            raise UnsupportedModelError("Per-sample gradient norms by hooks need every trainable parameter in an "
                                        "nn.Linear or ungrouped nn.Conv2d used once per forward; use method='vmap'.")
    return _vmap_grad_norms(adapter, loader)


def _vmap_grad_norms(adapter, loader) -> np.ndarray:
    from torch.func import grad, vmap

    model = adapter.model
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_one(p, x, y):
        logits = adapter.functional_logits(p, buffers, x.unsqueeze(0))
        return F.cross_entropy(logits.float(), y.unsqueeze(0))

    g_fn = vmap(grad(loss_one), in_dims=(None, 0, 0))
    out = []
    for b in loader:
        x, y = adapter.to_device(b)
        adapter.check_labels(y, adapter.num_classes or int(y.max()) + 1)
        grads = g_fn(params, x, y)
        sq = sum(g.flatten(1).float().pow(2).sum(1) for g in grads.values())
        out.append(sq.sqrt().cpu())
    return torch.cat(out).numpy()


def _hook_grad_norms(adapter, loader):
    """Exact per-sample gradient norms from layer inputs and output gradients; ``None`` when
    the architecture is outside what the closed forms cover."""
    model = adapter.model
    owners = [m for m in model.modules() if any(p.requires_grad for p in m.parameters(recurse=False))]
    ok = lambda m: isinstance(m, torch.nn.Linear) or (  # noqa: E731
        isinstance(m, torch.nn.Conv2d) and m.groups == 1 and m.padding_mode == "zeros"
        and not isinstance(m.padding, str))
    if not owners or not all(ok(m) for m in owners):
        return None
    seen = {}

    def fwd(m, inp, out):
        if m in seen:
            seen[m] = None  # used twice: the closed form does not apply
        else:
            seen[m] = (inp[0].detach(), out)

    was = model.training
    model.eval()
    hooks = [m.register_forward_hook(fwd) for m in owners]
    out = []
    try:
        for b in loader:
            seen.clear()
            logits, y = adapter.logits_and_labels(b)
            adapter.check_labels(y, logits.shape[1])
            if any(v is None for v in seen.values()) or len(seen) != len(owners):
                return None
            loss = F.cross_entropy(logits.float(), y, reduction="sum")  # per-sample gradients are not mixed
            mods = list(seen)
            gouts = torch.autograd.grad(loss, [seen[m][1] for m in mods])
            sq = torch.zeros(len(y), dtype=torch.float64, device=logits.device)
            for m, g in zip(mods, gouts):
                a = seen[m][0]
                g = g.detach()
                if isinstance(m, torch.nn.Linear):
                    if a.dim() == 2:
                        w = a.pow(2).sum(1).double() * g.pow(2).sum(1).double()
                    else:  # tokens: sum over positions before squaring
                        w = torch.einsum("b...i,b...o->bio", a, g).pow(2).sum((1, 2)).double()
                    gb = g.reshape(len(y), -1, g.shape[-1]).sum(1)
                else:
                    A = F.unfold(a, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)
                    G = g.flatten(2)
                    w = torch.einsum("bol,bkl->bok", G, A).pow(2).sum((1, 2)).double()
                    gb = G.sum(2)
                if m.weight.requires_grad:
                    sq += w
                if m.bias is not None and m.bias.requires_grad:
                    sq += gb.double().pow(2).sum(1)
            out.append(sq.sqrt().float().cpu())
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


def auto_last_layer(adapter, setting, max_params: int = 5_000_000) -> bool:
    if setting in (True, False):
        return bool(setting)
    n = sum(p.numel() for p in adapter.model.parameters() if p.requires_grad)
    return n > max_params
