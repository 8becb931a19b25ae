"""Concept erasure in text-to-image diffusion models (``erasus.models.diffusion``).

The forget data are prompts naming the concept (``["a photo of a sneaker"]``) or
``(images, prompts)`` batches; the retain data, where a method uses them, prompts of concepts
to preserve. ``DiffusionUnlearner.erase(concept, anchor=..., preserve=...)`` builds both.

* ``esd``: Erasing Concepts from Diffusion Models (Gandikota et al., ICCV 2023).
* ``uce``: Unified Concept Editing (Gandikota et al., WACV 2024), a closed-form edit.
* ``sld``: Safe Latent Diffusion (Schramowski et al., CVPR 2023), guidance at inference time.
* ``concept_ablation``: Ablating Concepts in Text-to-Image Diffusion Models (Kumari et al.,
  ICCV 2023), the model-based variant.
* ``salun_generation``: SalUn for image generation (Fan et al., ICLR 2024): a weight-saliency
  mask, then the concept's images remapped to another concept (``DiffusionUnlearner`` takes
  ``strategy="salun"`` for it).
* ``adv_unlearn``: AdvUnlearn (Zhang et al., NeurIPS 2024): ESD against adversarial prompts
  found during training, with utility retained on preserved prompts; robust to prompt attacks.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.base import BaseConfig
from ..core.exceptions import ConfigError, DataError
from ..core.registry import register
from ..core.stopping import BestCheckpointRule, Decision, Stop, StopKind
from ..core.strategy import LossStrategy, LossStrategyConfig, OneShotStrategy
from ..models.diffusion import (PRESERVE_GUARD, SelfJudge, conditional_prediction, conditioning_direction,
                               drawn_and_noised, generated_pairs, largest_shift, loader_prompts, share_left, split_batch)
from ..models.diffusion_attacks import optimise_soft_tokens, random_token_embeddings
from .relabel import check_sparsity, mask_gradients, saliency_mask


def _cross_attention(unet):
    """The cross-attention blocks (``attn2``) of a diffusers UNet; an error when there are none."""
    blocks = [(n, m) for n, m in unet.named_modules() if n.endswith("attn2") and hasattr(m, "to_k")]
    if not blocks:
        raise ConfigError(f"{type(unet).__name__} has no cross-attention layers (attn2): this method edits "
                          "how the text conditions the image and needs a text-conditioned UNet.")
    return blocks


#: ``ConceptStopping(images=True)`` keeps no step whose preserved prompts' self-judged shares fell, on
#: average (each capped at the original's), below this fraction of the original's: a margin over erase's
#: warning (``SELF_JUDGE_KEPT``, 0.7), because the rule picks its step among a run's noisy readings (on the
#: stripes the kept step read 0.70 during an ESD run with 0.70 as the bar, and 0.44 to 0.75 on four other
#: seeds of the judge)
IMAGE_GUARD_KEPT = 0.85
#: ... nor one where any preserved prompt's share fell below this fraction. The average, not the lowest,
#: meets ``IMAGE_GUARD_KEPT``: with 16 images a prompt one image is about 0.09 of a share, and on 16×16
#: Fashion-MNIST (six preserved prompts told apart) the lowest of an ESD run's readings fell to 0.80-0.83 at
#: three checks between readings of 0.88 to 1.0 (noise), which stopped the run with 38% erasure, while the
#: capped average stayed above 0.96
IMAGE_GUARD_FLOOR = 0.5
#: the ``Stop.metric`` of a stop the image guard decided (the preserved prompts' self-judged images)
IMAGE_GUARD_METRICS = ("preserve_drawn_mean", "preserve_drawn")


class ConceptStopping(BestCheckpointRule):
    """The stopping rule of the fine-tuning diffusion methods (their default; pass
    ``stopping="none"`` for the paper's fixed ``iterations``).

    The papers fix a step size and a step count for Stable Diffusion v1.4 (ESD: lr 1e-5 for
    1,000 steps); on another model the same numbers can leave the concept untouched (ESD's, 20
    steps, kept 98% of the concept's conditioning on tests/test_diffusion.py's model) or
    overshoot. This rule watches what the run is meant to change, without a judge, on fixed
    probes drawn by the original before the run (``probes`` images per side, ``steps`` sampling
    steps, noised at uniform timesteps), ``checks`` times over the step budget:

    * ``concept_left``: the share of the original's direction ``ε(x_t, c) − ε(x_t, anchor)``
      left in the model's (:func:`erasus.metrics.diffusion.concept_left`; 1 at the start);
    * ``preserve_shift`` (with preserved prompts): for each preserved prompt ``p``,
      ``Σ ‖d_θ(p) − d*(p)‖² / Σ ‖d*(p)‖²`` with ``d(p) = ε(x_p, p) − ε(x_p, "")`` on images of
      ``p`` — how far what the prompt adds (what guidance amplifies) moved — the largest over
      the prompts. With ``shift="prediction"`` the numerator is the move of the conditional
      prediction itself, ``Σ ‖ε_θ(x_p, p) − ε*(x_p, p)‖²``, which also sees damage that moves
      the conditional and unconditional predictions alike (the direction does not): the rule
      :meth:`DiffusionUnlearner.erase` gives the model-agnostic losses (gradient ascent on the
      coloured squares kept a direction shift under 0.5 while every prompt came to draw red;
      its prediction shift was 14.6 five steps in).

    * ``concept_left_attacked`` (``attack`` given: a callable returning the soft prompt tokens
      an adversarial method found last, or None before its first attack): ``concept_left`` of
      the prompt with those tokens inserted, the share of the concept the attacker restores
      (recorded, not acted on).

    It stops when ``concept_left`` ≤ ``target``, keeps the step with the lowest ``concept_left``
    whose shift is within ``guard`` and restores it at the end. With ``attack`` (adversarial
    training) it does not stop at the target and keeps the latest step within the guard: the
    plain prompt's ``concept_left`` says nothing of robustness (AdvUnlearn stopped on it once
    ended at step 150 of a 200-step warm-up, before any adversarial step), and the attacked one
    is no score to pick a step by (on the coloured squares the first attacks, a few steps from a
    random start, restored 0.3 of the concept and the later ones over 1.0). With preserved prompts it also
    raises the rate ``grow``-fold (a fresh optimiser; up to ``max_lr_growth`` times the
    configured one) when the progress since the last change would not reach the target in the
    steps left; after a shift past ``guard`` it restores the best step and goes back to the
    previous rate for good (or stops, if the rate was never raised). Without preserved prompts
    the rate is never raised: nothing would show what a larger one does to other concepts (ESD
    raised to 1e-2 on the coloured squares: green 0.97 → 0.84, blue 0.81 → 0.50 judged, while
    the unconditional prediction moved by 4% of its error). Erasus's deviation from the papers'
    schedules, reported in the stop reason; the losses are the papers'.

    The guard is a judge-free hypothesis, not a retention measure: on the coloured squares
    SalUn kept green and blue at a shift of 0.49, while on 16×16 Fashion-MNIST
    (``benchmarks/results/diffusion-cpu.md``, 3 seeds) the steps it kept within the guard had lost
    half of the judged retention on every seed; on 8×8 grayscale stripes (horizontal, vertical,
    checkerboard; ESD erasing horizontal with the other two preserved, at its defaults) the rule
    raised the rate twice and stopped at step 400 with concept_left −0.32 and a prediction shift
    of 0.29 (with the default direction shift it ended the same way), while vertical stripes fell
    from 0.78 to 0.00 judged.

    ``images=True`` (with preserved prompts) guards the images too: at every check the
    preserved prompts' images are judged by the original's own generations
    (:class:`~erasus.models.diffusion.SelfJudge`, drawn at ``guidance_scale`` from a fixed
    noise; the original's references are drawn once at the start), recorded as
    ``preserve_drawn`` (the lowest share over the original's), ``preserve_drawn_mean`` (their
    average, each capped at 1) and ``concept_drawn``, and a step whose ``preserve_drawn_mean``
    is below ``kept`` or whose ``preserve_drawn`` is below ``floor`` counts as past the guard
    (restore, back off, or stop, as for the shift). It costs ``n`` generated images per prompt
    at each check.
    ``DiffusionUnlearner.erase(image_guard=True)`` sets it up with the run's anchor and
    guidance. On the stripes at the methods' defaults (judged horizontal / vertical: original
    0.56 / 0.78; ``scripts/diffusion_stripes_probe.py esd concept_ablation salun --image-guard``):
    ESD kept 0.34 / 0.75 (without it 0.69 / 0.00), concept ablation 0.34 / 0.75 (0.31 / 0.53);
    SalUn's first check read 0.77 and the rule kept the original (erase then warns that the
    concept is still drawn). With ``kept`` at 0.7, erase's own bar, ESD kept a step that read
    0.70 and then 0.44 to 0.75 on other seeds of the judge (vertical 0.41 judged): hence the
    margin. On 16×16 Fashion-MNIST (``benchmarks/results/diffusion-cpu-image-guard.md``, seed 0,
    six preserved prompts told apart) a bar on the lowest reading stopped ESD at step 250 on noise
    (erasure 38%; hence the average and the floor, :data:`IMAGE_GUARD_FLOOR`), and SalUn at its
    first check: its preserved images dip (trouser, pullover and ankle boot at 0.4 to 0.7 of the
    original's share from step 75 to 475) and mostly recover by its end (0.64 to 1.08 in erase's
    check; judged retention 4.2 points below the original's without the guard in
    ``diffusion-cpu.md``), which a rule that keeps no step past its guard cannot follow: under the
    average it stopped at step 50 and kept step 25, which had already lost 8.4 points of judged
    retention (erasure 56%); ESD under it erased 99% and lost 4.8 points, concept ablation 95%
    and 7.6 points. Hence opt-in. A guard that errs towards keeping the preserved concepts; ``verify()`` with a
    judge is the evidence."""

    name = "concept"
    measures_splits = False

    def __init__(self, anchor: str = "", target: float = 0.1, guard: float = PRESERVE_GUARD, checks: int = 20,
                 grow: float = 10.0, max_lr_growth: float = 1000.0, probes: int = 16, steps: int = 20,
                 attack=None, shift: str = "direction", images: bool = False, guidance_scale: float = 5.0,
                 kept: float = IMAGE_GUARD_KEPT, floor: float = IMAGE_GUARD_FLOOR, n: int = 16):
        if checks < 1 or probes < 1 or steps < 1 or grow < 1.0 or max_lr_growth < 1.0 or guard <= 0:
            raise ConfigError("ConceptStopping: expected checks, probes, steps >= 1, grow and max_lr_growth >= 1 "
                              f"and guard > 0, got checks={checks}, probes={probes}, steps={steps}, grow={grow}, "
                              f"max_lr_growth={max_lr_growth}, guard={guard}.")
        self.anchor, self.target, self.guard, self.checks = anchor, target, guard, checks
        self.grow, self.max_lr_growth, self.probes, self.steps = grow, max_lr_growth, probes, steps
        if shift not in ("direction", "prediction"):
            raise ConfigError(f"ConceptStopping: expected shift 'direction' or 'prediction', got {shift!r}.")
        self.attack, self.shift = attack, shift
        if not isinstance(images, bool) or guidance_scale <= 0 or not 0 < kept <= 1 or not 0 <= floor <= kept or n < 1:
            raise ConfigError(f"ConceptStopping: expected images True or False, guidance_scale > 0, 0 < kept <= 1, "
                              f"0 <= floor <= kept and n >= 1, got images={images!r}, guidance_scale={guidance_scale}, "
                              f"kept={kept}, floor={floor}, n={n}.")
        self.images, self.guidance_scale, self.kept, self.floor, self.n = images, guidance_scale, kept, floor, n

    def judging_images(self, guidance_scale: float) -> "ConceptStopping":
        """A copy of this rule that also judges the preserved prompts' images (``images=True``)
        sampled at ``guidance_scale``."""
        rule = copy.copy(self)
        rule.images, rule.guidance_scale = True, guidance_scale
        return rule

    def _kept(self, model):
        """What the guard compares on the preserved prompts' probes: the conditioning direction,
        or (``shift="prediction"``) the conditional noise prediction itself."""
        if self.shift == "direction":
            return conditioning_direction(model, *self.k_probe, "")
        return conditional_prediction(model, *self.k_probe)

    def start(self, ctx):
        super().start(ctx)
        model = ctx.adapter.model
        seed = ctx.config.seed if ctx.config.seed is not None else 0
        g = torch.Generator().manual_seed(seed)
        concepts, keep = list(dict.fromkeys(loader_prompts(ctx.val["forget"]))), loader_prompts(ctx.val.get("retain"))
        self.c_probe = drawn_and_noised(model, concepts, self.probes, self.steps, g)
        self.c_ref = conditioning_direction(model, *self.c_probe, self.anchor)
        self.k_probe = drawn_and_noised(model, list(dict.fromkeys(keep)), self.probes, self.steps, g) if keep else None
        self.k_ref = conditioning_direction(model, *self.k_probe, "") if keep else None
        self.k_pred = self._kept(model) if keep else None
        self.best = math.inf
        self.lr_scale, self.ceiling = 1.0, self.max_lr_growth if keep else 1.0
        self.grown, self.backoffs, self.base, self.peak = 0, 0, None, 1.0
        self.attacked = None                        # concept_left under the latest attack
        self.judge = None
        if self.images:
            if not keep:
                raise DataError("ConceptStopping(images=True) judges the preserved prompts' images: pass preserve=[...] "
                                "(retain prompts), or leave images off.")
            # noise of its own (seed + 100): erase's check afterwards draws from seeds 1 and 2
            self.judge = SelfJudge(model, [concepts[0], *dict.fromkeys(keep)], n=self.n, seed=seed + 100,
                                   guidance_scale=self.guidance_scale, unscored=[self.anchor])

    def eval_every(self, steps_per_epoch, n_val, batch):
        return max(1, self.ctx.total // self.checks)

    def measure(self, step, stats, m):
        model = self.ctx.adapter.model
        was = model.training
        model.eval()
        try:
            m["concept_left"] = share_left(conditioning_direction(model, *self.c_probe, self.anchor), self.c_ref)
            soft = self.attack() if self.attack is not None else None
            if soft is not None:
                m["concept_left_attacked"] = share_left(
                    conditioning_direction(model, *self.c_probe, self.anchor, soft=soft), self.c_ref)
            if self.k_probe is not None:
                m["preserve_shift"] = largest_shift(self._kept(model), self.k_pred, self.k_ref, self.k_probe[2])
            if self.judge is not None:
                concept, kept = self.judge.drawn(model)
                if kept:
                    m["preserve_drawn"] = min(kept.values())
                    m["preserve_drawn_mean"] = sum(min(r, 1.0) for r in kept.values()) / len(kept)
                if concept is not None:
                    m["concept_drawn"] = concept
        finally:
            model.train(was)

    def decide(self, step, m):
        d, left, shift = Decision(), m["concept_left"], m.get("preserve_shift", 0.0)
        drawn, mean = m.get("preserve_drawn", 1.0), m.get("preserve_drawn_mean", 1.0)
        if shift > self.guard or mean < self.kept or drawn < self.floor:
            d.restore = True
            if self.grown and not self.backoffs:
                self.backoffs, self.lr_scale = 1, self.lr_scale / self.grow
                self.ceiling, self.base, d.lr_scale = self.lr_scale, (step, self.best), self.lr_scale
                self.ctx.history["backoffs"].append({"step": step, "restored_step": self.best_step,
                                                     "lr": self.ctx.config.lr * self.lr_scale})
                return d
            bars = [(shift > self.guard, "preserve_shift", f"{shift:.2f} > {self.guard}"),   # the first that tripped
                    (mean < self.kept, "preserve_drawn_mean", f"{mean:.2f} < {self.kept} (self-judged images)"),
                    (drawn < self.floor, "preserve_drawn", f"{drawn:.2f} < {self.floor} (self-judged images)")]
            metric, past = next((name, f"{name} {text}") for tripped, name, text in bars if tripped)
            d.stop = Stop(StopKind.GUARD, f"concept: {past} at step {step}", restored_step=self.best_step,
                          metric=metric)
            return d
        if self.attack is not None:                 # adversarial training: its schedule, the latest step kept
            self.best, self.best_step, d.improved = left, step, True
            self.attacked = m.get("concept_left_attacked", self.attacked)
        elif left < self.best - 1e-9:
            self.best, self.best_step, d.improved = left, step, True
        if left <= self.target and self.attack is None:
            d.stop = Stop(StopKind.TARGET, f"concept: concept_left {left:.2f} <= {self.target} at step {step}",
                          metric="concept_left")
            return d
        if self.base is None:
            self.base = (step, left)
            return d
        s0, l0 = self.base
        rate = (l0 - left) / max(1, step - s0)
        if left - rate * (self.ctx.total - step) > self.target and self.lr_scale * self.grow <= self.ceiling * (1 + 1e-9):
            self.lr_scale *= self.grow
            self.grown, self.peak = self.grown + 1, max(self.peak, self.lr_scale)
            self.base, d.lr_scale = (step, left), self.lr_scale
            self.ctx.history["backoffs"].append({"step": step, "restored_step": None,
                                                 "lr": self.ctx.config.lr * self.lr_scale})
        return d

    def finish(self, step, stop):
        if stop is not None and stop.kind is StopKind.DIVERGED:
            return stop
        stop = super().finish(step, stop)
        stop.restored_step = self.best_step
        if self.attack is None:
            stop.add(f"kept step {self.best_step} (concept_left {self.best:.2f})")
        else:
            attacked = "no attack yet" if self.attacked is None else f"under the latest attack {self.attacked:.2f}"
            stop.add(f"kept step {self.best_step}, the latest within the guard (concept_left {self.best:.2f}; "
                     f"{attacked})")
        if self.grown:
            times = "once" if self.grown == 1 else f"{self.grown} times"
            lr = self.ctx.config.lr
            stop.add(f"raised the learning rate {times}, to {lr * self.peak:.2g}" + (
                f", and went back to {lr * self.lr_scale:.2g} when the preserved prompts shifted" if self.backoffs else ""))
        elif self.k_probe is None:
            stop.add("the rate stayed as configured (no preserved prompts to guard a larger one with: pass preserve=)")
        if self.judge is not None:
            stop.add(f"the guard judged the preserved prompts' images at every check (self-judged; a step is kept only "
                     f"while they keep {self.kept:.0%} of the original's share on average and each {self.floor:.0%})")
        return stop


class _ConceptFineTune(LossStrategy):
    """Fine-tuning methods for diffusion models: at most ``iterations`` steps against the frozen
    original (``self.reference``), under :class:`ConceptStopping` unless ``stopping`` is given
    (``"none"``: the paper's fixed schedule)."""

    supports = ("diffusion",)
    uses_retain = False

    def stopping_policy(self, forget_loader, given):
        n = self.config.iterations
        return {"max_steps": n, "min_steps": n, "stopping": ConceptStopping(anchor=getattr(self.config, "anchor", ""))}

    def setup(self, forget_loader, retain_loader):
        self.reference = self.frozen_reference()

    @torch.no_grad()
    def original_eps(self, x_t, t, prompts):
        """The frozen original's noise prediction for ``prompts`` (its own text encoder embeds them)."""
        ref = self.reference.model
        return ref.eps(x_t, t, ref.encode(list(prompts)))

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


@register("strategy", "esd", aliases=("erasing_concepts", "concept_erasure", "esd_x", "esd_u"))
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
    limits = ("the paper's settings (lr 1e-5, 1000 steps, η 1) are for Stable Diffusion; on the coloured-squares model "
              "of tests/test_diffusion.py η 1 erased little at any rate: with the concept rule raising the rate and "
              "preserved prompts guarding it, red 0.91 -> 0.62 judged (concept_left 0.71, warned); tests use η 3 and "
              "lr 1e-3; on 16x16 Fashion-MNIST (benchmarks/results/diffusion-cpu.md, 3 seeds) its defaults erased "
              "96.3% with retention 73.4% against the original's 76.3%")

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

    def _partial(self, prompts, stop):
        """``(x_t, t)``: the model's own DDIM sample for ``prompts``, stopped after ``stop`` steps."""
        c = self.config
        with torch.no_grad():
            return self.model.generate(prompts, guidance_scale=c.start_guidance, steps=c.ddim_steps, stop_at=stop,
                                       generator=self.generator)

    def esd_inputs(self, prompts):
        """``(x_t, t, ε_θ*(x_t, c, t), target)`` of one ESD step: ``x_t`` at a step drawn uniformly
        from ``ddim_steps``, the frozen original's conditional prediction, and the negatively
        guided target (the original's own text encoder embeds the prompts)."""
        c = self.config
        x_t, t = self._partial(prompts, int(torch.randint(0, c.ddim_steps, (1,), generator=self.generator)))
        e_u, e_c = self.original_eps(x_t, t, [""] * len(prompts)), self.original_eps(x_t, t, prompts)
        return x_t, t, e_c, e_u - c.negative_guidance * (e_c - e_u)

    def forget_step(self, batch, batch_idx):
        _, prompts = self.adapter.split(batch)
        x_t, t, _, target = self.esd_inputs(prompts)
        return F.mse_loss(self.model.eps(x_t, t, self.model.encode(prompts)).float(), target.float())


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
    limits = ("on 16x16 Fashion-MNIST (benchmarks/results/diffusion-cpu.md, 3 seeds) its defaults erased 96.0% with "
              "retention 72.2% against the original's 76.3%; with the empty anchor (trained on unconditional images) it "
              "left the coloured-squares model's red in place at every rate the concept rule tried (concept_left "
              "0.88, warned); tests anchor to another concept, lr 1e-3, 80 steps")

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
        x_t, t, _ = m.noised(self.pool_latents[idx], g)
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
        erase, keep = loader_prompts(forget_loader), loader_prompts(retain_loader)
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
        concepts = loader_prompts(forget_loader)
        if not concepts:
            raise DataError("Expected at least one prompt naming the safety concept, got none.")
        adapter.model.safety = {"concept": ", ".join(dict.fromkeys(concepts)), **self.config.to_dict()}
        return f"safety guidance away from {adapter.model.safety['concept']!r} at sampling time (no weights changed)"


class _ImagePool:
    """``(latents, prompts)`` of a loader's ``(images, prompts)`` batches; prompt-only batches
    get ``per_prompt`` images generated by ``model`` at ``guidance_scale`` (seeded by ``generator``).
    ``generated[i]``: whether sample ``i`` was generated (not given by the caller)."""

    def __init__(self, model, loader, per_prompt: int, steps: int, generator, guidance_scale: float):
        lat, prompts, generated = [], [], []
        for batch in loader or ():
            images, ps = split_batch(batch)
            with torch.no_grad():
                if images is None:
                    for p in ps:
                        pairs = generated_pairs(model, [p], per_prompt, generator, steps, guidance_scale,
                                                batch=per_prompt)
                        lat.append(model.to_latents(torch.stack([img for img, _ in pairs])))
                        prompts += [p] * per_prompt
                        generated += [True] * per_prompt
                else:
                    lat.append(model.to_latents(images.to(model.device)))
                    prompts += list(ps)
                    generated += [False] * len(ps)
        self.latents = torch.cat(lat) if lat else None
        self.prompts = prompts
        self.generated = torch.tensor(generated, dtype=torch.bool)

    def __len__(self):
        return len(self.prompts)

    def sample(self, n: int, generator):
        """``n`` samples drawn with replacement: ``(latents, prompts, generated)``."""
        idx = torch.randint(0, len(self.prompts), (n,), generator=generator)
        return (self.latents[idx.to(self.latents.device)], [self.prompts[int(i)] for i in idx],
                self.generated[idx].to(self.latents.device))

    def loader(self, batch_size: int = 8):
        """The pool as ``(images, prompts)`` batches (pixel-space models: latents are images)."""
        return [(self.latents[i:i + batch_size], self.prompts[i:i + batch_size])
                for i in range(0, len(self.prompts), batch_size)]


@dataclass
class SalUnGenerationConfig(LossStrategyConfig):
    """The paper's class-wise setting on Stable Diffusion: ``lr`` 1e-5 (Adam), 5 epochs of
    batch 8 over the forget images (here ``iterations`` 500 steps of ``batch_size`` 8),
    ``sparsity`` 0.5 (the mask keeps half of the UNet's weights), ``retain_weight`` α 0.5 (their
    README's command; with the distillation target below, on the 16×16 Fashion-MNIST model,
    1.0 kept more retention, 72.9% and 72.4% on seeds 0 and 1 against 65.7% on seed 0 at 0.5,
    originals 74.9% and 74.7%, but on the coloured squares of the tests it cost blue 0.19 of its
    judged presence where 0.5 cost nothing, so the default stays the paper's).
    ``anchor``: the concept the forget images are remapped to (their code
    uses the next class's prompt; "" maps them to the unconditional prediction);
    ``images_per_prompt``: images generated by the original model for each forget or preserve
    prompt given without images (their NSFW setting generates its forget images likewise), at
    classifier-free guidance ``pool_guidance`` (1: the model's own conditional distribution;
    on the 16×16 Fashion-MNIST model, seed 0, with the DDPM retain target, 1 kept 51.4% retention
    where 5 kept 41.9% and the original had 74.9%; the default stays 5, the adapter's sampling
    default).

    ``retain_target``: what the retain term fits on each retain image. ``"data"``: the noise
    (the paper's DDPM loss, for real retain images); ``"original"``: the untouched original's
    noise prediction for the same noised image and prompt (distillation); ``"auto"`` (default):
    ``"data"`` for images the caller gave and ``"original"`` for images generated from preserve
    prompts. The DDPM loss on the original's own samples fits the model to those samples (at
    ``pool_guidance``, with their defects) rather than to the original: on the 16×16
    Fashion-MNIST model, seed 0, α 0.5, it kept 41.9% retention with KID 26.8 to the original's
    images, the distillation target 65.7% with KID 1.5 (original 74.9%). The distillation term
    is zero at the start and has no sampling noise in its target, so the same α weighs a
    smaller, steadier term than the paper's DDPM loss: α values are not comparable across
    the two targets.

    ``hold_anchor`` (default True): add ``α ‖ε_θ(x_t, c', t) − ε_θo(x_t, c', t)‖²`` on the
    noised forget images, holding the anchor's prediction, the remapping's target, where the
    original had it. In the paper's class-wise setting the anchor is another class, held by
    the retain term like every retained class; an anchor outside the preserved concepts
    (the default ``""``) is held by nothing, and as the shared weights move, the target moves
    with them. Measured at the defaults (without → with): on the README's coloured squares the
    concept rule stopped at step 125 on the guard with ``concept_left`` 0.90, red 0.97 → 0.66
    judged → ``concept_left`` 0.09 at step 150, preserved prompts' shift ≤ 0.04, red 0.44 with
    green 1.0 and blue 0.91 unchanged; on the tests' squares the guard stopped it at step 200
    with ``concept_left`` 0.51 (red 0.91 → 0.38, blue 0.81 → 0.84) → 0.08 at step 450 (red 0.47,
    blue 0.75, green unchanged); on 16×16 Fashion-MNIST (``benchmarks/results/diffusion-cpu.md``,
    3 seeds) erasure 93.3% → 94.0%, retention 67.9% → 72.4% (the original's 76.3%), KID to the
    original's images 1.19 → −0.13. The anchor's prediction comes from the forward pass that
    gives the remapping's target, so the term costs one frozen forward per step."""

    anchor: str = ""
    lr: float = 1e-5
    iterations: int = 500
    batch_size: int = 8
    sparsity: float = 0.5
    retain_weight: float = 0.5
    images_per_prompt: int = 32
    ddim_steps: int = 25
    pool_guidance: float = 5.0
    retain_target: str = "auto"
    hold_anchor: bool = True

    def validate(self) -> None:
        super().validate()
        self._check_positive("iterations", "batch_size", "images_per_prompt", "ddim_steps")
        self._check_positive("retain_weight", allow_zero=True)
        self._check_positive("pool_guidance")
        self._check_choice("retain_target", ("auto", "data", "original"))
        check_sparsity(self)


@register("strategy", "salun_generation", aliases=("salun_diffusion",))
class SalUnGeneration(_ConceptFineTune):
    """SalUn for text-to-image models: a weight-saliency mask ``|∇_θ L_DDPM(θ_o; D_f)| ≥ γ``
    (``sparsity`` of the UNet's weights), then, on the salient weights only,

        min_θ  E ‖ε_θ(x_t, c_f, t) − sg(ε_θ(x_t, c', t))‖²  +  α E_{D_r} ‖ε − ε_θ(x_t, c_r, t)‖²

    where ``x_t`` are noised forget images, ``c_f`` their prompt and ``c'`` the ``anchor`` (the
    "random label" of a generative model), and on retain images generated from preserve prompts
    ``ε`` is replaced by the original's ``ε_θo(x_t, c_r, t)``. Fan, Liu, Zhang, Wei, Wong & Liu,
    "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in Both Image Classification and
    Generation", ICLR 2024; as in their Stable Diffusion code, the remapped prediction comes
    from the model being trained (detached), the retain term is the DDPM loss on retain images
    with their prompts. Forget and preserve prompts given without images get images generated
    by the original model; on generated retain images the retain term's target is the
    original's noise prediction instead of the noise (``retain_target``, a deviation: fitting
    the model to its own samples' noise cost half the retention, see the config); the
    anchor's prediction on the forget images is held at the original's (``hold_anchor``, a
    deviation for anchors the retain term does not hold, see the config)."""

    config_class = SalUnGenerationConfig
    uses_retain = True  # the retain images are drawn from a pool built in setup (retain_step is None)
    needs_retain = True  # without preserved concepts the remapping takes every prompt with it (measured)
    limits = ("at its defaults under the concept rule: the coloured squares' red 0.91 -> 0.47 judged, green unchanged, "
              "blue 0.81 -> 0.75; on 16x16 Fashion-MNIST (benchmarks/results/diffusion-cpu.md, 3 seeds) 94.0% erasure "
              "with retention 72.4% against the original's 76.3% (4.0 points lost; 37.1% with the DDPM retain target, "
              "67.9% with the anchor not held); concept inversion and relearning bring the concept back as from ESD "
              "and UCE (relearning leaves 16.7% erasure), and the prompt search leaves 86.7% (ESD 88.3%, the "
              "retrained model 98.3%)")

    def setup(self, forget_loader, retain_loader):
        super().setup(forget_loader, retain_loader)
        c, g = self.config, self.generator
        ref = self.reference.model
        self.forget_pool = _ImagePool(ref, forget_loader, c.images_per_prompt, c.ddim_steps, g, c.pool_guidance)
        if not len(self.forget_pool):
            raise DataError("Expected forget data: prompts naming the concept or (images, prompts) batches.")
        self.retain_pool = (_ImagePool(ref, retain_loader, c.images_per_prompt, c.ddim_steps, g, c.pool_guidance)
                            if retain_loader else None)
        self.mask = saliency_mask(self.adapter, self.forget_pool.loader(c.batch_size), c.sparsity)
        self._hooks = mask_gradients(self.model, self.mask)

    def trainable_parameters(self):
        return list(self.model.unet.parameters())

    def forget_step(self, batch, batch_idx):
        c, m, g = self.config, self.model, self.generator
        x0, prompts, _ = self.forget_pool.sample(c.batch_size, g)
        x_t, t, _ = m.noised(x0, g)
        anchors = [c.anchor] * len(prompts)
        with torch.set_grad_enabled(torch.is_grad_enabled() and c.hold_anchor and c.retain_weight > 0):
            anchor_eps = m.eps(x_t, t, m.encode(anchors)).float()
        loss = F.mse_loss(m.eps(x_t, t, m.encode(prompts)).float(), anchor_eps.detach())
        if anchor_eps.requires_grad:                # the remapping's target held where the original had it
            loss = loss + c.retain_weight * F.mse_loss(anchor_eps, self.original_eps(x_t, t, anchors).float())
        if self.retain_pool is not None and c.retain_weight > 0:
            r0, rp, generated = self.retain_pool.sample(c.batch_size, g)
            r_t, rt, noise = m.noised(r0, g)
            loss = loss + c.retain_weight * F.mse_loss(m.eps(r_t, rt, m.encode(rp)).float(),
                                                       self.retain_targets(r_t, rt, rp, noise, generated))
        return loss

    def retain_targets(self, x_t, t, prompts, noise, generated):
        """Each retain sample's target (``retain_target``): the noise, or the original's prediction."""
        mode = self.config.retain_target
        to_original = generated if mode == "auto" else torch.full_like(generated, mode == "original")
        if not bool(to_original.any()):
            return noise.float()
        pred = self.original_eps(x_t, t, prompts).float()
        return torch.where(to_original.view(-1, *[1] * (noise.dim() - 1)), pred, noise.float())

    def release(self) -> None:
        for h in getattr(self, "_hooks", []):
            h.remove()
        self._hooks, self.mask, self.forget_pool, self.retain_pool = [], None, None, None
        super().release()


@dataclass
class AdvUnlearnConfig(ESDConfig):
    """The authors' defaults (Stable Diffusion v1.4): ``lr`` 1e-5, ``iterations`` 1000,
    ``train_method`` ``"text_encoder"`` (their finding: the text encoder is the module to
    unlearn for robustness and utility; the ESD choices work too), ``retain_weight`` γ 0.3
    (their script; the utility term on preserved prompts), ``attack_tokens`` 1 prefix token,
    ``attack_steps`` 30 of Adam at ``attack_lr`` 1e-3 (``fast_attack``: one signed step, their
    "fast AT"), a new attack every ``attack_every`` 1 step starting after ``warmup`` 200 steps,
    each initialised from the previous one (their "latest")."""

    lr: float = 1e-5
    iterations: int = 1000
    train_method: str = "text_encoder"
    retain_weight: float = 0.3
    attack_tokens: int = 1
    attack_steps: int = 30
    attack_lr: float = 1e-3
    attack_every: int = 1
    warmup: int = 200
    fast_attack: bool = False

    def validate(self) -> None:
        LossStrategyConfig.validate(self)
        self._check_positive("iterations", "ddim_steps", "attack_tokens", "attack_steps", "attack_lr", "attack_every")
        self._check_positive("negative_guidance", "start_guidance", "retain_weight", "warmup", allow_zero=True)
        self._check_choice("train_method", ("text_encoder", "xattn", "noxattn", "full"))


@register("strategy", "adv_unlearn", aliases=("advunlearn",))
class AdvUnlearn(ESD):
    """AdvUnlearn: adversarial training for robust concept erasure. A bi-level problem: the
    inner attack finds prefix token embeddings ``δ`` that make the model predict, for the
    concept, what the original predicted (``min_δ ‖ε_θ(x_t, c+δ, t) − ε_θ*(x_t, c, t)‖²``, the
    soft-prompt attack of UnlearnDiffAtk's family); the outer step trains ESD's target on the
    attacked prompt, plus a utility term keeping the model's predictions on preserved prompts
    equal to the original's:

        min_θ ‖ε_θ(x_t, c+δ*, t) − [ε_θ*(x_t, t) − η(ε_θ*(x_t, c, t) − ε_θ*(x_t, t))]‖²
              + γ ‖ε_θ(x_r, c_r, t) − ε_θ*(x_r, c_r, t)‖²

    Zhang, Chen, Jia, Zhang, Liu, Liu & Liu, "Defensive Unlearning with Adversarial Training
    for Robust Concept Erasure in Diffusion Models", NeurIPS 2024. ``x_t`` and ``x_r`` are
    sampled with the model being trained (DDIM to a random step, as ESD). Deviation: without
    preserved prompts (their COCO object prompts) the utility term uses the empty prompt."""

    config_class = AdvUnlearnConfig
    uses_retain = True  # preserved prompts feed the utility term inside forget_step (retain_step is None)
    limits = ("on 16x16 Fashion-MNIST (benchmarks/results/diffusion-cpu.md, 3 seeds, 1,000 steps each) its defaults "
              "erased 99.7% with retention 70.3% against the original's 76.3%, 90.0% left after the prompt search (the "
              "retrained model 98.3%), but concept inversion and relearning brought the concept back; slower than the "
              "other fine-tuning methods (805 s a seed on 2 CPU cores against 917 s of retraining)")

    def stopping_policy(self, forget_loader, given):
        """The concept rule for adversarial training: the rate may grow and the guard holds, but the
        run goes on to its ``iterations`` and keeps its latest step within the guard (stopped on
        the plain prompt's target, it once ended at step 150 of a 200-step warm-up, before any
        adversarial step); ``concept_left_attacked`` is recorded at every check."""
        policy = super().stopping_policy(forget_loader, given)
        policy["stopping"] = ConceptStopping(anchor=getattr(self.config, "anchor", ""),
                                             attack=lambda: getattr(self, "soft", None))
        return policy

    def setup(self, forget_loader, retain_loader):
        super().setup(forget_loader, retain_loader)
        self.keep = loader_prompts(retain_loader) or [""]
        self.soft, self.step = None, 0

    def trainable_parameters(self):
        if self.config.train_method != "text_encoder":
            return super().trainable_parameters()
        self.model.text_encoder.requires_grad_(True)
        return list(self.model.text_encoder.parameters())

    def forget_step(self, batch, batch_idx):
        _, prompts = self.adapter.split(batch)
        c, m, g = self.config, self.model, self.generator
        x_t, t, e_c, target = self.esd_inputs(prompts)
        if self.step >= c.warmup and (self.step - c.warmup) % c.attack_every == 0:
            init = self.soft if self.soft is not None else random_token_embeddings(m, c.attack_tokens, g)
            self.soft = optimise_soft_tokens(
                lambda s: F.mse_loss(m.eps(x_t, t, m.encode(prompts, soft=s)).float(), e_c.float()),
                init, c.attack_steps, c.attack_lr, sign=c.fast_attack)
        self.step += 1
        loss = F.mse_loss(m.eps(x_t, t, m.encode(prompts, soft=self.soft)).float(), target.float())
        if c.retain_weight > 0:
            keep = [self.keep[int(torch.randint(0, len(self.keep), (1,), generator=g))]]
            x_r, t_r = self._partial(keep, int(torch.randint(0, c.ddim_steps, (1,), generator=g)))
            e_r = self.original_eps(x_r, t_r, keep)
            loss = loss + c.retain_weight * F.mse_loss(m.eps(x_r, t_r, m.encode(keep)).float(), e_r.float())
        return loss

    def release(self) -> None:
        if self.adapter is not None and self.config.train_method == "text_encoder":
            self.model.text_encoder.requires_grad_(False)
        self.soft = self.keep = None
        super().release()
