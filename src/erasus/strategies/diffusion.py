"""Concept erasure in text-to-image diffusion models (``erasus.models.diffusion``).

The forget data are prompts naming the concept (``["a photo of a sneaker"]``) or
``(images, prompts)`` batches; the retain data, where a method uses them, prompts of concepts
to preserve. ``DiffusionUnlearner.erase(concept, anchor=..., preserve=...)`` builds both.

* ``esd``: Erasing Concepts from Diffusion Models (Gandikota et al., ICCV 2023).
* ``uce``: Unified Concept Editing (Gandikota et al., WACV 2024), a closed-form edit.
* ``sld``: Safe Latent Diffusion (Schramowski et al., CVPR 2023), guidance at inference time.
* ``concept_ablation``: Ablating Concepts in Text-to-Image Diffusion Models (Kumari et al.,
  ICCV 2023), the model-based variant.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import torch
import torch.nn.functional as F

from ..core.base import BaseConfig
from ..core.exceptions import ConfigError, DataError
from ..core.registry import register
from ..core.strategy import LossStrategy, LossStrategyConfig, OneShotStrategy
from ..models.diffusion import split_batch


def _prompts(loader) -> List[str]:
    """Every prompt of a loader of diffusion batches (:func:`~erasus.models.diffusion.split_batch`)."""
    return [] if loader is None else [p for batch in loader for p in split_batch(batch)[1]]


def _cross_attention(unet):
    """The cross-attention blocks (``attn2``) of a diffusers UNet; an error when there are none."""
    blocks = [(n, m) for n, m in unet.named_modules() if n.endswith("attn2") and hasattr(m, "to_k")]
    if not blocks:
        raise ConfigError(f"{type(unet).__name__} has no cross-attention layers (attn2): this method edits "
                          "how the text conditions the image and needs a text-conditioned UNet.")
    return blocks


class _ConceptFineTune(LossStrategy):
    """Fine-tuning methods for diffusion models: a fixed number of ``iterations`` (no validation
    set says when a concept is gone), against the frozen original (``self.reference``)."""

    supports = ("diffusion",)
    uses_retain = False

    def stopping_policy(self, forget_loader, given):
        n = self.config.iterations
        return {"max_steps": n, "min_steps": n, "stopping": "none"}

    def setup(self, forget_loader, retain_loader):
        self.reference = self.frozen_reference()

    def release(self) -> None:
        self.reference = None
        super().release()


@dataclass
class ESDConfig(LossStrategyConfig):
    """The paper's settings (their code, Stable Diffusion v1.4): ``lr`` 1e-5 (Adam),
    ``iterations`` 1000 (one prompt per step), ``negative_guidance`` η = 1, ``start_guidance``
    3 (the guidance used to sample the partly denoised ``x_t``), ``ddim_steps`` 50, and
    ``train_method`` ``"xattn"`` (ESD-x: cross-attention only, for styles) or ``"noxattn"``
    (ESD-u: everything but cross-attention and the time embedding, for objects and unsafe
    content); ``"full"``: the whole UNet."""

    lr: float = 1e-5
    iterations: int = 1000
    negative_guidance: float = 1.0
    start_guidance: float = 3.0
    ddim_steps: int = 50
    train_method: str = "xattn"

    def validate(self) -> None:
        super().validate()
        self._check_positive("iterations", "ddim_steps")
        self._check_positive("negative_guidance", "start_guidance", allow_zero=True)
        self._check_choice("train_method", ("xattn", "noxattn", "full"))


@register("strategy", "esd", aliases=("erasing_concepts", "esd_x", "esd_u"))
class ESD(_ConceptFineTune):
    """ESD: fine-tune the model so that, conditioned on the concept ``c``, it predicts the
    noise of the frozen original guided *away* from ``c``:

        ε_θ(x_t, c, t)  →  ε_θ*(x_t, t) − η [ε_θ*(x_t, c, t) − ε_θ*(x_t, t)]

    Gandikota, Materzyńska, Fiotto-Kaufman & Bau, "Erasing Concepts from Diffusion Models",
    ICCV 2023. As in the authors' code, ``x_t`` is sampled with the model being trained,
    conditioned on the concept (DDIM with ``start_guidance``), stopped at a step drawn
    uniformly from ``ddim_steps``; the loss is the squared error to the target. Only
    ``train_method``'s parameters move; the text encoder stays frozen. Images in the forget
    data are not used (the model's own samples are).
    """

    config_class = ESDConfig
    limits = ("the paper's settings (lr 1e-5, 1000 steps, η 1) are for Stable Diffusion; on a small model trained "
              "here a larger rate and η are needed (tests use lr 1e-3, 80 steps, η 3); no benchmark of its defaults "
              "has run yet")

    def trainable_parameters(self):
        unet = self.model.unet
        method = self.config.train_method
        keep = []
        for name, p in unet.named_parameters():
            x = "attn2" in name
            if method == "xattn" and not x or method == "noxattn" and (x or "time_emb" in name):
                continue
            keep.append(p)
        _cross_attention(unet)  # a clear error for a UNet without cross-attention
        return keep

    def forget_step(self, batch, batch_idx):
        _, prompts = self.adapter.split(batch)
        c, m, ref = self.config, self.model, self.reference.model
        g = self.generator
        stop = int(torch.randint(0, c.ddim_steps, (1,), generator=g))
        with torch.no_grad():
            x_t, t = m.generate(prompts, guidance_scale=c.start_guidance, steps=c.ddim_steps, stop_at=stop,
                                generator=g)
            emb_c, emb_u = m.encode(prompts), m.encode([""] * len(prompts))
            e_u, e_c = ref.eps(x_t, t, emb_u), ref.eps(x_t, t, emb_c)
            target = e_u - c.negative_guidance * (e_c - e_u)
        return F.mse_loss(m.eps(x_t, t, emb_c).float(), target.float())


@dataclass
class ConceptAblationConfig(LossStrategyConfig):
    """``anchor``: the concept the target is ablated to (the paper ablates e.g. "Grumpy Cat" to
    "cat"; "" maps it to the unconditional prediction); ``lr`` 2e-6 on Stable Diffusion in
    the paper (here 1e-5, Adam), ``iterations`` 400 (their 400 × batch 8 for objects),
    ``anchor_images`` anchor images generated once by the original model (their 200),
    ``ddim_steps`` used to generate them, ``train_method`` ``"kv"`` (the cross-attention key
    and value projections, their default "crossattn_kv") or ``"full"``."""

    anchor: str = ""
    lr: float = 1e-5
    iterations: int = 400
    anchor_images: int = 64
    ddim_steps: int = 25
    batch_size: int = 8
    train_method: str = "kv"

    def validate(self) -> None:
        super().validate()
        self._check_positive("iterations", "anchor_images", "ddim_steps", "batch_size")
        self._check_choice("train_method", ("kv", "full"))


@register("strategy", "concept_ablation", aliases=("ablating_concepts",))
class ConceptAblation(_ConceptFineTune):
    """Concept ablation, model-based variant: on images of the anchor concept ``c*``, make the
    model's prediction for the target ``c`` match the original's for the anchor,

        min_θ  E_{x ~ p(x | c*), t, ε} ‖ ε_θ(x_t, c, t) − sg(ε_θ*(x_t, c*, t)) ‖²,

    so that prompts naming the target generate the anchor. Kumari, Zhang, Wang, Shechtman,
    Zhang & Zhu, "Ablating Concepts in Text-to-Image Diffusion Models", ICCV 2023. The anchor
    images are generated once by the original model (seeded); only the cross-attention key and
    value projections move by default. The forget data are prompts naming the target.
    """

    config_class = ConceptAblationConfig
    limits = ("no benchmark of its defaults has run yet; the paper's rate is for Stable Diffusion (tests on a small "
              "model use lr 1e-3, 80 steps)")

    def setup(self, forget_loader, retain_loader):
        super().setup(forget_loader, retain_loader)
        c = self.config
        with torch.no_grad():
            self.pool = self.reference.model.generate([c.anchor] * c.anchor_images, steps=c.ddim_steps,
                                                      generator=self.generator)
            self.pool_latents = self.reference.model.to_latents(self.pool)
            self.anchor_emb = self.reference.model.encode([c.anchor])

    def trainable_parameters(self):
        blocks = _cross_attention(self.model.unet)
        if self.config.train_method == "full":
            return [p for p in self.model.unet.parameters()]
        return [p for _, a in blocks for proj in (a.to_k, a.to_v) for p in proj.parameters()]

    def forget_step(self, batch, batch_idx):
        _, prompts = self.adapter.split(batch)
        c, m, ref, g = self.config, self.model, self.reference.model, self.generator
        idx = torch.randint(0, len(self.pool_latents), (c.batch_size,), generator=g)
        x0 = self.pool_latents[idx]
        noise = torch.randn(x0.shape, generator=g).to(x0.device)
        t = torch.randint(0, m.scheduler.config.num_train_timesteps, (c.batch_size,), generator=g).to(x0.device)
        x_t = m.scheduler.add_noise(x0, noise, t)
        emb = m.encode([prompts[k % len(prompts)] for k in range(c.batch_size)])
        with torch.no_grad():
            target = ref.eps(x_t, t, self.anchor_emb.expand(c.batch_size, -1, -1))
        return F.mse_loss(m.eps(x_t, t, emb).float(), target.float())

    def release(self) -> None:
        self.pool = self.pool_latents = self.anchor_emb = None
        super().release()


@dataclass
class UCEConfig(BaseConfig):
    """``anchor``: the concept the erased one is mapped to ("" = nothing in particular, the
    paper's choice for erasure); ``preserve_scale``: weight of the preserved concepts' terms
    (their code's default 1); ``lamb``: the ridge term λ that keeps every other direction of
    the projection as it was (their code's 0.1)."""

    anchor: str = ""
    preserve_scale: float = 1.0
    lamb: float = 0.1

    def validate(self) -> None:
        self._check_positive("preserve_scale", "lamb", allow_zero=True)


@register("strategy", "uce", aliases=("unified_concept_editing",))
class UCE(OneShotStrategy):
    """UCE: a closed-form edit of every cross-attention key and value projection ``W``:

        W' = (λ W + Σ_e W c*_e c_eᵀ + s Σ_p W c_p c_pᵀ) (λ I + Σ_e c_e c_eᵀ + s Σ_p c_p c_pᵀ)⁻¹

    the least-squares solution that maps each erased concept's token embeddings ``c_e`` to where
    ``W`` mapped the anchor's ``c*_e``, keeps the preserved concepts' ``c_p`` where they were
    (weight ``s``), and every other direction near ``W`` (ridge λ). Gandikota, Orgad, Belinkov,
    Materzyńska & Bau, "Unified Concept Editing in Diffusion Models", WACV 2024. As in their
    code, the embeddings used are those from each prompt's last content token to the end of
    the padded sequence, aligned position by position with the anchor's. The forget data are
    prompts naming the concept; the retain data, prompts of concepts to preserve.
    """

    config_class = UCEConfig
    supports = ("diffusion",)

    def _segments(self, model, prompts, anchors):
        """Aligned ``(C, C*)`` token embeddings (rows) of prompts and their anchors."""
        emb_p, emb_a = model.encode(prompts).double(), model.encode(anchors).double()
        ip = model.last_token_index(prompts)
        ia = model.last_token_index(anchors, allow_empty=True)
        L = emb_p.shape[1]
        rows_c, rows_a = [], []
        for k in range(len(prompts)):
            n = L - max(ip[k], ia[k])
            rows_c.append(emb_p[k, ip[k]:ip[k] + n])
            rows_a.append(emb_a[k, ia[k]:ia[k] + n])
        return torch.cat(rows_c), torch.cat(rows_a)

    def apply(self, adapter, forget_loader, retain_loader) -> str:
        model, c = adapter.model, self.config
        erase, keep = _prompts(forget_loader), _prompts(retain_loader)
        if not erase:
            raise DataError("Expected at least one prompt naming the concept to erase, got none.")
        blocks = _cross_attention(model.unet)
        with torch.no_grad():
            ce, ca = self._segments(model, erase, [c.anchor] * len(erase))
            cp = self._segments(model, keep, keep)[0] if keep else ce[:0]
            d = ce.shape[1]
            mat2 = c.lamb * torch.eye(d, dtype=torch.float64, device=ce.device) + ce.T @ ce + c.preserve_scale * cp.T @ cp
            inv = torch.linalg.inv(mat2)
            for _, attn in blocks:
                for proj in (attn.to_k, attn.to_v):
                    W = proj.weight.double()
                    mat1 = c.lamb * W + (W @ ca.T) @ ce + c.preserve_scale * (W @ cp.T) @ cp
                    proj.weight.copy_((mat1 @ inv).to(proj.weight.dtype))
        return (f"edited the key and value projections of {len(blocks)} cross-attention layers in closed form: "
                f"{len(erase)} prompt(s) mapped to {c.anchor!r}, {len(keep)} preserved")


@dataclass
class SLDConfig(BaseConfig):
    """SLD-Medium, the paper's recommended setting: ``guidance_scale`` s_S 1000, ``warmup_steps``
    δ 10, ``threshold`` λ 0.01, ``momentum_scale`` s_m 0.3, ``momentum_beta`` β_m 0.4. The
    warm-up counts sampling steps: with fewer than ~25 steps lower it."""

    guidance_scale: float = 1000.0
    warmup_steps: int = 10
    threshold: float = 0.01
    momentum_scale: float = 0.3
    momentum_beta: float = 0.4

    def validate(self) -> None:
        self._check_positive("guidance_scale", "warmup_steps", "threshold", "momentum_scale", allow_zero=True)
        self._check_range("momentum_beta", 0.0, 1.0)


@register("strategy", "sld", aliases=("safe_latent_diffusion",))
class SLD(OneShotStrategy):
    """Safe Latent Diffusion: no weight changes; at every sampling step the noise estimate is
    steered away from the safety concept ``c_S`` (the forget prompts, joined):

        ε̄ = ε_u + s_g [(ε_p − ε_u) − γ],  γ = μ ⊙ (ε_S − ε_u) + s_m ν,
        μ = min(1, s_S |ε_p − ε_S|) where ε_p − ε_S < λ, else 0,  ν ← β_m ν + (1 − β_m) γ

    applied after ``warmup_steps``. Schramowski, Brack, Deiseroth & Kersting, "Safe Latent
    Diffusion: Mitigating Inappropriate Degeneration in Diffusion Models", CVPR 2023; the
    element-wise scale follows the authors' implementation in diffusers. The erasure lives in
    ``model.safety`` (saved with ``save_pretrained``); the weights are the original's, so the
    concept is still in the model for anyone who samples without it.
    """

    config_class = SLDConfig
    supports = ("diffusion",)

    def apply(self, adapter, forget_loader, retain_loader) -> str:
        concepts = _prompts(forget_loader)
        if not concepts:
            raise DataError("Expected at least one prompt naming the safety concept, got none.")
        adapter.model.safety = {"concept": ", ".join(dict.fromkeys(concepts)), **self.config.to_dict()}
        return f"safety guidance away from {adapter.model.safety['concept']!r} at sampling time (no weights changed)"
