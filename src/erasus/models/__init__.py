"""Model adapters. ``wrap(model)`` picks the adapter for a model's family."""
from __future__ import annotations

from torch import nn

from .base import ModelAdapter
from .classifier import ClassifierAdapter


def wrap(model, **kwargs) -> ModelAdapter:
    """Return the adapter for ``model`` (an adapter is returned unchanged).

    Plain ``nn.Module`` classifiers get :class:`ClassifierAdapter`.
    """
    if isinstance(model, ModelAdapter):
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"Expected a torch.nn.Module or a ModelAdapter, got {type(model).__name__}.")
    return ClassifierAdapter(model, **kwargs)


__all__ = ["ModelAdapter", "ClassifierAdapter", "wrap"]
