"""Attacks on a concept-erased text-to-image model, and the pieces AdvUnlearn trains against.

A method can stop a model from drawing a concept for its plain prompt while the concept is
still in the weights: an optimised prompt (UnlearnDiffAtk), a new word learned from a few
images (concept inversion) or a few fine-tuning steps (relearning) bring it back. Each
function here runs on any :class:`~erasus.models.diffusion.TextToImage`; a judge (any
callable from images in ``[-1, 1]`` to class logits) says whether an image shows the concept.
:func:`erasus.metrics.diffusion.erasure_report` runs them on the erased, the original and the
retrained model alike.

* :func:`prompt_attack`: Zhang, Jia, Chen, Liu, Liu, Liu & Liu, "To Generate or Not? Safety-
  Driven Unlearned Diffusion Models Are Still Easy to Generate Unsafe Images ... For Now"
  (UnlearnDiffAtk), ECCV 2024.
* :func:`concept_inversion`: Pham, Marshall, Karki, Hegde et al., "Circumventing Concept
  Erasure Methods for Text-to-Image Generative Models", ICLR 2024 (textual inversion of
  Gal et al., ICLR 2023, on the erased model).
* :func:`relearning_attack`: a few fine-tuning steps on images of the concept (the
  relearning attack of Lynch et al. 2024 and Hu et al. 2024, applied to a diffusion model).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F

from ..exceptions import ConfigError, DataError
from ..utils.misc import adam_options
from .diffusion import TextToImage


def denoising_loss(model: TextToImage, latents: torch.Tensor, emb: torch.Tensor, generator: torch.Generator,
                   draws: int = 1, t_range=(0.0, 1.0)) -> torch.Tensor:
    """The DDPM loss ``‖ε − ε_θ(x_t, t, c)‖²`` of ``latents`` under conditioning ``emb``
    (broadcast over the batch), with ``draws`` noise/timestep draws per latent from ``generator``;
    timesteps uniform over ``t_range`` (fractions of the schedule: the papers use all of it,
    (0, 1); a narrower range weighs the noise levels where the prompt matters most)."""
    x0 = latents.repeat(draws, *([1] * (latents.dim() - 1)))
    x_t, t, noise = model.noised(x0, generator, t_range)
    if emb.shape[0] != x0.shape[0]:
        emb = emb[:1].expand(x0.shape[0], -1, -1) if emb.shape[0] == 1 else emb.repeat(draws, 1, 1)
    return F.mse_loss(model.eps(x_t, t, emb).float(), noise.float())


def random_token_embeddings(model: TextToImage, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` embeddings of vocabulary tokens drawn at random (the attacks' initialisation)."""
    table = model.token_table().detach()
    return table[torch.randint(0, table.shape[0], (k,), generator=generator)].clone().float()


def optimise_soft_tokens(loss_fn: Callable[[torch.Tensor], torch.Tensor], init: torch.Tensor, steps: int,
                         lr: float, sign: bool = False, callback: Optional[Callable[[int, torch.Tensor], bool]] = None
                         ) -> torch.Tensor:
    """Minimise ``loss_fn(soft)`` over soft token embeddings with Adam (``sign``: on the sign
    of the gradient, the FGSM-style "fast" attack of AdvUnlearn). Only ``soft`` moves: the
    gradient is taken with ``torch.autograd.grad``, so no model parameter's ``.grad`` is
    touched. ``callback(step, soft)`` returning True stops early."""
    if steps < 0 or lr <= 0:
        raise ConfigError(f"Expected steps >= 0 and lr > 0, got steps={steps!r}, lr={lr!r}.")
    soft = init.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([soft], lr=lr)
    for i in range(steps):
        loss = loss_fn(soft)
        (grad,) = torch.autograd.grad(loss, soft)
        soft.grad = grad.sign() if sign else grad
        opt.step()
        opt.zero_grad(set_to_none=True)
        if callback is not None and callback(i + 1, soft.detach()):
            break
    return soft.detach()


def judge_labels(judge: Callable, images: torch.Tensor) -> torch.Tensor:
    """The judge's class for each image (``argmax`` of its logits)."""
    with torch.no_grad():
        out = judge(images)
    if not torch.is_tensor(out) or out.dim() != 2 or out.shape[0] != images.shape[0]:
        raise DataError(f"Expected the judge to return class logits of shape ({images.shape[0]}, classes) for "
                        f"{images.shape[0]} images, got {getattr(out, 'shape', type(out).__name__)}.")
    return out.argmax(1).cpu()


@dataclass
class AttackResult:
    """Outcome of an attack: ``erasure`` is the share of the attack's images the judge does
    not assign to the concept (1 = the attack recovered nothing); ``found``: what the attack
    produced (prompts for a prompt search, a note otherwise)."""

    name: str
    erasure: float
    n: int
    found: List[str] = field(default_factory=list)


def _check_images(images: torch.Tensor, what: str) -> torch.Tensor:
    if not torch.is_tensor(images) or images.dim() != 4 or not len(images):
        raise DataError(f"Expected {what} as a non-empty (N, C, H, W) tensor in [-1, 1], got "
                        f"{getattr(images, 'shape', type(images).__name__)}.")
    return images


def prompt_attack(model: TextToImage, judge: Callable, concept: str, label: int, target_images: torch.Tensor,
                  n_tokens: int = 5, steps: int = 40, lr: float = 0.01, check_every: int = 10, draws: int = 4,
                  discrete: bool = True, guidance_scale: float = 5.0, sample_steps: int = 25, seed: int = 0,
                  t_range=(0.0, 1.0)) -> AttackResult:
    """UnlearnDiffAtk-style adversarial prompt search: for each target image (an image of the
    concept, e.g. from the original model), ``n_tokens`` prefix tokens before ``concept`` are
    optimised so that the attacked model denoises the target image best under the prompt (the
    diffusion model as its own classifier, no gradient from the judge); every
    ``check_every`` steps an image is generated with the prompt and the judge decides; the
    attack on a target succeeds as soon as one image is judged ``label`` (the plain prompt is
    checked first: a concept the model still draws needs no attack).

    The paper's settings (Stable Diffusion): 5 prefix tokens, 40 steps of Adam at lr 0.01,
    projection of each token to the nearest vocabulary token (``discrete=True``; ``False``
    keeps the soft embeddings: a stronger, white-box attack); ``t_range``: see
    :func:`denoising_loss`. Deviation: the optimisation
    runs in the token-embedding space with projection at check time (their code optimises a
    relaxed one-hot over the vocabulary and projects likewise)."""
    targets = _check_images(target_images, "target_images")
    if n_tokens < 1 or check_every < 1 or draws < 1:
        raise ConfigError(f"Expected n_tokens, check_every and draws >= 1, got {n_tokens}, {check_every}, {draws}.")
    g = torch.Generator().manual_seed(seed)
    found, hits = [], 0
    with torch.no_grad():
        latents = model.to_latents(targets.to(model.device))
    table = model.token_table().detach()

    def project(soft):
        return table[model.nearest_tokens(soft)].float() if discrete else soft

    for j in range(len(latents)):
        gen_seed = seed * 1000 + j
        plain = model.generate([concept], seed=gen_seed, guidance_scale=guidance_scale, steps=sample_steps)
        if bool(judge_labels(judge, plain)[0] == label):  # no attack needed (UnlearnDiffAtk's pre-attack check)
            hits += 1
            found.append(concept)
            continue

        def loss_fn(soft, x=latents[j:j + 1]):
            return denoising_loss(model, x, model.encode([concept], soft=soft), g, draws, t_range)

        state = {"hit": False, "soft": None}

        def check(step, soft):
            if step % check_every and step != steps:
                return False
            p = project(soft)
            img = model.generate([concept], seed=gen_seed, guidance_scale=guidance_scale, steps=sample_steps, soft=p)
            state["soft"] = p
            state["hit"] = bool(judge_labels(judge, img)[0] == label)
            return state["hit"]

        optimise_soft_tokens(loss_fn, random_token_embeddings(model, n_tokens, g), steps, lr, callback=check)
        hits += state["hit"]
        if state["soft"] is not None:
            words = (model.tokenizer.decode(model.nearest_tokens(state["soft"])) if discrete else f"<{n_tokens} soft tokens>")
            found.append(f"{words} {concept}".strip())
    return AttackResult("prompt_attack", 1 - hits / len(latents), len(latents), found)


def concept_inversion(model: TextToImage, judge: Callable, label: int, images: torch.Tensor, template: str = "{}",
                      steps: int = 200, lr: float = 5e-3, batch_size: int = 8, n_images: int = 32,
                      guidance_scale: float = 5.0, sample_steps: int = 25, seed: int = 0, t_range=(0.0, 1.0)
                      ) -> AttackResult:
    """Concept inversion: learn one new word embedding ``v*`` from ``images`` of the concept by
    textual inversion on the *erased* model (the DDPM loss of the images under ``template``
    with ``v*`` in place of ``{}``, e.g. ``"a photo of {}"``; only ``v*`` moves), then generate
    ``n_images`` with it and count those
    the judge still assigns to ``label``. Pham et al. (ICLR 2024) showed that this recovers the
    concept from ESD, UCE, concept ablation, SLD and others; a retrained model has no concept
    to recover, so its inversion is the reference. Their setting: Stable Diffusion, 1,000
    steps, lr 5e-3; ours, 200 steps for small models (pass ``steps``); ``t_range``: see
    :func:`denoising_loss`."""
    imgs = _check_images(images, "images")
    if batch_size < 1 or n_images < 1:
        raise ConfigError(f"Expected batch_size and n_images >= 1, got {batch_size}, {n_images}.")
    if template.count("{}") != 1:
        raise ConfigError(f"Expected a template with one {{}} where the learned word goes, got {template!r}.")
    before, after = template.split("{}")
    text, at = " ".join((before.strip() + " " + after.strip()).split()), model.count_tokens(before)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        latents = model.to_latents(imgs.to(model.device))

    def loss_fn(soft):
        idx = torch.randint(0, len(latents), (min(batch_size, len(latents)),), generator=g)
        return denoising_loss(model, latents[idx], model.encode([text], soft=soft, soft_at=at), g, 1, t_range)

    soft = optimise_soft_tokens(loss_fn, random_token_embeddings(model, 1, g), steps, lr)
    out = model.generate([text] * n_images, seed=seed, guidance_scale=guidance_scale, steps=sample_steps, soft=soft,
                         soft_at=at)
    share = float((judge_labels(judge, out) == label).float().mean())
    return AttackResult("concept_inversion", 1 - share, n_images, [template.format("<v*>")])


def relearning_attack(model: TextToImage, judge: Callable, concept: str, label: int, images: torch.Tensor,
                      steps: int = 50, lr: float = 1e-4, batch_size: int = 8, n_images: int = 32,
                      guidance_scale: float = 5.0, sample_steps: int = 25, seed: int = 0) -> AttackResult:
    """Relearning: fine-tune a copy of the UNet for ``steps`` Adam steps on ``images`` of the
    concept with the prompt ``concept`` (DDPM loss), then count the generated images the judge
    assigns to ``label``. A model that forgot the concept relearns it about as fast as a model
    that never saw it; one that hid it relearns faster. The model passed in is not changed."""
    imgs = _check_images(images, "images")
    if steps < 0 or lr <= 0 or batch_size < 1:
        raise ConfigError(f"Expected steps >= 0, lr > 0 and batch_size >= 1, got {steps}, {lr}, {batch_size}.")
    g = torch.Generator().manual_seed(seed)
    attacked = copy.deepcopy(model)
    attacked.unet.requires_grad_(True)
    params = list(attacked.unet.parameters())
    opt = torch.optim.Adam(params, lr=lr, **adam_options(params))
    with torch.no_grad():
        latents = attacked.to_latents(imgs.to(attacked.device))
        emb = attacked.encode([concept])
    attacked.train()
    for _ in range(steps):
        idx = torch.randint(0, len(latents), (min(batch_size, len(latents)),), generator=g)
        loss = denoising_loss(attacked, latents[idx], emb, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    attacked.eval()
    out = attacked.generate([concept] * n_images, seed=seed, guidance_scale=guidance_scale, steps=sample_steps)
    share = float((judge_labels(judge, out) == label).float().mean())
    return AttackResult("relearning", 1 - share, n_images, [f"{steps} steps at lr {lr:g} on {len(imgs)} images"])
