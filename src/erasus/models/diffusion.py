"""Text-to-image diffusion models (``diffusers``) seen through the adapter interface.

:class:`TextToImage` holds a model's parts as one ``nn.Module`` (so that copies, checkpoints,
``inplace`` runs and the trainer treat it like any other model): a
``UNet2DConditionModel`` (or any UNet with ``encoder_hidden_states``), a text encoder, its
tokenizer, a noise scheduler and, for latent models, a VAE (pixel-space models have none).
It loads from a local folder or a Hub name (:meth:`TextToImage.from_pretrained`, a
``StableDiffusionPipeline`` folder or one this module saved) or from a pipeline object
(:meth:`TextToImage.from_pipeline`), and generates with a seed, a guidance scale and a step
count (:meth:`TextToImage.generate`, DDIM, classifier-free guidance; Safe Latent Diffusion
guidance when a strategy has set ``safety``).

:class:`DiffusionAdapter` gives the per-sample noise-prediction loss of ``(images, prompts)``
batches (the DDPM objective of Ho et al., NeurIPS 2020, with the model's scheduler), prompt
embeddings and features. A batch is ``(images, prompts)`` (images in ``[-1, 1]``, as
diffusers expects) or, for concept erasure by prompts alone, a list of prompts.

:func:`toy_text_to_image` builds a small pixel-space model from code (a UNet with
cross-attention, a one-layer CLIP text encoder and a word-level tokenizer): no weights can be
downloaded here, so tests and examples train their own.
"""
from __future__ import annotations

from collections.abc import Mapping
import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..exceptions import ConfigError, DataError
from ..utils.misc import isolated_rng
from .base import ModelAdapter

META = "erasus_text_to_image.json"


def _diffusers():
    try:
        import diffusers
    except ImportError as e:  # pragma: no cover - an install without the extra
        raise ConfigError("Diffusion models need diffusers: pip install 'erasus[diffusion]'.") from e
    return diffusers


class TextToImage(nn.Module):
    """A text-to-image diffusion model as one module (see the module docstring). The text
    encoder and the VAE are frozen; methods that edit them unfreeze what they train.
    ``safety``: Safe Latent Diffusion settings (set by the ``sld`` strategy; ``None``: off)."""

    def __init__(self, unet: nn.Module, text_encoder: nn.Module, tokenizer, scheduler, vae: Optional[nn.Module] = None,
                 max_length: Optional[int] = None):
        super().__init__()
        if not hasattr(unet, "config") or not getattr(unet.config, "cross_attention_dim", None):
            raise ConfigError("Expected a text-conditioned UNet (a diffusers UNet2DConditionModel with "
                              f"cross_attention_dim), got {type(unet).__name__}.")
        self.unet, self.text_encoder, self.vae = unet, text_encoder, vae
        self.tokenizer, self.scheduler = tokenizer, scheduler
        limit = getattr(getattr(text_encoder, "config", None), "max_position_embeddings", 77)
        self.max_length = int(min(max_length or getattr(tokenizer, "model_max_length", limit) or limit, limit))
        self.safety: Optional[Dict[str, Any]] = None
        for part in (text_encoder, vae):
            if part is not None:
                part.requires_grad_(False)

    # loading and saving ---------------------------------------------------------------
    @classmethod
    def from_pipeline(cls, pipe) -> "TextToImage":
        """The parts of a diffusers pipeline (``StableDiffusionPipeline`` and the like)."""
        for part in ("unet", "text_encoder", "tokenizer", "scheduler"):
            if getattr(pipe, part, None) is None:
                raise ConfigError(f"Expected a text-to-image pipeline with a {part}, got {type(pipe).__name__}.")
        return cls(pipe.unet, pipe.text_encoder, pipe.tokenizer, pipe.scheduler, getattr(pipe, "vae", None))

    @classmethod
    def from_pretrained(cls, path_or_name: Union[str, Path], **kwargs) -> "TextToImage":
        """A folder saved by :meth:`save_pretrained`, or any diffusers text-to-image pipeline
        (a local folder or a Hub name; weights through safetensors where the checkpoint has them)."""
        return cls.load_with_pipeline(path_or_name, **kwargs)[0]

    @classmethod
    def load_with_pipeline(cls, path_or_name: Union[str, Path], **kwargs) -> Tuple["TextToImage", Any]:
        """:meth:`from_pretrained`, and the diffusers pipeline it was built from (sharing its
        parts), or ``None`` for a folder Erasus saved."""
        diffusers = _diffusers()
        path = Path(path_or_name)
        if (path / META).exists():
            from transformers import AutoModel, AutoTokenizer

            meta = json.loads((path / META).read_text())

            def load(sub):
                cfg = json.loads((path / sub / ("scheduler_config.json" if sub == "scheduler" else "config.json")).read_text())
                return getattr(diffusers, cfg["_class_name"]).from_pretrained(path / sub)

            model = cls(load("unet"), AutoModel.from_pretrained(path / "text_encoder"),
                        AutoTokenizer.from_pretrained(path / "tokenizer"), load("scheduler"),
                        load("vae") if (path / "vae").exists() else None, meta.get("max_length"))
            model.safety = meta.get("safety")
            return model, None
        pipe = diffusers.DiffusionPipeline.from_pretrained(str(path_or_name), **kwargs)
        return cls.from_pipeline(pipe), pipe

    def save_pretrained(self, path: Union[str, Path]) -> Path:
        """Every part in its own subfolder (safetensors), and the settings Erasus added."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(path / "unet", safe_serialization=True)
        self.text_encoder.save_pretrained(path / "text_encoder", safe_serialization=True)
        self.tokenizer.save_pretrained(path / "tokenizer")
        self.scheduler.save_pretrained(path / "scheduler")
        if self.vae is not None:
            self.vae.save_pretrained(path / "vae", safe_serialization=True)
        (path / META).write_text(json.dumps({"max_length": self.max_length, "safety": self.safety}, indent=1))
        return path

    # the parts --------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def encode(self, prompts: Sequence[str], soft: Optional[torch.Tensor] = None, soft_at: int = 0) -> torch.Tensor:
        """Prompt embeddings ``(B, max_length, D)``: the text encoder's last hidden states of
        the prompts padded to ``max_length`` (as Stable Diffusion conditions its UNet).

        ``soft``: ``(k, d)`` token embeddings (in the text encoder's input-embedding space)
        inserted after the first ``soft_at`` tokens of each prompt (0: before its first
        word), as if ``k`` words with these embeddings stood there; gradients flow into them.
        Textual inversion, adversarial prompt search and AdvUnlearn use it
        (:mod:`erasus.models.diffusion_attacks`)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not all(isinstance(p, str) for p in prompts):
            raise DataError(f"Expected prompts as strings, got {[type(p).__name__ for p in prompts][:3]}.")
        tok = self.tokenizer(list(prompts), padding="max_length", max_length=self.max_length, truncation=True,
                             return_tensors="pt")
        ids = tok.input_ids.to(self.device)
        if soft is None:
            return self.text_encoder(ids)[0]
        return self._encode_soft(ids, soft, soft_at)

    def _encode_soft(self, ids: torch.Tensor, soft: torch.Tensor, soft_at: int = 0) -> torch.Tensor:
        table = self.text_encoder.get_input_embeddings()
        if soft.dim() != 2 or soft.shape[1] != table.embedding_dim:
            raise ConfigError(f"Expected soft token embeddings of shape (k, {table.embedding_dim}), got "
                              f"{tuple(soft.shape)}.")
        k = soft.shape[0]
        bos = getattr(self.tokenizer, "bos_token_id", None)
        start = (1 if bos is not None and bool((ids[:, 0] == bos).all()) else 0) + int(soft_at)
        if start + k >= self.max_length:
            raise ConfigError(f"{k} soft tokens do not fit in prompts of {self.max_length} tokens.")
        # k extra positions; their token ids do not matter, the hook overwrites their embeddings
        ids = torch.cat([ids[:, :start], ids[:, :1].expand(-1, k), ids[:, start:]], 1)[:, :self.max_length]

        def put(module, inputs, out):
            out = out.clone()
            out[:, start:start + k] = soft.to(out.dtype).unsqueeze(0).expand(out.shape[0], -1, -1)
            return out

        handle = table.register_forward_hook(put)
        try:
            return self.text_encoder(ids)[0]
        finally:
            handle.remove()

    def count_tokens(self, text: str) -> int:
        """Number of tokens ``text`` encodes to, without special tokens."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text.strip() else 0

    def token_table(self) -> torch.Tensor:
        """The text encoder's input token embeddings ``(vocab, d)``."""
        return self.text_encoder.get_input_embeddings().weight

    def nearest_tokens(self, soft: torch.Tensor) -> List[int]:
        """Ids of the vocabulary tokens nearest (L2) to each soft embedding (a discrete prompt)."""
        return torch.cdist(soft.detach().float(), self.token_table().detach().float()).argmin(1).tolist()

    def last_token_index(self, prompts: Sequence[str], allow_empty: bool = False) -> List[int]:
        """Position of each prompt's last content token (the one before the end-of-text token,
        or the last one when the tokenizer adds none); an empty prompt (``allow_empty``) gives
        the position after its special tokens."""
        tok = self.tokenizer(list(prompts), padding="max_length", max_length=self.max_length, truncation=True)
        out = []
        bos = getattr(self.tokenizer, "bos_token_id", None)
        for p, ids, mask in zip(prompts, tok["input_ids"], tok["attention_mask"]):
            n = int(sum(mask))
            content = n - (1 if n and ids[0] == bos else 0) - (1 if n and ids[n - 1] == self.tokenizer.eos_token_id else 0)
            if content <= 0:
                if allow_empty:
                    out.append(max(0, n - 1))
                    continue
                raise DataError(f"The prompt {p!r} encodes to no tokens: expected a concept the tokenizer can encode.")
            eos = getattr(self.tokenizer, "eos_token_id", None)
            out.append(n - 2 if eos is not None and ids[n - 1] == eos and n >= 2 else n - 1)
        return out

    def word_positions(self, prompt: str, word: str) -> List[int]:
        """Token positions of ``word`` in ``prompt`` as this model encodes it (padded to its
        ``max_length``, start token included where its tokenizer adds one)."""
        ids = self.tokenizer(prompt, padding="max_length", max_length=self.max_length, truncation=True).input_ids
        sub = self.tokenizer(word, add_special_tokens=False).input_ids
        hits = [i for i in range(len(ids) - len(sub) + 1) if sub and ids[i:i + len(sub)] == sub]
        if not hits:
            raise DataError(f"Expected a word of the prompt: {word!r} is not among the tokens of {prompt!r} as the "
                            f"model's tokenizer encodes it (within its {self.max_length} positions).")
        return [hits[0] + j for j in range(len(sub))]

    def to_latents(self, images: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            return images
        return self.vae.encode(images).latent_dist.mean * self.vae.config.scaling_factor

    def from_latents(self, latents: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            return latents
        return self.vae.decode(latents / self.vae.config.scaling_factor).sample

    def noised(self, x0: torch.Tensor, generator: torch.Generator, t_range=(0.0, 1.0)):
        """``(x_t, t, ε)``: ``x0`` (latents) noised by the model's scheduler at timesteps drawn
        uniformly from ``t_range`` (fractions of the schedule; (0, 1): all of it, the DDPM
        objective), noise and timesteps from ``generator``."""
        lo, hi = t_range
        if not 0.0 <= lo < hi <= 1.0:
            raise ConfigError(f"Expected t_range as fractions 0 <= lo < hi <= 1, got {t_range!r}.")
        n_t = self.scheduler.config.num_train_timesteps
        first = int(lo * n_t)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        t = torch.randint(first, max(first + 1, int(hi * n_t)), (x0.shape[0],), generator=generator).to(x0.device)
        return self.scheduler.add_noise(x0, noise, t), t, noise

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """The UNet's noise prediction ``ε(x_t, t, c)``."""
        return self.unet(x_t, t, encoder_hidden_states=emb).sample

    def latent_shape(self, n: int) -> tuple:
        size = self.unet.config.sample_size
        size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        return (n, self.unet.config.in_channels) + size

    # sampling ---------------------------------------------------------------------------
    def sampler(self, steps: int):
        """A DDIM scheduler (Song et al., ICLR 2021; deterministic, eta 0) from the model's
        scheduler config, set to ``steps`` steps."""
        diffusers = _diffusers()
        if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= 1000:
            raise ConfigError(f"Expected steps as an integer in [1, 1000], got {steps!r}.")
        s = diffusers.DDIMScheduler.from_config(self.scheduler.config)
        s.set_timesteps(steps)
        return s

    def guided_eps(self, x: torch.Tensor, t, emb_c: torch.Tensor, emb_u: torch.Tensor, guidance_scale: float,
                   state: Optional[dict] = None, step_index: int = 0) -> torch.Tensor:
        """Classifier-free guidance ``ε_u + s (ε_c − ε_u)`` (Ho & Salimans, 2021), with Safe
        Latent Diffusion's safety guidance subtracted when ``safety`` is set (see
        :mod:`erasus.strategies.diffusion`, ``sld``)."""
        e_u, e_c = self.eps(x, t, emb_u), self.eps(x, t, emb_c)
        guidance = e_c - e_u
        if self.safety is not None and state is not None:
            guidance = guidance - self._safety_guidance(x, t, e_u, e_c, state, step_index)
        return e_u + guidance_scale * guidance

    def _safety_guidance(self, x, t, e_u, e_c, state, step_index):
        """SLD (Schramowski et al., CVPR 2023), as the authors' diffusers implementation: an
        element-wise scale ``min(1, s_S |ε_c − ε_S|)`` where ``ε_c − ε_S < λ`` (else 0) times
        ``ε_S − ε_u``, plus momentum; subtracted after the warm-up steps."""
        cfg = self.safety
        if "emb" not in state:
            state["emb"] = self.encode([cfg["concept"]] * x.shape[0])
            state["momentum"] = torch.zeros_like(e_u)
        e_s = self.eps(x, t, state["emb"])
        diff = e_c - e_s
        scale = torch.clamp(diff.abs() * cfg["guidance_scale"], max=1.0)
        scale = torch.where(diff >= cfg["threshold"], torch.zeros_like(scale), scale)
        g = (e_s - e_u) * scale + cfg["momentum_scale"] * state["momentum"]
        state["momentum"] = cfg["momentum_beta"] * state["momentum"] + (1 - cfg["momentum_beta"]) * g
        return g if step_index >= cfg["warmup_steps"] else torch.zeros_like(g)

    @torch.no_grad()
    def generate(self, prompts: Union[str, Sequence[str]], seed: int = 0, guidance_scale: float = 5.0, steps: int = 25,
                 negative_prompt: str = "", stop_at: Optional[int] = None, generator: Optional[torch.Generator] = None,
                 soft: Optional[torch.Tensor] = None, soft_at: int = 0):
        """Images for ``prompts`` in ``[-1, 1]`` (DDIM, ``steps`` steps, classifier-free guidance
        with ``negative_prompt`` as the unconditional prompt), reproducible from ``seed``.
        ``stop_at``: stop after that many steps and return ``(x_t, t)``, the partly denoised
        latents and the timestep they are at (ESD trains on these). ``soft``: token embeddings
        placed in every prompt after its first ``soft_at`` tokens (see :meth:`encode`)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts:
            raise DataError("Expected at least one prompt, got none.")
        if not 0.0 <= float(guidance_scale) <= 50.0:
            raise ConfigError(f"Expected guidance_scale in [0, 50], got {guidance_scale!r}.")
        sched = self.sampler(steps)
        g = generator if generator is not None else torch.Generator().manual_seed(seed)
        x = torch.randn(self.latent_shape(len(prompts)), generator=g).to(self.device) * sched.init_noise_sigma
        emb_c, emb_u = self.encode(prompts, soft=soft, soft_at=soft_at), self.encode([negative_prompt] * len(prompts))
        state: dict = {}
        was = self.unet.training
        self.unet.eval()
        try:
            for i, t in enumerate(sched.timesteps):
                if stop_at is not None and i >= stop_at:
                    return x, t
                eps = self.guided_eps(x, t, emb_c, emb_u, guidance_scale, state, i)
                x = sched.step(eps, t, x).prev_sample
        finally:
            self.unet.train(was)
        if stop_at is not None:
            return x, sched.timesteps[-1]
        return self.from_latents(x).clamp(-1, 1)


@torch.no_grad()
def drawn_and_noised(model: TextToImage, prompts: Sequence[str], n: int, steps: int, generator: torch.Generator):
    """``(x_t, t, prompts)``: ``n`` images drawn by ``model`` for ``prompts`` (cycled;
    ``steps`` sampling steps), as latents noised at timesteps drawn uniformly from the schedule,
    everything from ``generator``: fixed probes of what the model does with its own images."""
    if n < 1 or steps < 1:
        raise ConfigError(f"Expected n >= 1 and steps >= 1, got n={n!r}, steps={steps!r}.")
    ps = [prompts[k % len(prompts)] for k in range(n)]
    x0 = model.to_latents(model.generate(ps, steps=steps, generator=generator))
    x_t, t, _ = model.noised(x0, generator)
    return x_t, t, ps


@torch.no_grad()
def conditioning_direction(model: TextToImage, x_t: torch.Tensor, t: torch.Tensor, prompts: Sequence[str],
                           anchor: str = "", soft: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``ε(x_t, t, prompt) − ε(x_t, t, anchor)`` per sample, in float64: what the prompt adds to
    the model's noise prediction over the anchor (with ``anchor`` "", what classifier-free
    guidance amplifies). ``soft``: token embeddings inserted in the prompts (:meth:`TextToImage.encode`),
    e.g. an attack's."""
    x, tt = x_t.to(model.device), t.to(model.device)
    cond = model.encode(list(prompts), soft=None if soft is None else soft.detach())
    return (model.eps(x, tt, cond) - model.eps(x, tt, model.encode([anchor] * len(prompts)))).double()


@torch.no_grad()
def conditional_prediction(model: TextToImage, x_t: torch.Tensor, t: torch.Tensor, prompts: Sequence[str]):
    """``ε(x_t, t, prompt)`` per sample, in float64."""
    return model.eps(x_t.to(model.device), t.to(model.device), model.encode(list(prompts))).double()


def largest_shift(now: torch.Tensor, before: torch.Tensor, size: torch.Tensor, prompts: Sequence[str]) -> float:
    """``max_p Σ_{i: p_i = p} ‖now_i − before_i‖² / Σ_{i: p_i = p} ‖size_i‖²``: how far the
    per-sample predictions ``now`` moved from ``before``, relative to ``size`` (the original's
    conditioning direction), for the prompt that moved most."""
    moved = (now.to(before.device) - before).pow(2).flatten(1).sum(1)
    norm = size.pow(2).flatten(1).sum(1)
    shifts = []
    for p in dict.fromkeys(prompts):
        mask = torch.tensor([q == p for q in prompts], device=moved.device)
        shifts.append(float(moved[mask].sum()) / max(float(norm[mask].sum()), 1e-12))
    return max(shifts)


#: the preserved prompts' shift past which a run is stopped or an edit undone
#: (:class:`~erasus.strategies.diffusion.ConceptStopping`'s ``guard``)
PRESERVE_GUARD = 0.5


def preserve_shift(model: TextToImage, original: TextToImage, prompts: Sequence[str], n: int = 16, steps: int = 20,
                   seed: int = 0) -> float:
    """How far ``model``'s noise prediction for each of ``prompts`` moved from ``original``'s,
    on ``n`` images the original draws for them (noised at uniform timesteps, from ``seed``),
    relative to what the prompt adds over the empty one in the original
    (:func:`largest_shift` of :func:`conditional_prediction`; the largest over the prompts).
    0 for an unchanged model; :data:`PRESERVE_GUARD` is where Erasus stops or undoes a run."""
    prompts = list(dict.fromkeys(prompts))
    with isolated_rng(seed):
        x_t, t, ps = drawn_and_noised(original, prompts, n, steps, torch.Generator().manual_seed(seed))
    return largest_shift(conditional_prediction(model, x_t, t, ps), conditional_prediction(original, x_t, t, ps),
                         conditioning_direction(original, x_t, t, ps, ""), ps)


def share_left(direction: torch.Tensor, reference: torch.Tensor, concept: str = "the concept",
               anchor: str = "") -> float:
    """``Σ ⟨d, d*⟩ / Σ ‖d*‖²``: the share of ``reference`` (the original's direction) left in
    ``direction`` (:func:`erasus.metrics.diffusion.concept_left`)."""
    norm = float((reference * reference).sum())
    if norm == 0.0:
        raise DataError(f"The original model predicts the same noise for {concept!r} and {anchor!r}: it does not "
                        "tell the concept from the anchor, so there is nothing to measure.")
    return float((direction.to(reference.device) * reference).sum()) / norm


def image_features(x: torch.Tensor, features: Optional[Callable] = None, batch: int = 256) -> torch.Tensor:
    """``features(x)`` in batches of ``batch``, flattened to ``(N, D)`` in float64 on the CPU;
    without ``features``, ``x`` must be ``(N, D)`` features already."""
    if features is None:
        if not torch.is_tensor(x) or x.dim() != 2:
            raise DataError(f"Expected (N, D) features, or images with features=<an extractor>; got "
                            f"{getattr(x, 'shape', type(x).__name__)}.")
        return x.detach().double().cpu()
    with torch.no_grad():
        return torch.cat([features(x[i:i + batch]).flatten(1) for i in range(0, len(x), batch)]).double().cpu()


#: :class:`SelfJudge` compares a prompt only where at least this share of the original's own images
#: of it land on it
SELF_JUDGE_DISTINCT = 0.5
#: a preserved prompt whose self-judged share fell below this fraction of the original's was damaged:
#: ``DiffusionUnlearner.erase`` warns, and ``ConceptStopping(images=True)`` keeps no such step
SELF_JUDGE_KEPT = 0.7


class SelfJudge:
    """The original's own generations as a nearest-neighbour judge, for when no judge is at hand
    (:func:`erasus.metrics.diffusion.self_judged` explains the measure and its grounding).

    Built once from the untouched ``original``: it draws ``reference`` images of every prompt
    and of each ``unscored`` one (seed ``seed``), and ``baseline``, the original's share of its
    own ``n`` images per prompt (seed ``seed + 1``) that land among its reference images of that
    prompt. :meth:`shares` measures any model the same way, from the same noise; :meth:`ratios`
    divides by the baseline where the original's images are told apart (baseline ≥
    ``distinct``). Only images are kept, not the original, so a stopping rule can judge every
    check against the model as it was at the start."""

    def __init__(self, original: "TextToImage", prompts: Sequence[str], n: int = 16, reference: int = 32, seed: int = 0,
                 guidance_scale: float = 5.0, steps: int = 25, features: Optional[Callable] = None,
                 unscored: Sequence[str] = (), distinct: float = SELF_JUDGE_DISTINCT):
        if isinstance(prompts, str) or not len(prompts) or not all(isinstance(p, str) for p in prompts):
            raise DataError(f"Expected a list of prompts (strings), got {prompts!r}.")
        if n < 1 or reference < 1:
            raise ConfigError(f"Expected n >= 1 and reference >= 1 images per prompt, got n={n}, reference={reference}.")
        self.prompts = list(dict.fromkeys(prompts))
        clouds = self.prompts + [p for p in dict.fromkeys(unscored) if p not in self.prompts]
        self.n, self.seed, self.guidance_scale, self.steps, self.features = n, seed, guidance_scale, steps, features
        self.distinct = distinct
        self.refs = self._drawn(original, clouds, reference, seed)
        self.owner = torch.arange(len(clouds)).repeat_interleave(reference)
        self.baseline = self.shares(original)

    def _drawn(self, model, which, count, seed):  # one batch: the same noise for the same prompt and seed in any model
        x = model.generate([p for p in which for _ in range(count)], seed=seed, guidance_scale=self.guidance_scale,
                           steps=self.steps)
        return image_features(x.flatten(1) if self.features is None else x, self.features).float()  # pixels as drawn

    @torch.no_grad()
    def shares(self, model: "TextToImage") -> Dict[str, float]:
        """``{prompt: share of model's n images of it whose nearest reference image is of it}``."""
        mine = torch.arange(len(self.prompts)).repeat_interleave(self.n)
        hit = self.owner[torch.cdist(self._drawn(model, self.prompts, self.n, self.seed + 1), self.refs).argmin(1)] == mine
        return dict(zip(self.prompts, hit.view(len(self.prompts), self.n).float().mean(1).tolist()))

    def ratios(self, model: "TextToImage") -> Dict[str, float]:
        """``{prompt: model's share / the original's}`` for the prompts the original's images are
        told apart for (1 = as the original; the others are left out)."""
        now = self.shares(model)
        return {p: now[p] / b for p, b in self.baseline.items() if b >= self.distinct}

    def drawn(self, model: "TextToImage") -> Tuple[Optional[float], Dict[str, float]]:
        """``(concept, others)``: :meth:`ratios` split into the first prompt's (the concept; None
        when not told apart) and the rest's (the preserved prompts told apart)."""
        ratios = self.ratios(model)
        concept = ratios.pop(self.prompts[0], None)
        return concept, ratios


def generated_pairs(model: "TextToImage", prompts: Sequence[str], per_prompt: int, generator: torch.Generator,
                    steps: int = 25, guidance_scale: float = 5.0, batch: int = 32) -> List[Tuple[torch.Tensor, str]]:
    """``(image, prompt)`` pairs: ``per_prompt`` images that ``model`` generates for each of
    ``prompts`` (prompt by prompt, in batches of at most ``batch`` images, all from
    ``generator``), on the model's device. The forget or retain images of a concept given only
    as prompts: what the model draws for it."""
    wanted = [p for p in prompts for _ in range(per_prompt)]
    out: List[Tuple[torch.Tensor, str]] = []
    with torch.no_grad():
        for i in range(0, len(wanted), batch):
            part = wanted[i:i + batch]
            imgs = model.generate(part, steps=steps, generator=generator, guidance_scale=guidance_scale)
            out += list(zip(imgs, part))
    return out


def split_batch(batch):
    """``(images or None, prompts)`` of a diffusion batch: ``(images, prompts)``,
    ``{"pixel_values", "prompt"}`` or a list of prompts."""
    if isinstance(batch, (list, tuple)) and batch and all(isinstance(b, str) for b in batch):
        return None, list(batch)
    if isinstance(batch, Mapping):
        return batch.get("pixel_values"), list(batch["prompt"])
    if isinstance(batch, (list, tuple)) and len(batch) == 2:
        return batch[0], list(batch[1])
    raise DataError("Expected a diffusion batch: (images, prompts), {'pixel_values', 'prompt'} or a list of "
                    f"prompts; got {type(batch).__name__}.")


def loader_prompts(loader) -> List[str]:
    """Every prompt of a loader of diffusion batches (:func:`split_batch`), in order; ``[]``
    for ``None``."""
    return [] if loader is None else [p for batch in loader for p in split_batch(batch)[1]]


class DiffusionAdapter(ModelAdapter):
    """The adapter of a :class:`TextToImage` model (family ``"diffusion"``)."""

    family = "diffusion"

    def __init__(self, model: nn.Module):
        super().__init__(model)
        if not isinstance(model, TextToImage):
            raise ConfigError(f"Expected a TextToImage model, got {type(model).__name__}: wrap a diffusers pipeline "
                              "with TextToImage.from_pipeline(pipe).")

    @property
    def device(self) -> torch.device:
        return self.model.device

    def split(self, batch):
        """``(images or None, prompts)`` of a batch (:func:`split_batch`)."""
        return split_batch(batch)

    def to_device(self, batch):
        images, prompts = self.split(batch)
        return (images.to(self.device) if images is not None else None), prompts

    def batch_size(self, batch) -> int:
        return len(self.split(batch)[1])

    def logits(self, batch):
        raise DataError("A diffusion model has no class logits: use per_sample_loss (the noise-prediction loss) or "
                        "a judge classifier on generated images.")

    def per_sample_loss(self, batch, logits=None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The DDPM loss ``‖ε − ε_θ(x_t, t, c)‖²`` per sample (mean over pixels), with noise and
        timesteps drawn from ``generator`` (default: seeded 0, so that two evaluations of a
        model compare on the same draws)."""
        images, prompts = self.to_device(batch)
        if images is None:
            raise DataError("This batch holds prompts only: the noise-prediction loss needs (images, prompts) batches. "
                            "To erase a concept given as prompts, call DiffusionUnlearner(...).erase(prompts), which "
                            "generates its images, or use a concept-erasure method (esd, uce, concept_ablation, ...).")
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        m = self.model
        x_t, t, noise = m.noised(m.to_latents(images), g)
        pred = m.eps(x_t, t, m.encode(prompts))
        return ((pred.float() - noise.float()) ** 2).flatten(1).mean(1)

    def stratified_loss(self, image: torch.Tensor, prompt: str, draws: int, generator: torch.Generator) -> torch.Tensor:
        """One sample's DDPM loss as a stratified estimate over ``draws`` timesteps: draw ``k``
        takes its timestep uniformly from the ``k``-th of ``draws`` equal parts of the schedule
        (the same expectation as the DDPM objective, with less variance than ``draws`` uniform
        timesteps), its own noise; one UNet forward over the draws."""
        m = self.model
        x0 = m.to_latents(image.unsqueeze(0).to(self.device))
        parts = [m.noised(x0, generator, (k / draws, (k + 1) / draws)) for k in range(draws)]
        x_t, t, noise = (torch.cat([p[i] for p in parts]) for i in range(3))
        pred = m.eps(x_t, t, m.encode([prompt] * draws))
        return ((pred.float() - noise.float()) ** 2).mean()

    def features(self, batch) -> torch.Tensor:
        """Mean-pooled prompt embeddings (for geometry selectors and plots)."""
        _, prompts = self.to_device(batch)
        with torch.no_grad():
            return self.model.encode(prompts).mean(1).float()


def is_text_to_image(model) -> bool:
    return isinstance(model, TextToImage)


def toy_text_to_image(prompts: Sequence[str], image_size: int = 8, channels: int = 3, width: int = 32,
                      num_train_timesteps: int = 100, seed: int = 0, attention_at: str = "high") -> TextToImage:
    """A small pixel-space text-to-image model built from code: a diffusers
    ``UNet2DConditionModel`` (two resolutions; attention and cross-attention in the middle block
    and at the full resolution, or with ``attention_at="low"`` at the half one, which trains
    about 20× faster on a CPU at 16×16), a one-layer CLIP text encoder and a word-level
    tokenizer over ``prompts``' words, a DDPM scheduler with ``num_train_timesteps`` steps.
    Untrained: train it with :func:`train_text_to_image`."""
    if attention_at not in ("high", "low"):
        raise ConfigError(f"Expected attention_at 'high' or 'low', got {attention_at!r}.")
    down = ("CrossAttnDownBlock2D", "DownBlock2D") if attention_at == "high" else ("DownBlock2D", "CrossAttnDownBlock2D")
    diffusers = _diffusers()
    from transformers import CLIPTextConfig, CLIPTextModel

    from .causal_lm import word_tokenizer

    torch.manual_seed(seed)
    tok = word_tokenizer(list(prompts) + [""], bos=False)
    tok.model_max_length = 8
    enc = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=width, intermediate_size=2 * width,
                                       num_hidden_layers=1, num_attention_heads=4, max_position_embeddings=8,
                                       pad_token_id=tok.pad_token_id, bos_token_id=tok.pad_token_id,
                                       eos_token_id=tok.eos_token_id))
    unet = diffusers.UNet2DConditionModel(
        sample_size=image_size, in_channels=channels, out_channels=channels, layers_per_block=1,
        block_out_channels=(width, 2 * width), down_block_types=down,
        up_block_types=tuple(b.replace("Down", "Up") for b in reversed(down)), cross_attention_dim=width, norm_num_groups=8,
        attention_head_dim=8)
    sched = diffusers.DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="squaredcos_cap_v2")
    return TextToImage(unet, enc, tok, sched)


def train_text_to_image(model: TextToImage, loader, steps: int = 500, lr: float = 2e-3, uncond_prob: float = 0.1,
                        seed: int = 0, progress: bool = False) -> TextToImage:
    """Train the UNet (and the text encoder) on ``(images, prompts)`` batches with the DDPM
    loss, replacing a prompt by the empty one with probability ``uncond_prob`` so that
    classifier-free guidance works (Ho & Salimans, 2021)."""

    from .training import train_steps

    g = torch.Generator().manual_seed(seed)
    model.text_encoder.requires_grad_(True)
    adapter = DiffusionAdapter(model)

    def loss(batch):
        images, prompts = batch
        drop = torch.rand(len(prompts), generator=g) < uncond_prob
        prompts = ["" if d else p for p, d in zip(prompts, drop.tolist())]
        return adapter.per_sample_loss((images, prompts), generator=g).mean()

    model.train()
    train_steps(loss, [p for p in model.parameters() if p.requires_grad], loader, steps, lr, "train text-to-image",
                progress)
    model.text_encoder.requires_grad_(False)
    return model.eval()
