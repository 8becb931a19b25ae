"""Per-sample gradients of language models, CLIP and text-to-image diffusion models, at a
scale that fits: restricted to chosen parameters and compressed by a random projection.

Exact per-sample gradients of every parameter of a language model are out of reach
(one copy of the model per sample). As TRAK (Park, Georgiev, Ilyas, Leclerc & Madry, "TRAK:
Attributing Model Behavior at Scale", ICML 2023) and LESS (Xia, Malladi, Gururangan, Arora &
Chen, "LESS: Selecting Influential Data for Targeted Instruction Tuning", ICML 2024) do,
gradients are taken with respect to a subset of the parameters (LoRA adapters where the
model has them, as LESS does; else the last transformer blocks) and projected to ``dim``
dimensions by a random map that preserves inner products in expectation.

Deviation: TRAK and LESS project with a dense Gaussian / Rademacher matrix (a CUDA kernel
that generates it on the fly); here the projection is a CountSketch (Charikar, Chen &
Farach-Colton, 2002; the feature hashing of Weinberger et al., ICML 2009): parameter ``j``
goes to coordinate ``h(j)`` with sign ``s(j)``, an unbiased inner-product estimate that
costs one pass over the gradient and no matrix, on a CPU as on a GPU. Each sample's
gradient is computed exactly (one backward pass per sample; memory: one gradient of the
chosen parameters at a time).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import List, Optional, Sequence, Tuple, Union

import torch

from ..core.exceptions import ConfigError, DataError
from ..models.causal_lm import TOKEN_FAMILIES

#: "auto" takes every trainable parameter up to this many, else the last blocks
AUTO_MAX_PARAMS = 2_000_000


def _blocks(model) -> Optional[torch.nn.ModuleList]:
    """The list of transformer blocks of a Hugging Face language model, if found."""
    best = None
    for _, m in model.named_modules():
        if isinstance(m, torch.nn.ModuleList) and len(m) > 0 and (best is None or len(m) >= len(best)):
            if all(type(x) is type(m[0]) for x in m):
                best = m
    return best


def gradient_parameters(model, which: Union[str, Sequence[str]] = "auto") -> List[Tuple[str, torch.nn.Parameter]]:
    """The ``(name, parameter)`` pairs per-sample gradients are taken for.

    ``"lora"``: the LoRA adapter weights of a PEFT model (LESS's choice); ``"all"``: every
    trainable parameter; ``"last_block"``: the last transformer block; ``"auto"``: LoRA
    weights where the model has them, else every trainable parameter up to
    :data:`AUTO_MAX_PARAMS`, else the last block. A list of strings: the parameters whose
    name contains one of them."""
    named = [(n, p) for n, p in model.named_parameters()]
    lora = [(n, p) for n, p in named if "lora_" in n]
    trainable = [(n, p) for n, p in named if p.requires_grad]
    if which == "lora" or (which == "auto" and lora):
        if not lora:
            raise ConfigError("params='lora' needs a model with LoRA adapters (a peft.PeftModel).")
        return lora
    if which == "all" or (which == "auto" and sum(p.numel() for _, p in trainable) <= AUTO_MAX_PARAMS):
        return trainable or named
    if which in ("last_block", "auto"):
        blocks = _blocks(model)
        if blocks is None:
            raise ConfigError("No list of blocks found in this model: pass params='all' or parameter name parts.")
        ids = {id(p) for p in blocks[-1].parameters()}
        return [(n, p) for n, p in named if id(p) in ids]
    if isinstance(which, str):
        raise ConfigError(f"Expected params 'auto', 'lora', 'all', 'last_block' or a list of name parts, got {which!r}.")
    chosen = [(n, p) for n, p in named if any(s in n for s in which)]
    if not chosen:
        raise ConfigError(f"No parameter name contains any of {list(which)}.")
    return chosen


class CountSketch:
    """A random linear map ``R^d → R^dim``: coordinate ``j`` is added, with sign ``s(j)``, to
    output ``h(j)`` (``h``, ``s`` uniform, from ``seed``). ``E[⟨Px, Py⟩] = ⟨x, y⟩``."""

    def __init__(self, d: int, dim: int, seed: int = 0, device=None):
        g = torch.Generator().manual_seed(seed)
        self.d, self.dim = d, dim
        self.bucket = torch.randint(0, dim, (d,), generator=g).to(device)
        self.sign = (torch.randint(0, 2, (d,), generator=g) * 2 - 1).float().to(device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(self.dim, dtype=torch.float32, device=x.device)
        return out.index_add_(0, self.bucket.to(x.device), x.float() * self.sign.to(x.device))


def rows_in(batch) -> Optional[int]:
    """The number of samples in a token-family dict batch: the rows of ``input_ids`` (text), or
    of ``labels`` (a speech-to-text batch: ``input_features`` and the transcript); ``None`` when
    the batch has neither."""
    key = next((k for k in ("input_ids", "labels") if isinstance(batch, Mapping) and k in batch), None)
    return None if key is None else int(batch[key].shape[0])


def batch_rows(batch: dict, i: int) -> dict:
    """Sample ``i`` of a dict batch as a batch of one (sequence fields cut to its length)."""
    n = rows_in(batch)
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == n:
            out[k] = v[i:i + 1]
        elif isinstance(v, list) and len(v) == n:
            out[k] = v[i:i + 1]
        else:
            out[k] = v
    return out


#: every family whose per-sample gradients come from :func:`per_sample_gradients`
GRADIENT_FAMILIES = TOKEN_FAMILIES + ("clip", "diffusion")
#: ``params="auto"`` on a model above :data:`AUTO_MAX_PARAMS`: the parameters that carry a
#: concept in these families (CLIP: the two projections into the shared space, the layers the
#: null-space editing of CLIP memories acts on; diffusion: the UNet's cross-attention, where
#: ESD-x and UCE erase a concept)
AUTO_PARTS = {"clip": ["visual_projection", "text_projection"], "diffusion": ["attn2"]}
#: noise / timestep draws a diffusion sample's loss is averaged over for its gradient
DIFFUSION_DRAWS = 8


def _sample_losses(adapter, batch, loss: str, seed: int, start: int):
    """Each sample's scalar loss in ``batch`` (with its graph), in order. Language models: the
    sample alone (a batch of one). CLIP: each pair's symmetric contrastive loss against the
    other pairs of its batch (its negatives; the loader is in dataset order, so a sample's
    negatives do not depend on the caller's shuffling), or the zero-shot cross-entropy of a
    labelled image; one forward per batch, one backward per sample. Diffusion: the DDPM loss
    over :data:`DIFFUSION_DRAWS` noise and timestep draws, stratified over the schedule
    (:meth:`~erasus.models.diffusion.DiffusionAdapter.stratified_loss`), seeded by ``seed`` and
    the sample's index (the same draws for a sample whatever its batch)."""
    fam = adapter.family
    if fam in TOKEN_FAMILIES:
        n = rows_in(batch)
        if n is None:
            raise DataError("Per-sample gradients of a language or speech-to-text model need dict batches with "
                            "input_ids (text) or labels (a transcript beside input_features).")
        fn = adapter.per_sample_loss if loss == "mean" else adapter.sequence_nll
        for i in range(n):
            yield fn(batch_rows(batch, i))[0]
    elif fam == "clip":
        values = adapter.per_sample_loss(batch)
        for i in range(len(values)):
            yield values[i]
    elif fam == "diffusion":
        images, prompts = adapter.split(batch)
        if images is None:
            raise DataError("Per-sample gradients of a diffusion model need (images, prompts) batches.")
        for i in range(len(prompts)):
            g = torch.Generator().manual_seed(seed * 1_000_003 + start + i)
            yield adapter.stratified_loss(images[i], prompts[i], DIFFUSION_DRAWS, g)
    else:
        raise ConfigError(f"Projected per-sample gradients are computed for the families {GRADIENT_FAMILIES}, got a "
                          f"{fam!r} model (classifiers have exact ones: erasus.selectors._common).")


def per_sample_gradients(adapter, loader, params: Union[str, Sequence[str]] = "auto", dim: Optional[int] = 2048,
                         seed: int = 0, loss: str = "mean", norms: bool = False) -> torch.Tensor:
    """``(n, dim)`` float32: each sample's gradient of its loss (``"mean"``: the adapter's
    per-sample loss, the mean answer-token NLL of a language model; ``"sum"``: the sequence
    NLL; CLIP and diffusion models: see :func:`_sample_losses`) w.r.t.
    :func:`gradient_parameters` ``(params)`` (``"auto"`` on a large CLIP or diffusion model:
    :data:`AUTO_PARTS`), projected by a :class:`CountSketch` of ``dim`` (``None``: not
    projected, ``(n, d)``), in ``loader`` order; with ``norms``, the ``(n,)`` exact L2 norms
    of the unprojected gradients instead. Exact per sample: one backward pass each; memory:
    one gradient of the chosen parameters at a time (plus, for CLIP, the batch's graph). The
    model's trainable flags are left as they were."""
    if params == "auto" and adapter.family in AUTO_PARTS and not any("lora_" in n for n, _ in
                                                                     adapter.model.named_parameters()):
        if sum(p.numel() for p in adapter.model.parameters() if p.requires_grad) > AUTO_MAX_PARAMS:
            params = AUTO_PARTS[adapter.family]
    chosen = [p for _, p in gradient_parameters(adapter.model, params)]
    d = sum(p.numel() for p in chosen)
    proj = CountSketch(d, dim, seed, adapter.device) if dim and not norms else None
    flags = {p: p.requires_grad for p in adapter.model.parameters()}
    if loss == "sum" and not hasattr(adapter, "sequence_nll"):
        raise ConfigError(f"loss='sum' needs a language model adapter, got a {adapter.family!r} one.")
    rows = []
    was_training = adapter.model.training
    adapter.model.eval()
    try:
        for p in adapter.model.parameters():
            p.requires_grad_(False)
        for p in chosen:
            p.requires_grad_(True)
        for batch in loader:
            for value in _sample_losses(adapter, batch, loss, seed, len(rows)):
                grads = torch.autograd.grad(value, chosen, allow_unused=True, retain_graph=adapter.family == "clip")
                flat = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                  for g, p in zip(grads, chosen)])
                if norms:
                    rows.append(flat.float().norm().reshape(()).cpu())
                else:
                    rows.append((proj(flat) if proj is not None else flat.float()).cpu())
    finally:
        for p, f in flags.items():
            p.requires_grad_(f)
        adapter.model.train(was_training)
    return torch.stack(rows)


def gauss_newton_damping(G: torch.Tensor, damping: float) -> float:
    """``μ`` of :func:`gauss_newton_influence`: ``damping`` × the mean non-zero eigenvalue of
    ``GᵀG / n``."""
    n, k = G.shape
    return damping * max(float((G.double() ** 2).sum()) / n / min(n, k), 1e-12)


def gauss_newton_influence(G: torch.Tensor, damping: float = 0.01, target: str = "forget_set") -> torch.Tensor:
    """Influence scores from (projected) per-sample gradients ``G`` (n, k) with the
    Gauss-Newton / empirical-Fisher approximation of the Hessian, ``F = GᵀG / n + μ·I``
    (TRAK's and LESS's kernel), ``μ = damping × the mean non-zero eigenvalue of GᵀG / n``
    (``tr / min(n, k)``, the same for a gradient and its projection):
    ``target="forget_set"`` scores ``g_iᵀ F⁻¹ Σ_j g_j`` (each sample's influence on the whole
    forget set's loss), ``"self"`` ``g_iᵀ F⁻¹ g_i``. Computed through the ``n × n`` Gram
    matrix ``K = GGᵀ`` (``G F⁻¹ Gᵀ = K (K/n + μI)⁻¹``), exact whatever ``k``."""
    G = G.double()
    n = len(G)
    K = G @ G.T
    mu = gauss_newton_damping(G, damping)
    M = torch.linalg.solve(K / n + mu * torch.eye(n, dtype=G.dtype), K)  # (K/n + μI)⁻¹ K, = K (K/n + μI)⁻¹ transposed
    if target == "forget_set":
        return M.T @ torch.ones(n, dtype=G.dtype)
    return torch.diagonal(M)


def _answer_tokens(adapter, loader):
    """Per batch: next-token probabilities at the scored (answer) tokens only ``(n, V)`` under
    teacher forcing (:meth:`~erasus.models.causal_lm.TokenLMAdapter.scored_rows`), their
    target tokens, and the batch's aligned mask of scored tokens."""
    for batch in loader:
        rows, project, targets, mask = adapter.scored_rows(adapter.to_device(batch))
        yield torch.softmax(project(rows).float(), -1), targets, mask


def _answer_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each sample's mean of ``values`` (one per scored token, in row-major order)."""
    full = torch.zeros(mask.shape, dtype=values.dtype, device=values.device)
    full[mask] = values
    return (full.sum(1) / mask.sum(1).clamp_min(1)).cpu()


@torch.no_grad()
def token_el2n(adapter, loader) -> torch.Tensor:
    """EL2N of a language model's sample: ``‖softmax(f_t) − e_{y_t}‖₂`` at each scored token
    ``t`` (teacher forcing), averaged over the sample's scored tokens."""
    out = []
    for p, labels, mask in _answer_tokens(adapter, loader):
        p_y = p.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        out.append(_answer_mean(((p * p).sum(-1) - 2 * p_y + 1).clamp_min(0).sqrt(), mask))
    return torch.cat(out)


@torch.no_grad()
def token_uncertainty(adapter, loader, method: str = "entropy") -> torch.Tensor:
    """A language model's uncertainty about a sample's answer: the next-token distribution's
    entropy, least confidence (1 − max probability) or negative margin (top-1 − top-2) at each
    scored token, averaged over the sample's scored tokens."""
    out = []
    for p, _, mask in _answer_tokens(adapter, loader):
        if method == "entropy":
            v = -(p * p.clamp_min(1e-12).log()).sum(-1)
        else:
            top2 = p.topk(2, dim=-1).values
            v = 1.0 - top2[:, 0] if method == "least_confidence" else -(top2[:, 0] - top2[:, 1])
        out.append(_answer_mean(v, mask))
    return torch.cat(out)
