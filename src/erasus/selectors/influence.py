"""Influence-based selectors: influence functions (Koh & Liang 2017) and TracIn-CP (Pruthi et al. 2020)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..core.base import BaseSelector
from ..core.config import BaseConfig
from ..core.exceptions import ConfigError
from ..core.registry import register
from ..utils.io import load_state_dict
from ._common import _require_classifier
from .lm_gradients import GRADIENT_FAMILIES, gauss_newton_damping, gauss_newton_influence, per_sample_gradients


class ParamView:
    """The loss as a function of a flat parameter vector, over all trainable parameters or
    over the final linear layer only (on frozen penultimate features)."""

    def __init__(self, adapter, last_layer: bool):
        _require_classifier(adapter, "influence")
        self.adapter, self.last_layer = adapter, last_layer
        model = adapter.model
        if last_layer:
            head = adapter.head
            if head is None:
                raise ConfigError("last_layer=True needs a model whose last layer is an nn.Linear.")
            self.named = [("weight", head.weight)] + ([("bias", head.bias)] if head.bias is not None else [])
        else:
            self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.shapes = [p.shape for _, p in self.named]
        self.sizes = [p.numel() for _, p in self.named]
        self.theta = torch.cat([p.detach().flatten() for _, p in self.named]).float()
        self.buffers = {k: v.detach() for k, v in model.named_buffers()}

    @property
    def dim(self) -> int:
        return int(self.theta.numel())

    def unflatten(self, flat: torch.Tensor) -> dict:
        parts = torch.split(flat, self.sizes)
        return {n: t.view(s) for (n, _), t, s in zip(self.named, parts, self.shapes)}

    def inputs(self, batch):
        x, y = self.adapter.to_device(batch)
        if self.last_layer:
            with torch.no_grad():
                x = self.adapter.features(batch).float()
        return x, y

    def logits(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        p = self.unflatten(flat)
        if self.last_layer:
            return F.linear(x, p["weight"], p.get("bias"))
        return self.adapter.functional_logits(p, self.buffers, x)

    def per_sample_grads(self, loader) -> torch.Tensor:
        """``(n, dim)`` matrix of per-sample loss gradients, via ``torch.func.vmap``."""
        from torch.func import grad, vmap

        def one(flat, x, y):
            return F.cross_entropy(self.logits(flat, x.unsqueeze(0)).float(), y.unsqueeze(0))

        g = vmap(grad(one), in_dims=(None, 0, 0))
        return torch.cat([g(self.theta, *self.inputs(b)) for b in loader])

    def hessian(self, loader, damping: float) -> torch.Tensor:
        """The explicit ``(dim, dim)`` matrix ``H + damping·I`` (H: Hessian of the mean loss
        over ``loader``), one ``torch.func.hessian`` per batch: a single pass over the data
        instead of one pass per basis vector."""
        from torch.func import hessian

        batches = [self.inputs(b) for b in loader]
        n = sum(len(y) for _, y in batches)
        if self.last_layer:
            H = self._last_layer_hessian(batches) / n
        else:
            H = torch.zeros(self.dim, self.dim, dtype=torch.float64)
            for x, y in batches:
                H += hessian(lambda t: F.cross_entropy(self.logits(t, x).float(), y, reduction="sum") / n)(
                    self.theta).double()
        return 0.5 * (H + H.T) + damping * torch.eye(self.dim, dtype=torch.float64)

    def _last_layer_hessian(self, batches) -> torch.Tensor:
        """Closed form for softmax cross-entropy on a linear layer: the per-sample Hessian
        is ``(diag(p) − p pᵀ) ⊗ h̃ h̃ᵀ`` with ``h̃ = [h, 1]`` (bias), summed by one matrix
        product per batch; rows follow the ``[weight.flatten(), bias]`` layout of ``theta``."""
        has_bias = len(self.named) == 2
        C = self.shapes[0][0]
        d = self.shapes[0][1]
        da = d + int(has_bias)
        Haug = torch.zeros(C * C * da, da, dtype=torch.float64)
        for x, _ in batches:
            h = x.double()
            if has_bias:
                h = torch.cat([h, torch.ones(len(h), 1, dtype=h.dtype)], 1)
            p = torch.softmax(self.logits(self.theta, x).double(), 1)
            A = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]          # (n, C, C)
            X = (A.reshape(len(h), C * C, 1) * h[:, None, :]).reshape(len(h), -1)  # (n, C·C·da)
            Haug += X.T @ h                                                  # [(c, k, a), b]
        Haug = Haug.view(C, C, da, da).permute(0, 2, 1, 3).reshape(C * da, C * da)  # [(c, a), (k, b)]
        c_idx, a_idx = torch.meshgrid(torch.arange(C), torch.arange(da), indexing="ij")
        pos = torch.where(a_idx < d, c_idx * d + a_idx, C * d + c_idx).flatten()  # augmented -> theta index
        H = torch.empty_like(Haug)
        H[pos[:, None], pos[None, :]] = Haug
        return H

    def hvp_fn(self, loader, damping: float) -> Callable[[torch.Tensor], torch.Tensor]:
        """``v -> (H + damping·I) v`` with H the Hessian of the mean loss over ``loader``."""
        batches = [self.inputs(b) for b in loader]
        n = sum(len(y) for _, y in batches)

        def hvp(v: torch.Tensor) -> torch.Tensor:
            out = torch.zeros_like(v)
            for x, y in batches:
                theta = self.theta.clone().requires_grad_(True)
                loss = F.cross_entropy(self.logits(theta, x).float(), y, reduction="sum") / n
                (g,) = torch.autograd.grad(loss, theta, create_graph=True)
                (hv,) = torch.autograd.grad(g @ v, theta)
                out += hv.detach()
            return out + damping * v

        return hvp


def choose_last_layer(adapter, loader, setting, max_bytes: float = 512e6) -> bool:
    """``"auto"``: all parameters while the ``(n, dim)`` per-sample gradient matrix (float64)
    fits in ``max_bytes``, else the final linear layer."""
    if setting in (True, False):
        return bool(setting)
    n = len(loader.dataset)
    dim = sum(p.numel() for p in adapter.model.parameters() if p.requires_grad)
    return n * dim * 8 > max_bytes


def conjugate_gradient(hvp, b: torch.Tensor, iters: int, tol: float = 1e-10) -> torch.Tensor:
    """Solve ``A x = b`` for symmetric positive-definite ``A`` given as ``hvp``."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = r @ r
    for _ in range(iters):
        ap = hvp(p)
        alpha = rs / (p @ ap).clamp_min(1e-30)
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = r @ r
        if rs_new < tol * (b @ b):
            break
        p = r + (rs_new / rs) * p
        rs = rs_new
    return x


def lissa(hvp, b: torch.Tensor, iters: int, scale: float) -> torch.Tensor:
    """LiSSA (Agarwal et al. 2017, as used by Koh & Liang): ``h ← b + h − (H h)/scale``,
    converging to ``scale · H⁻¹ b`` when the eigenvalues of ``H`` are below ``scale``; returns
    ``h / scale``."""
    h = b.clone()
    for _ in range(iters):
        h = b + h - hvp(h) / scale
    return h / scale


@dataclass
class InfluenceConfig(BaseConfig):
    """``solver``: ``"auto"`` (explicit inverse Hessian up to 2,000 parameters, else conjugate
    gradients), ``"exact"``, ``"cg"`` or ``"lissa"``; ``damping`` λ added to the Hessian,
    0.01; ``scale`` for LiSSA (must exceed H's largest eigenvalue), 25; ``iters`` for CG /
    LiSSA, 100; ``last_layer``: ``"auto"`` (all parameters while the forget set's
    per-sample gradients fit in 512 MB as float64, else the final linear layer on frozen
    features), ``True`` or ``False``; ``target``: ``"forget_set"``
    (each sample's influence on the total forget-set loss, one inverse-Hessian solve) or
    ``"self"`` (self-influence, one solve per sample). Language models: ``params`` (which
    parameters' gradients, :func:`~erasus.selectors.lm_gradients.gradient_parameters`) and
    ``project_dim`` (their random projection), with the Gauss-Newton Hessian of TRAK / LESS."""

    solver: str = "auto"
    damping: float = 0.01
    scale: float = 25.0
    iters: int = 100
    last_layer: Union[bool, str] = "auto"
    target: str = "forget_set"
    params: Union[str, list] = "auto"
    project_dim: int = 2048

    def validate(self) -> None:
        self._check_positive("project_dim")
        self._check_choice("solver", ("auto", "exact", "cg", "lissa"))
        self._check_choice("last_layer", ("auto", True, False))
        self._check_choice("target", ("forget_set", "self"))
        self._check_positive("scale", "iters")
        self._check_positive("damping", allow_zero=True)


@register("selector", "influence", aliases=("influence_function",))
class InfluenceSelector(BaseSelector):
    """Influence functions (Koh & Liang, "Understanding Black-box Predictions via Influence
    Functions", ICML 2017): removing sample ``z`` changes the parameters by about
    ``H⁻¹∇ℓ(z)/n``, so its influence on a target loss ``L_t`` is ``∇L_tᵀ H⁻¹ ∇ℓ(z)``.

    The Hessian is that of the mean loss on the data being scored (the forget set), plus
    ``damping``·I (deviation: Koh & Liang use the full training set's Hessian; the
    selector sees only the forget set). ``target="forget_set"`` scores each sample by its
    influence on the total forget-set loss (how much of the forget set's fit it carries);
    ``"self"`` by self-influence ``∇ℓ(z)ᵀ H⁻¹ ∇ℓ(z)`` (how memorised it is). Inverse-Hessian
    products are exact (explicit matrix), conjugate gradients, or LiSSA. Always returns
    exactly ``k`` indices.

    Language, CLIP and diffusion models (``GRADIENT_FAMILIES``): the Hessian is replaced by the
    Gauss-Newton (empirical Fisher) matrix of the forget set's per-sample gradients, restricted
    to ``params`` and randomly projected to ``project_dim`` dimensions, as TRAK (Park et al.,
    ICML 2023) and LESS (Xia et al., ICML 2024) do
    (:func:`~erasus.selectors.lm_gradients.gauss_newton_influence`, exact through the Gram
    matrix for ``solver`` ``"auto"``/``"exact"``; ``"cg"`` and ``"lissa"`` iterate with that
    matrix's products, LiSSA's ``scale`` checked against its largest eigenvalue).
    ``approximation`` is the specification's name for ``solver``.
    """

    config_class = InfluenceConfig
    option_aliases = {"approximation": "solver"}  # the specification's InfluenceSelector(approximation="lissa")
    supports = ("classifier",) + GRADIENT_FAMILIES

    def score(self, adapter, loader):
        c = self.config
        if adapter.family in GRADIENT_FAMILIES:
            # language models: projected per-sample gradients and the Gauss-Newton Hessian
            # in that space (TRAK, Park et al. 2023; LESS, Xia et al. 2024)
            G = per_sample_gradients(adapter, loader, c.params, dim=c.project_dim)
            if c.solver in ("auto", "exact"):
                return gauss_newton_influence(G, c.damping, c.target).numpy()
            grads = G.double()
            mu = gauss_newton_damping(grads, c.damping)
            hvp = lambda v: grads.T @ (grads @ v) / len(grads) + mu * v  # noqa: E731
            if c.solver == "lissa":
                top = float(torch.linalg.eigvalsh(grads @ grads.T / len(grads))[-1]) + mu
                if c.scale <= top:
                    raise ConfigError(f"influence: LiSSA converges only when scale exceeds the Hessian's largest "
                                      f"eigenvalue, here (the Gauss-Newton matrix) {top:.4g}; got scale={c.scale}. Pass "
                                      f"scale={1.5 * top:.3g} or more, or solver='cg'.")
            solver = c.solver
        else:
            view = ParamView(adapter, choose_last_layer(adapter, loader, c.last_layer))
            grads = view.per_sample_grads(loader).double()
            solver = c.solver if c.solver != "auto" else ("exact" if view.dim <= 2000 else "cg")
            param_hvp = view.hvp_fn(loader, c.damping) if solver != "exact" else None
            hvp = lambda v: param_hvp(v.float()).double()  # noqa: E731
        if solver == "exact":
            H = view.hessian(loader, c.damping)
            solve = lambda b: torch.linalg.solve(H, b)
        elif solver == "cg":
            solve = lambda b: conjugate_gradient(hvp, b, c.iters)
        else:
            solve = lambda b: lissa(hvp, b, c.iters, c.scale)
        if c.target == "forget_set":
            s = solve(grads.sum(0))
            return (grads @ s).numpy()
        return np.array([float(g @ solve(g)) for g in grads])


@dataclass
class TracInConfig(BaseConfig):
    """``checkpoints``: safetensors files saved during training (e.g. by
    :class:`~erasus.selectors.influence.CheckpointRecorder`); empty means the given model
    only; ``lrs``: the learning rate at each checkpoint (default 1 each); ``target``:
    ``"forget_set"`` (gradient dot product with the total forget-set gradient, the
    TracIn influence on the forget set's loss) or ``"self"`` (self-influence);
    ``last_layer`` as for ``influence``."""

    checkpoints: List[str] = field(default_factory=list)
    lrs: List[float] = field(default_factory=list)
    target: str = "forget_set"
    last_layer: Union[bool, str] = "auto"
    params: Union[str, list] = "auto"
    project_dim: int = 2048

    def validate(self) -> None:
        self._check_choice("target", ("forget_set", "self"))
        self._check_choice("last_layer", ("auto", True, False))
        self._check_positive("project_dim")
        if self.lrs and len(self.lrs) != len(self.checkpoints):
            raise ConfigError(f"TracInConfig: expected one learning rate per checkpoint ({len(self.checkpoints)}), "
                              f"got {len(self.lrs)}.")


@register("selector", "tracin", aliases=("tracin_cp",))
class TracInSelector(BaseSelector):
    """TracIn-CP (Pruthi, Liu, Kale & Sundararajan, "Estimating Training Data Influence by
    Tracing Gradient Descent", NeurIPS 2020): the influence of ``z`` on ``z'`` is
    ``Σ_t η_t ∇ℓ(z; θ_t) · ∇ℓ(z'; θ_t)`` over checkpoints ``θ_t`` saved during training
    with learning rate ``η_t``. Scores each forget sample by its TracIn influence on the
    whole forget set (``target="forget_set"``) or on itself (``"self"``). Checkpoints come
    from :class:`CheckpointRecorder`; without any, the given model is the one checkpoint.
    Language models: gradients of ``params`` projected to ``project_dim`` dimensions (as
    TracIn's own large-model variant and LESS do; :mod:`erasus.selectors.lm_gradients`).
    """

    config_class = TracInConfig
    supports = ("classifier",) + GRADIENT_FAMILIES

    def score(self, adapter, loader):
        c = self.config
        lm = adapter.family in GRADIENT_FAMILIES
        last = None if lm else choose_last_layer(adapter, loader, c.last_layer)
        states = [load_state_dict(p) for p in c.checkpoints] or [None]
        lrs = list(c.lrs) or [1.0] * len(states)
        original = {k: v.detach().clone() for k, v in adapter.model.state_dict().items()}
        total = None
        try:
            for state, lr in zip(states, lrs):
                if state is not None:
                    adapter.model.load_state_dict(state)
                grads = (per_sample_gradients(adapter, loader, c.params, dim=c.project_dim) if lm
                         else ParamView(adapter, last).per_sample_grads(loader)).double()
                s = (grads @ grads.sum(0)) if c.target == "forget_set" else (grads * grads).sum(1)
                total = lr * s if total is None else total + lr * s
        finally:
            adapter.model.load_state_dict(original)
        return total.numpy()


class CheckpointRecorder:
    """Training callback for :class:`TracInSelector`: ``recorder.save(model, lr)`` writes a
    checkpoint (safetensors, never overwriting) and remembers its learning rate;
    ``recorder.config()`` gives the matching ``TracInConfig`` fields."""

    def __init__(self, save_dir):
        from pathlib import Path

        self.dir = Path(save_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.paths: List[str] = []
        self.lrs: List[float] = []

    def save(self, model: torch.nn.Module, lr: float) -> str:
        from ..utils.io import save_state_dict

        path = self.dir / f"checkpoint_{len(self.paths):04d}.safetensors"
        save_state_dict(model.state_dict(), path)
        self.paths.append(str(path))
        self.lrs.append(float(lr))
        return str(path)

    def config(self) -> dict:
        return {"checkpoints": list(self.paths), "lrs": list(self.lrs)}
