"""Model adapters: the one place that knows a model family's batch format.

An adapter answers, for any batch of its family: ``per_sample_loss`` (one value per
sample), ``logits`` and ``features`` (an embedding for geometry selectors and plots).
Selectors, strategies and metrics are written against this interface only.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

import torch
from torch import nn

from ..exceptions import ConfigError, DataError
from ..utils.misc import model_device


class ModelAdapter:
    """Base adapter. ``family`` names the model family for ``supports`` checks."""

    family: str = "generic"

    def __init__(self, model: nn.Module):
        if not isinstance(model, nn.Module):
            raise TypeError(f"Expected a torch.nn.Module, got {type(model).__name__}.")
        self.model = model

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    def with_model(self, model: nn.Module) -> "ModelAdapter":
        """The same kind of adapter around another model (a copy, a teacher)."""
        return type(self)(model)

    def adapter_for(self, model) -> "ModelAdapter":
        """An adapter of a model the caller passed beside this one (a retrained or original
        model): the caller's own adapter when it is one (built with its settings: a CLIP
        model's class prompts), else :meth:`with_model`."""
        return model if isinstance(model, ModelAdapter) else self.with_model(model)

    # the interface every family implements -------------------------------------------
    def to_device(self, batch: Any) -> Any:
        raise NotImplementedError  # abstract

    def batch_size(self, batch: Any) -> int:
        raise NotImplementedError  # abstract

    def logits(self, batch: Any) -> torch.Tensor:
        raise NotImplementedError  # abstract

    def per_sample_loss(self, batch: Any, logits: torch.Tensor = None) -> torch.Tensor:
        raise NotImplementedError  # abstract

    def features(self, batch: Any) -> torch.Tensor:
        raise NotImplementedError  # abstract

    def labels(self, batch: Any) -> torch.Tensor:
        """The class labels of a labelled batch, on the model's device (a classifier's
        ``(inputs, labels)``: the second item)."""
        return self.to_device(batch)[1]

    def scored_logits(self, batch: Any):
        """``(logits, targets)``, one row per scored prediction: per sample for a classifier
        (its ``logits_and_labels``); a language model's scored tokens
        (:meth:`~erasus.models.causal_lm.TokenLMAdapter.scored_logits`). What a loss on the
        whole output distribution against a target (UNDIAL) is computed on."""
        if not hasattr(self, "logits_and_labels"):
            raise DataError(f"A {self.family} model gives no labelled logits to score: use a method for its family "
                            "(`erasus list strategy`).")
        return self.logits_and_labels(batch)

    def distillation_logits(self, batch: Any) -> torch.Tensor:
        """The logits a loss between two models' output distributions compares (SCRUB, Bad
        Teacher): all of :meth:`logits` here; a language model's at its scored tokens only
        (:meth:`~erasus.models.causal_lm.TokenLMAdapter.scored_logits`), which
        :meth:`per_sample_loss` also accepts as ``logits``."""
        return self.logits(batch)

    def loss(self, batch: Any) -> torch.Tensor:
        return self.per_sample_loss(batch).mean()

    def parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.model.parameters() if p.requires_grad)


def check_label_range(labels: torch.Tensor, n: int, of: str, hint: str = "") -> None:
    """A ``DataError`` unless every label is in ``[0, n)``; ``of`` says what the ``n`` classes
    are (a model's outputs, a CLIP adapter's class prompts)."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n):
        raise DataError(f"Expected labels in [0, {n - 1}] for {of}, got labels in "
                        f"[{int(labels.min())}, {int(labels.max())}].{hint}")


def module_of(model) -> nn.Module:
    """The ``nn.Module`` of a model given bare or through its adapter (strategies and attacks
    take either: an adapter carries settings the bare model lacks, such as a CLIP model's class
    prompts)."""
    return model.model if isinstance(model, ModelAdapter) else model


def load_or_take(model_name, load: Callable, device: Optional[str], from_pretrained_kwargs: dict, what: str):
    """The model a by-name wrapper holds (``CLIPWrapper``, ``LLaMAWrapper``, ...): ``load(name,
    **from_pretrained_kwargs)`` for a Hub name or local folder, else ``model_name`` itself (a
    model object; loading options are refused then), moved to ``device`` when given."""
    if isinstance(model_name, (str, os.PathLike)):
        model = load(model_name, **from_pretrained_kwargs)
    elif from_pretrained_kwargs:
        raise ConfigError(f"Options {sorted(from_pretrained_kwargs)} are for loading {what} by name; got a model.")
    else:
        model = model_name
    if device is not None:
        from ..utils.misc import resolve_device

        model = model.to(resolve_device(device))
    return model


def layer_outputs(model: nn.Module, layers: Sequence[nn.Module], indices: Sequence[int], run: Callable[[], Any],
                  what: str) -> Dict[str, torch.Tensor]:
    """``{"layer_<i>": output of layers[i]}`` for each of ``indices`` (negative ones count from the
    end) during ``run()`` (a forward pass of ``model``, without gradients), read with forward
    hooks; a tuple output gives its first item (the hidden states)."""
    n = len(layers)
    for i in indices:
        if not -n <= i < n:
            raise ConfigError(f"Expected layer indices in [-{n}, {n - 1}] (the {what} has {n} layers), got {i}.")
    out: Dict[str, torch.Tensor] = {}
    hooks = [layers[i].register_forward_hook(
        lambda _m, _in, o, i=i: out.__setitem__(f"layer_{i}", (o[0] if isinstance(o, tuple) else o).detach()))
        for i in indices]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            run()
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return out
