"""``VLMUnlearner`` (CLIP-style models) and ``MultimodalUnlearner.from_model`` (any family)."""
from __future__ import annotations

import copy
from typing import Any, Dict, Optional, Union

from torch import nn

from ..core.exceptions import ConfigError
from .erasus_unlearner import ErasusUnlearner
from .saving import SavesPretrained


class VLMUnlearner(SavesPretrained, ErasusUnlearner):
    """The :class:`ErasusUnlearner` API for vision-language models: contrastive ones (CLIP)
    and image-text-to-text ones (LLaVA, BLIP-2; see below)::

        vlm = VLMUnlearner(clip_model, strategy="modality_decoupling", class_prompts=prompt_ids)
        vlm.fit(forget_pairs, retain_pairs)
        vlm.evaluate(forget_pairs, retain_pairs, zero_shot={"forget": forget_images, "test": test_images},
                     gold_model=retrained)

    Forget and retain data are ``(pixel_values, input_ids[, attention_mask])`` pairs.
    ``class_prompts``: ``(C, L)`` token ids of one prompt per class, for zero-shot accuracy on
    ``(pixel_values, labels)`` data. Default strategy ``modality_decoupling``; the
    model-agnostic loss-based strategies also run (on each pair's CLIP loss).

    Image-text-to-text models (``LlavaForConditionalGeneration``, ``Blip2ForConditionalGeneration``)
    take causal-LM batches with ``pixel_values`` (:class:`~erasus.models.VisionLMAdapter`); the
    default is NPO on the answer tokens with **the vision side frozen** (vision tower and
    projector: only the language model and its output layer train), on a copy of the model
    unless ``inplace=True``; ``lora=True`` (or LoRA settings) trains LoRA adapters on the
    language side only."""

    card_title = "Unlearned vision-language model"
    card_tags = ("vision-language",)

    def __init__(self, model: nn.Module, strategy: Union[str, Any, None] = None, class_prompts=None,
                 lora=None, **kwargs):
        from ..models.causal_lm import is_vision_lm
        from ..models.clip import CLIPAdapter, is_clip
        from .llm_unlearner import through_lora

        self.vision_lm = isinstance(model, nn.Module) and is_vision_lm(model)
        if not isinstance(model, nn.Module) or not (is_clip(model) or self.vision_lm):
            raise ConfigError(f"Expected a vision-language model: CLIP-style (transformers CLIPModel or one with "
                              f"get_image_features, get_text_features and logit_scale) or image-text-to-text "
                              f"(LLaVA, BLIP-2); got {type(model).__name__}.")
        if self.vision_lm:
            if not kwargs.get("inplace"):
                model = copy.deepcopy(model)
                kwargs["inplace"] = True  # the copy is ours to change
            for n, p in model.named_parameters():
                if "language_model" not in n and "lm_head" not in n:
                    p.requires_grad_(False)
            self.lora, strategy, kw = through_lora(lora, strategy or "npo", kwargs.pop("strategy_kwargs", None))
            super().__init__(model, strategy=strategy, strategy_kwargs=kw, **kwargs)
            return
        if lora:
            raise ConfigError("lora=... is for image-text-to-text models; CLIP strategies train the towers directly.")
        super().__init__(model, strategy=strategy or "modality_decoupling", **kwargs)
        self.adapter = CLIPAdapter(self.model, class_prompts)

    def evaluate(self, forget_data, retain_data=None, *, zero_shot: Optional[Dict[str, Any]] = None,
                 gold_model: Optional[nn.Module] = None, ks=(1, 5)) -> Dict[str, Dict[str, float]]:
        """Retrieval recall@k on the forget and retain pairs, and zero-shot accuracy on each
        labelled loader of ``zero_shot`` (``{"forget": ..., "test": ...}``), for the unlearned
        model, the original (when the caller's model was left untouched) and ``gold_model``:
        ``{"unlearned": {...}, "original": {...}, "retrained": {...}}``. A model that forgot
        looks like the retrained one on the forget pairs and like the original elsewhere."""
        if self.vision_lm:
            raise ConfigError("evaluate() here measures CLIP retrieval and zero-shot accuracy; for an image-text-to-"
                              "text model compare answer NLLs with erasus.models.wrap(model).per_sample_loss.")
        from ..metrics.clip import retrieval_recall, zero_shot_accuracy
        from ..utils.data import check_nonempty
        from ..utils.misc import isolated_rng

        loaders = {"forget": check_nonempty(forget_data, "forget")}
        if retain_data is not None:
            loaders["retain"] = check_nonempty(retain_data, "retain")
        models = {"unlearned": self.model}
        if self.original_model is not self.model:
            models["original"] = self.original_model
        if gold_model is not None:
            models["retrained"] = gold_model
        out = {}
        with isolated_rng(0):
            for who, m in models.items():
                a = self.adapter.with_model(m)
                was = m.training
                m.eval()
                try:
                    row = {f"{split}_{k}": v for split, loader in loaders.items()
                           for k, v in retrieval_recall(a, loader, ks).items()}
                    for split, loader in (zero_shot or {}).items():
                        row[f"{split}_zero_shot_acc"] = zero_shot_accuracy(a, check_nonempty(loader, split))
                finally:
                    m.train(was)
                out[who] = row
        return out


class MultimodalUnlearner:
    """``MultimodalUnlearner.from_model(model)``: the unlearner for the model's family, as the
    specification's README shows: :class:`~erasus.unlearners.DiffusionUnlearner` for text-to-image
    models (a ``TextToImage`` or a diffusers pipeline), :class:`VLMUnlearner` for CLIP-style
    and image-text-to-text (LLaVA, BLIP-2) models, :class:`~erasus.unlearners.LLMUnlearner` for causal language models,
    :class:`~erasus.unlearners.AudioUnlearner` for audio classifiers and Whisper,
    :class:`~erasus.unlearners.VideoUnlearner` for video classifiers and :class:`ErasusUnlearner` for every other
    ``nn.Module`` (classifiers)."""

    def __init__(self, *args, **kwargs):
        raise TypeError("Use MultimodalUnlearner.from_model(model, ...): it returns the unlearner for the model's "
                        "family.")

    @staticmethod
    def from_model(model, **kwargs) -> ErasusUnlearner:
        from ..models import is_causal_lm, is_clip, is_text_to_image, is_vision_lm
        from .diffusion_unlearner import DiffusionUnlearner
        from .llm_unlearner import LLMUnlearner
        from .media_unlearner import AudioUnlearner, VideoUnlearner, is_audio_model, is_video_classifier

        if is_text_to_image(model) or (not isinstance(model, nn.Module) and hasattr(model, "unet")):
            return DiffusionUnlearner(model, **kwargs)
        if not isinstance(model, nn.Module):
            raise ConfigError(f"Expected a model: a torch.nn.Module (classifier, CLIP, causal LM) or a diffusers "
                              f"text-to-image pipeline, got {type(model).__name__}. Supported families: classifier, "
                              "causal LM, CLIP, LLaVA/BLIP-2, text-to-image diffusion, audio and video classifiers.")
        if is_clip(model) or is_vision_lm(model):
            return VLMUnlearner(model, **kwargs)
        if is_causal_lm(model):
            return LLMUnlearner(model, **kwargs)
        if is_audio_model(model):
            return AudioUnlearner(model, **kwargs)
        if is_video_classifier(model):
            return VideoUnlearner(model, **kwargs)
        return ErasusUnlearner(model, **kwargs)
