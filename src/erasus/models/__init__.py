"""Model adapters. ``wrap(model)`` picks the adapter for a model's family."""
from __future__ import annotations

from torch import nn

from .base import ModelAdapter
from .causal_lm import CausalLMAdapter, QACollator, is_causal_lm
from .classifier import ClassifierAdapter


def wrap(model, **kwargs) -> ModelAdapter:
    """Return the adapter for ``model`` (an adapter is returned unchanged).

    Hugging Face causal LMs (and PEFT wrappers of them) get :class:`CausalLMAdapter`;
    other ``nn.Module`` models are treated as classifiers (:class:`ClassifierAdapter`).
    """
    if isinstance(model, ModelAdapter):
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"Expected a torch.nn.Module or a ModelAdapter, got {type(model).__name__}.")
    if is_causal_lm(model):
        return CausalLMAdapter(model, **kwargs)
    return ClassifierAdapter(model, **kwargs)


__all__ = ["ModelAdapter", "ClassifierAdapter", "CausalLMAdapter", "QACollator", "is_causal_lm", "wrap"]
