"""``DiffusionUnlearner``: erase a concept from a text-to-image diffusion model."""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..core.exceptions import ConfigError, DataError
from ..core.stopping import StopKind
from ..core.strategy import OneShotStrategy
from ..models.diffusion import TextToImage, loader_prompts
from .erasus_unlearner import ErasusUnlearner
from .saving import _version


def _prompt_list(prompts, what: str):
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise DataError(f"Expected {what} as a non-empty string or a non-empty list of non-empty strings, got "
                        f"{prompts!r}.")
    return prompts


#: what the messages suggest instead of a strategy not made for diffusion models
ERASURE_METHODS = "a concept-erasure method (esd, uce, concept_ablation, salun, adv_unlearn, sld)"


#: at most this many preserved prompts (the first distinct ones of the retain data) have their
#: images judged by :meth:`DiffusionUnlearner.fit`'s check: 64 generated images each
CHECK_PRESERVED = 8


def made_for_diffusion(strategy) -> bool:
    """Whether ``strategy`` is a concept-erasure method (it declares the diffusion family and
    takes prompts) rather than a model-agnostic one trained on generated images."""
    return "diffusion" in getattr(strategy, "supports", ())


def concept_rule(strategy):
    """The :class:`~erasus.strategies.diffusion.ConceptStopping` a run of ``strategy`` is under
    by default in :meth:`DiffusionUnlearner.erase` (the model-agnostic losses: one watching the
    predictions themselves), or None: one-shot edits and inference-time guidance have no run to
    stop."""
    from ..strategies.diffusion import ConceptStopping

    if isinstance(strategy, OneShotStrategy):
        return None
    if not made_for_diffusion(strategy):
        return ConceptStopping(shift="prediction")
    rule = strategy.stopping_policy(None, {}).get("stopping")
    return rule if isinstance(rule, ConceptStopping) else None


def image_guard_refused(strategy) -> Optional[str]:
    """Why ``erase(image_guard=True)`` cannot guard ``strategy``'s run (None when it can)."""
    if concept_rule(strategy) is not None:
        return None
    return (f"image_guard guards a fine-tuning run, and {strategy.registered_name} has none (a one-shot edit or "
            "inference-time guidance): erase's check judges its images afterwards. Leave image_guard out, or use "
            "strategy='esd', 'concept_ablation', 'salun' or 'adv_unlearn'")


def missing_preserve(strategy) -> Optional[str]:
    """Why ``strategy`` cannot erase without prompts to preserve (None when it can): the
    methods with a retain term, and the model-agnostic ones, which only the guard on the
    preserved prompts stops from ruining the model."""
    name = getattr(strategy, "registered_name", "") or type(strategy).__name__
    if getattr(strategy, "needs_retain", False):
        return f"{name} needs prompts of concepts to keep"
    if not made_for_diffusion(strategy):
        return (f"{name} trains on images of the concept with a loss not made for diffusion models, and with no "
                "prompts to preserve nothing stops it from ruining the rest of the model (gradient ascent and NPO on "
                "the coloured squares of the tests: every prompt drew red); the stopping rule guards the preserved "
                f"prompts' noise predictions. Or use {ERASURE_METHODS}")
    return None


class DiffusionUnlearner(ErasusUnlearner):
    """The :class:`ErasusUnlearner` API for text-to-image diffusion models, plus
    :meth:`erase` (a concept given as prompts) and :meth:`generate`::

        unl = DiffusionUnlearner(pipe_or_model_or_path, strategy="esd")
        unl.erase("a photo of a sneaker", preserve=["a photo of a shirt"])
        images = unl.generate(["a photo of a sneaker"], seed=0)
        unl.save_pretrained("sneaker-erased")

    ``model``: a :class:`~erasus.models.diffusion.TextToImage`, a diffusers pipeline, or a
    folder / Hub name (:meth:`TextToImage.from_pretrained`). Strategies: ``esd`` (default:
    Gandikota et al., ICCV 2023), ``uce``, ``sld``, ``concept_ablation``, ``salun`` (SalUn's
    generative variant, ``salun_generation``) and ``adv_unlearn`` (robust to prompt attacks;
    ``erasus list strategy``); the
    model-agnostic loss-based ones (gradient ascent and the like) run on ``(images, prompts)``
    forget data through the noise-prediction loss; :meth:`erase` gives them the images the
    model draws for the concept and, with ``preserve`` (required for them), runs them under
    :class:`~erasus.strategies.diffusion.ConceptStopping` with a guard on the preserved prompts'
    noise predictions. On the tests' coloured squares none of them erased red before that guard
    stopped it (they keep the original and warn): their losses damage every concept alike,
    which is what the concept-erasure methods were made to avoid. The caller's model is
    untouched unless ``inplace=True``."""

    def __init__(self, model: Union[nn.Module, Any, str, Path], strategy: Union[str, Any] = "esd", **kwargs):
        if isinstance(model, (str, Path)):
            model = TextToImage.from_pretrained(model)
        elif not isinstance(model, nn.Module) and hasattr(model, "unet"):
            model = TextToImage.from_pipeline(model)
        if not isinstance(model, TextToImage):
            raise ConfigError(f"Expected a text-to-image diffusion model (a TextToImage, a diffusers pipeline or its "
                              f"folder), got {type(model).__name__}.")
        if isinstance(strategy, str) and strategy.lower() in ("salun", "saliency_unlearning"):
            strategy = "salun_generation"  # SalUn's generative variant (the classifier one relabels classes)
        super().__init__(model, strategy=strategy, **kwargs)
        self.concept_: Optional[list] = None

    def erase(self, concept: Union[str, Sequence[str]], anchor: Optional[str] = None, preserve: Sequence[str] = (),
              check: bool = True, images_per_prompt: int = 32, guidance_scale: float = 5.0, image_guard: bool = False,
              **kwargs):
        """Erase ``concept`` (one prompt or several naming it). ``anchor``: what the concept should
        become, for methods that map it somewhere (``uce``, ``concept_ablation``; default ""); ``preserve``: prompts of
        concepts that must stay as they are (used by methods with a preservation term, and
        checked to be disjoint from the concept). Other keyword arguments go to ``fit``.

        The concept-erasure methods (``esd``, ``uce``, ``sld``, ...) take the prompts. The
        model-agnostic ones, which train on images (``gradient_ascent``, ``npo``, ...), get
        ``images_per_prompt`` images the model generates for each prompt of the concept (the
        forget set: what the model draws for it) and of ``preserve`` (the retain set), seeded by
        ``seed`` (a ``fit`` argument, default 0); to erase given images, call ``fit`` with
        ``(images, prompts)`` batches.

        ``check``: afterwards, measure how much of the concept's conditioning the weights keep
        (:func:`~erasus.metrics.diffusion.concept_left` against the untouched original, on the
        first prompt: 1 unchanged, 0 the anchor) into ``result.metrics["concept_left"]`` and
        the stop reason, with a warning when more than half is left (the run barely moved the
        weights that carry the concept: the papers' settings are for Stable Diffusion v1.4);
        with ``preserve``, also what the images say, judged by the original's own generations
        (:func:`~erasus.metrics.diffusion.self_judged`, at ``guidance_scale``, the guidance the
        model is sampled with): ``result.metrics["concept_drawn"]`` (the share of the concept's
        images that still look like the original's images of it, over the original's own share;
        a warning at :data:`~erasus.metrics.diffusion.DRAWN_WARN` or more) and
        ``["preserve_drawn"]`` (the same for the preserved prompts, the lowest; a warning below
        :data:`~erasus.metrics.diffusion.KEPT_WARN`). On 8×8 grayscale stripes ESD at its
        defaults destroyed vertical stripes (judged 0.78 → 0.00) while the stopping rule's
        guard held: only this check saw it (``scripts/diffusion_stripes_probe.py``). It costs 64
        generated images per prompt (and 32 of the anchor) (``result.timings["check_s"]``; 83 s for ten prompts of the
        16×16 Fashion-MNIST model on 2 CPU cores). Skipped for an
        in-place run (no copy of the original is kept); ``concept_left`` also for methods that
        change no weights (SLD), whose images are checked with their safety guidance.
        ``guidance_scale`` is also the guidance of the images generated for the model-agnostic
        methods.

        ``image_guard``: the stopping rule (the fine-tuning methods' and the model-agnostic
        losses' :class:`~erasus.strategies.diffusion.ConceptStopping`) also judges the preserved
        prompts' images at each of its checks, the way the check above does, and keeps no step
        whose preserved prompts' images fell below
        :data:`~erasus.strategies.diffusion.IMAGE_GUARD_KEPT` of the original's share on average
        (a margin over the check's bar), or one prompt's below
        :data:`~erasus.strategies.diffusion.IMAGE_GUARD_FLOOR`. On the stripes ESD at its defaults then kept vertical stripes
        (judged 0.78 → 0.75, against 0.00 without it) and erased less (horizontal 0.56 → 0.34);
        SalUn stopped at its first check with the original (see ConceptStopping). It costs 16
        generated images per prompt at each check. Needs ``preserve``; one-shot edits (UCE, ...)
        and SLD have no run to guard."""
        prompts = _prompt_list(concept, "concept")
        keep = _prompt_list(preserve, "preserve") if len(preserve) else []
        self._check_request(prompts, keep, image_guard, kwargs)
        why = missing_preserve(self.strategy) if not keep else None
        if why:
            raise DataError(f"{why}. Pass preserve=['a photo of ...', ...].")
        if anchor is not None and not hasattr(self.strategy.config, "anchor"):
            raise ConfigError(f"{self.strategy.registered_name} maps the concept nowhere in particular and takes "
                              "no anchor; leave anchor out, or use strategy='uce'.")
        generic = not made_for_diffusion(self.strategy)  # trained on generated images, under Erasus's guards
        if anchor is not None:
            self.strategy.config = self.strategy.config.replace(anchor=anchor)
        if not generic:  # a concept-erasure method: prompts
            forget = DataLoader(prompts, batch_size=1, shuffle=True, collate_fn=list)
            retain = (DataLoader(keep, batch_size=max(1, min(8, len(keep))), shuffle=True, collate_fn=list)
                      if keep else None)
        else:
            forget, retain = self._generated_loaders(prompts, keep, images_per_prompt, kwargs.get("seed", 0),
                                                     guidance_scale)
        return self._guarded_run(forget, retain, None, prompts, keep, generic, check, guidance_scale, image_guard,
                                 kwargs)

    def fit(self, forget_data, retain_data=None, holdout_data=None, *, check: bool = True,
            guidance_scale: float = 5.0, image_guard: bool = False, **kwargs):
        """Unlearn the concept that ``forget_data``'s prompts name, keeping ``retain_data``'s, as
        the specification writes it (``diff.fit(forget_data=artist_loader,
        retain_data=general_loader)``): batches of ``(images, prompts)``, ``{"pixel_values",
        "prompt"}`` or lists of prompts. The concept-erasure methods read the prompts; the
        model-agnostic losses train on the given images.

        The run is guarded and checked as :meth:`erase`'s: with retain data the model-agnostic
        losses run under the concept's stopping rule (their fixed schedule made gradient ascent
        turn every green square of the tests' coloured squares into red while red stayed red,
        measured), and afterwards ``check`` measures ``concept_left`` on the first forget prompt
        and, with retain data, the self-judged images of the first
        :data:`CHECK_PRESERVED` distinct retain prompts, with the same warnings (ESD called this
        way on the squares kept 84% of red's conditioning, and said nothing before). A one-shot
        edit not made for diffusion models is undone past the preserved prompts' guard unless
        ``guard=False``. ``check``,
        ``guidance_scale`` and ``image_guard`` as in :meth:`erase`; other keyword arguments go to
        the trainer (:meth:`ErasusUnlearner.fit`)."""
        from ..utils.data import check_nonempty

        prompts = list(dict.fromkeys(loader_prompts(check_nonempty(forget_data, "forget"))))
        keep = (list(dict.fromkeys(loader_prompts(check_nonempty(retain_data, "retain"))))
                if retain_data is not None else [])
        self._check_request(prompts, keep, image_guard, kwargs)
        generic = not made_for_diffusion(self.strategy)
        return self._guarded_run(forget_data, retain_data, holdout_data, prompts, keep, generic, check,
                                 guidance_scale, image_guard, kwargs)

    def _guarded_run(self, forget, retain, holdout, prompts, keep, generic: bool, check: bool, guidance_scale: float,
                     image_guard: bool, kwargs):
        """:meth:`erase`'s and :meth:`fit`'s run: the concept's stopping rule for the model-agnostic
        losses (with preserved prompts) or with images judged, the guard of a one-shot edit, and the
        check afterwards."""
        given = kwargs.get("stopping", "auto")
        rule = concept_rule(self.strategy) if given == "auto" else given
        if given == "auto" and rule is not None and keep and (generic or image_guard):
            # the model-agnostic losses get the concept's rule, as the fine-tuning methods have
            kwargs["stopping"] = rule.judging_images(guidance_scale) if image_guard else rule
        self.concept_ = prompts
        result = super().fit(forget, retain, holdout, **kwargs)
        if (generic and keep and kwargs.get("guard", True) and isinstance(self.strategy, OneShotStrategy)
                and self._guard_edit(result, keep)):
            return result
        if check:
            t0 = time.perf_counter()
            used = kwargs.get("stopping", rule)  # the run's rule (None: no run to guard)
            guarded = None if used is None else getattr(used, "images", False)
            self._check(result, prompts[0], keep[:CHECK_PRESERVED], generic, guidance_scale, guarded)
            result.timings["check_s"] = time.perf_counter() - t0
            if not keep:
                # measured (a probe on the benchmark's cached seed-0 Fashion-MNIST model): UCE called so erased
                # the sneakers and cost the other classes 13 points of judged retention, which nothing here saw
                result.stop.add("nothing preserved: no prompt guarded the run or was checked afterwards")
                warnings.warn(f"{result.strategy}: no prompts to preserve were given, so nothing guarded the run or "
                              "checked the model's other concepts afterwards, and an edit that erases the concept can "
                              "damage them unseen: pass preserve=[prompts of concepts to keep] (erase) or retain_data "
                              "(fit), and check with verify().")
        return result

    def _check_request(self, prompts, keep, image_guard: bool, kwargs) -> None:
        """What erase and fit check before any work: the prompts to erase and to keep are
        disjoint, and ``image_guard`` can be honoured."""
        clash = sorted(set(prompts) & set(keep))
        if clash:
            raise DataError(f"Prompts both erased and preserved: {clash}. Expected disjoint lists.")
        if image_guard:
            self._check_image_guard(keep, kwargs.get("stopping", "auto"))

    def _check_image_guard(self, keep, given) -> None:
        """``image_guard`` needs preserved prompts and a run under the concept rule."""
        if not keep:
            raise DataError("image_guard judges the preserved prompts' images: pass preserve=['a photo of ...', ...].")
        if given != "auto":
            raise ConfigError(f"image_guard sets the stopping rule, and stopping={given!r} was given: leave one out "
                              "(or pass stopping=ConceptStopping(images=True, ...)).")
        why = image_guard_refused(self.strategy)
        if why:
            raise ConfigError(f"{why}.")

    def _guard_edit(self, result, keep) -> bool:
        """A one-shot edit not made for diffusion models (SSD, task arithmetic, pruning) has no
        stopping rule: it is undone when it moved the preserved prompts' noise predictions past
        :data:`~erasus.models.diffusion.PRESERVE_GUARD` (SSD on the coloured squares: red
        0.91 → 0.00 judged, and green 0.97 → 0.19 with it). Returns whether it was undone."""
        from ..models.diffusion import PRESERVE_GUARD, preserve_shift

        if self.original_model is self.model:
            result.stop.add("preserve_shift not measured: an in-place run keeps no copy of the original")
            return False
        moved = preserve_shift(self.model, self.original_model, keep, seed=1)
        result.metrics["preserve_shift"] = moved
        if moved <= PRESERVE_GUARD:
            result.stop.add(f"preserve_shift {moved:.2f}")
            return False
        self.model.load_state_dict(self.original_model.state_dict())
        result.stop.add(f"undone: the edit moved the preserved prompts' noise predictions by {moved:.2f} of what they "
                        f"add (more than {PRESERVE_GUARD}), so the model was left as it was: use {ERASURE_METHODS}")
        warnings.warn(f"{result.strategy}: {result.stop_reason}")
        return True

    def _generated_loaders(self, prompts, keep, per_prompt: int, seed, guidance_scale: float):
        """``(images, prompts)`` loaders of what the model generates for the concept and for
        the prompts to keep (:func:`~erasus.models.diffusion.generated_pairs`)."""
        from ..models.diffusion import generated_pairs

        if isinstance(per_prompt, bool) or not isinstance(per_prompt, int) or per_prompt < 1:
            raise ConfigError(f"Expected images_per_prompt >= 1 (images generated per prompt), got {per_prompt!r}.")
        seed = 0 if seed is None else int(seed)
        g = torch.Generator().manual_seed(seed)
        forget = generated_pairs(self.model, prompts, per_prompt, g, guidance_scale=guidance_scale)
        retain = generated_pairs(self.model, keep, per_prompt, g, guidance_scale=guidance_scale) if keep else None
        loader = lambda data: DataLoader(data, batch_size=min(8, len(forget)), shuffle=True,  # noqa: E731
                                         generator=torch.Generator().manual_seed(seed))
        return loader(forget), (loader(retain) if retain else None)

    def _check(self, result, prompt: str, keep, generic: bool, guidance_scale: float, guarded: Optional[bool]) -> None:
        """erase's check against the untouched original: ``concept_left`` (the weights), then,
        with prompts to preserve, :func:`~erasus.metrics.diffusion.self_judged` (the images)."""
        from ..metrics.diffusion import CONCEPT_LEFT_WARN, concept_left
        from ..strategies.diffusion import IMAGE_GUARD_METRICS

        if self.original_model is self.model:
            result.stop.add("not checked: an in-place run keeps no copy of the original")
            return
        left = None
        if getattr(self.model, "safety", None):
            result.stop.add("the weights are the original's: the concept is erased only when sampling with the "
                            "safety guidance saved with the model")
        else:
            # probes other than the stopping rule's (seed 0): an independent measurement
            left = concept_left(self.model, self.original_model, prompt, getattr(self.strategy.config, "anchor", ""),
                                seed=1)
            result.metrics["concept_left"] = left
            result.stop.add(f"concept_left {left:.2f} (1: conditioning unchanged, 0: the prompt acts as the anchor)")
        drawn = self._check_images(result, prompt, keep, guidance_scale, guarded) if keep else None
        still = []
        if left is not None and left > CONCEPT_LEFT_WARN:
            still.append(f"the weights keep {left:.0%} of its conditioning (concept_left {left:.2f}; 1 is the original)")
        if drawn is not None:
            still.append(f"{drawn:.0%} as many of its images as the original's still look like the original's images "
                         "of it (self-judged)")
        if not still:
            return
        params = result.config.get("params") or {}
        if drawn is not None and left is None:
            why = "the safety guidance steered its images too little: raise its strength (strategy_kwargs)"
        elif drawn is not None and left <= CONCEPT_LEFT_WARN:
            why = ("its conditioning moved, but the images did not follow far enough: more steps or a larger rate "
                   "(strategy_kwargs) may" + self._or_uce())
        elif generic and isinstance(self.strategy, OneShotStrategy):
            why = ("this edit, not made for diffusion models, barely touched the weights that carry the concept: "
                   f"raise its strength (strategy_kwargs) or use {ERASURE_METHODS}")
        elif isinstance(self.strategy, OneShotStrategy):
            why = ("the closed-form edit left the conditioning in place: check that the erased prompts name the "
                   "concept as the model was trained to see it, and lower its preserve_scale or lamb "
                   "(strategy_kwargs) if preserved prompts hold it")
        elif result.stop.kind is StopKind.GUARD:
            images = result.stop.metric in IMAGE_GUARD_METRICS
            what = "the preserved prompts' images (self-judged)" if images else "the preserved prompts' noise predictions"
            why = (f"its loss, not made for diffusion models, moved {what} past the stopping rule's guard before it "
                   f"erased anything, and the rule kept the last step within it; use {ERASURE_METHODS}" if generic else
                   f"{what} shifted past the stopping rule's guard first, and the rule went back to the last step "
                   "within it" + ("" if images else " (stopping=ConceptStopping(guard=...) allows more)"))
        else:
            why = (f"its rate and length (lr {params.get('lr')}, {params.get('iterations', result.steps)} "
                   "iterations) are the paper's for Stable Diffusion v1.4 and may be too small a change for this "
                   "model: raise them (strategy_kwargs), pass preserve=[...] so that the stopping rule may "
                   "raise the rate" + self._or_uce())
        warnings.warn(f"{result.strategy}: {prompt!r} is probably still generated: {'; '.join(still)}; {why}. Check "
                      "with verify().")

    def _is_uce(self) -> bool:
        from ..strategies.diffusion import UCE

        return isinstance(self.strategy, UCE)

    def _or_uce(self) -> str:
        """The advice to try UCE, for a run of another method."""
        return "" if self._is_uce() else ", or try strategy='uce'"

    def _check_images(self, result, prompt: str, keep, guidance_scale: float, guarded: Optional[bool]) -> Optional[float]:
        """The self-judged images of the concept and of the preserved prompts (into
        ``result.metrics`` and the stop reason; a warning when a preserved prompt's images no
        longer look like the original's). ``guarded``: whether the run's rule judged images
        already (None: no rule to judge them). Returns ``concept_drawn`` when it is
        :data:`~erasus.metrics.diffusion.DRAWN_WARN` or more (None otherwise)."""
        from ..metrics.diffusion import DISTINCT, DRAWN_WARN, KEPT_WARN
        from ..models.diffusion import SelfJudge

        anchor = getattr(self.strategy.config, "anchor", "")  # where the concept goes: its images join the references
        judge = SelfJudge(self.original_model, [prompt, *keep], seed=1, guidance_scale=guidance_scale, unscored=[anchor])
        drawn, kept = judge.drawn(self.model)
        undistinct = [p for p in judge.prompts if p not in kept and (p != prompt or drawn is None)]
        if undistinct:
            result.stop.add(f"self-judged images not compared for {undistinct}: the original's own images of them are "
                            f"not told apart from the others' (under {DISTINCT:.0%} land on their own prompt)")
        lost = {p: r for p, r in kept.items() if r < KEPT_WARN}
        if kept:
            result.metrics["preserve_drawn"] = min(kept.values())
            result.stop.add(f"preserved prompts' images self-judged as before: at least {min(kept.values()):.0%} of the "
                            "original's share")
        if lost:
            worst = ", ".join(f"{p!r} {r:.0%}" for p, r in sorted(lost.items(), key=lambda kv: kv[1]))
            if self._is_uce():
                fix = "raise its preserve_scale (strategy_kwargs) to hold the preserved prompts' projections harder"
            elif guarded is False:
                fix = ("erase(..., image_guard=True) makes the stopping rule judge them too and keep a step before the "
                       "damage" + self._or_uce())
            else:
                fix = "try strategy='uce'"
            warnings.warn(f"{result.strategy}: the images generated for preserved prompts no longer look like the "
                          f"original's ({worst} of the original's share land among the original's images of that "
                          "prompt, self-judged): the edit probably damaged them, although the run's guard held. "
                          f"Check with verify(); {fix}.")
        if drawn is None:
            return None
        result.metrics["concept_drawn"] = drawn
        result.stop.add(f"concept images self-judged as the original's: {drawn:.0%} of the original's share")
        return drawn if drawn >= DRAWN_WARN else None

    def generate(self, prompts: Union[str, Sequence[str]], seed: int = 0, guidance_scale: float = 5.0,
                 steps: int = 25, **kwargs):
        """Images (``[-1, 1]``) from the current model: see :meth:`TextToImage.generate`."""
        return self.model.generate(prompts, seed=seed, guidance_scale=guidance_scale, steps=steps, **kwargs)

    def verify(self, judge, label: int, others, *, gold_model=None, concept: Optional[str] = None,
               attack_images=None, **kwargs):
        """Judge the erasure (:func:`erasus.metrics.diffusion.erasure_report`): erasure,
        retention and the erasure left after a prompt search, concept inversion and relearning,
        for this model and, measured the same way, the original and ``gold_model`` (a model
        trained without the concept). ``judge``: a callable from images in ``[-1, 1]`` to class
        logits; ``label``: its class for the concept; ``others``: ``{prompt: class}`` of concepts
        to keep; ``concept``: the prompt judged (default: the first erased one)."""
        from ..metrics.diffusion import erasure_report

        concept = concept or (self.concept_[0] if self.concept_ else None)
        if concept is None:
            raise ConfigError("Which concept? Call erase() first or pass concept='a photo of ...'.")
        original = self.original_model if self.original_model is not self.model else None
        return erasure_report(self.model, judge, concept, label, others, original=original, gold_model=gold_model,
                              attack_images=attack_images, **kwargs)

    def model_card(self) -> str:
        r = self.result_
        if r is None:
            raise ConfigError("Nothing to describe yet: call erase() or fit() first.")
        return "\n".join([
            "---", "tags: [erasus, machine-unlearning, concept-erasure, diffusion]", "---", "",
            "# Concept-erased diffusion model", "",
            f"Produced with Erasus {_version()} on {time.strftime('%Y-%m-%d')}.", "",
            f"- method: `{r.strategy}`",
            f"- erased: {json.dumps(self.concept_) if self.concept_ else 'the forget data given to fit()'}",
            f"- steps: {r.steps}; stopped: {r.stop_reason}", "",
            "## Configuration", "", "```json", json.dumps(r.config, indent=1, default=str), "```", ""]) + "\n"

    def save_pretrained(self, path: Union[str, Path], overwrite: bool = False) -> Path:
        """The model's parts (safetensors), the settings Erasus added (e.g. SLD's safety
        guidance) and ``README.md`` (the model card), written atomically: an existing non-empty
        ``path`` is replaced only with ``overwrite=True``, and then holds the old or the new model
        at every moment. :meth:`TextToImage.from_pretrained` loads it back."""
        from ..utils.io import replace_dir

        card = self.model_card()

        def build(tmp: Path) -> None:
            self.model.save_pretrained(tmp)
            (tmp / "README.md").write_text(card)

        return replace_dir(build, Path(path), overwrite=overwrite)
