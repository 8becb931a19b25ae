"""Model adapters. ``wrap(model)`` picks the adapter for a model's family."""
from __future__ import annotations

from torch import nn

from .base import ModelAdapter
from .causal_lm import CausalLMAdapter, QACollator, VisionLMAdapter, is_causal_lm, is_vision_lm
from .classifier import ClassifierAdapter
from .clip import CLIPAdapter, CLIPWrapper, is_clip
from .diffusion import DiffusionAdapter, TextToImage, is_text_to_image
from .seq2seq_lm import (MaskedLMAdapter, MaskingCollator, Seq2SeqCollator, Seq2SeqLMAdapter, SpeechSeq2SeqAdapter,
                         is_masked_lm, is_seq2seq_lm, is_speech_seq2seq)
from .wrappers import LLaMAWrapper, LLaVAWrapper, StableDiffusionWrapper


def wrap(model, **kwargs) -> ModelAdapter:
    """Return the adapter for ``model`` (an adapter is returned unchanged).

    Hugging Face causal LMs (and PEFT wrappers of them) get :class:`CausalLMAdapter`,
    encoder-decoder LMs (T5, BART) :class:`Seq2SeqLMAdapter`, speech-to-text models (Whisper)
    :class:`SpeechSeq2SeqAdapter`, image-text-to-text models (LLaVA, BLIP-2) :class:`VisionLMAdapter`, masked LMs (BERT)
    :class:`MaskedLMAdapter`, text-to-image diffusion models (:class:`TextToImage`)
    :class:`DiffusionAdapter`, CLIP-style models :class:`CLIPAdapter` (``class_prompts=``
    for zero-shot logits); other ``nn.Module`` models are treated as classifiers
    (:class:`ClassifierAdapter`).
    """
    if isinstance(model, ModelAdapter):
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"Expected a torch.nn.Module or a ModelAdapter, got {type(model).__name__}.")
    if is_text_to_image(model):
        return DiffusionAdapter(model)
    if is_clip(model):
        return CLIPAdapter(model, **kwargs)
    if is_vision_lm(model):
        return VisionLMAdapter(model, **kwargs)
    if is_causal_lm(model):
        return CausalLMAdapter(model, **kwargs)
    if is_speech_seq2seq(model):
        return SpeechSeq2SeqAdapter(model, **kwargs)
    if is_seq2seq_lm(model):
        return Seq2SeqLMAdapter(model, **kwargs)
    if is_masked_lm(model):
        return MaskedLMAdapter(model, **kwargs)
    return ClassifierAdapter(model, **kwargs)


__all__ = ["ModelAdapter", "ClassifierAdapter", "CLIPAdapter", "CLIPWrapper", "LLaMAWrapper", "LLaVAWrapper",
           "StableDiffusionWrapper", "is_clip", "DiffusionAdapter", "TextToImage", "is_text_to_image", "CausalLMAdapter", "QACollator", "is_causal_lm", "VisionLMAdapter", "is_vision_lm", "wrap",
           "Seq2SeqLMAdapter", "SpeechSeq2SeqAdapter", "is_speech_seq2seq", "MaskedLMAdapter", "Seq2SeqCollator", "MaskingCollator", "is_seq2seq_lm", "is_masked_lm"]
