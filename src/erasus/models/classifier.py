"""Adapter for classifiers: any ``nn.Module`` mapping inputs ``x`` to logits, fed ``(x, y)``."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..exceptions import DataError
from .base import ModelAdapter, check_label_range


#: the keys a classification sample or batch given as a dict holds its label under
LABEL_KEYS = ("y", "label", "labels", "target", "targets")


def as_logits(out):
    """A classifier's logits from its output: the tensor itself, or a Hugging Face output's
    ``.logits`` (``ImageClassifierOutput``, ``SequenceClassifierOutput``)."""
    return out.logits if hasattr(out, "logits") else out


def _last_linear(model: nn.Module) -> Optional[nn.Linear]:
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    return last


class ClassifierAdapter(ModelAdapter):
    """Adapter for a classifier taking ``(x, y)`` batches (tuples/lists, or dicts with an input
    key: the model's ``main_input_name`` for a Hugging Face model, or ``"x"``, ``"input"``,
    ``"image"``, ``"pixel_values"``, ``"input_values"``, ``"input_features"``, ... and a label
    key: ``"y"``, ``"label"``, ``"labels"``, ...).

    ``features`` are the inputs of the final ``nn.Linear`` layer (the penultimate
    representation), captured with a forward hook; ``num_classes`` is that layer's
    ``out_features`` unless given.
    """

    family = "classifier"
    _X_KEYS = ("x", "input", "inputs", "image", "images", "pixel_values", "input_values", "input_features")
    _Y_KEYS = LABEL_KEYS

    def __init__(self, model: nn.Module, num_classes: Optional[int] = None):
        super().__init__(model)
        head = _last_linear(model)
        self.head = head
        self.num_classes = num_classes if num_classes is not None else (head.out_features if head else None)

    def with_model(self, model: nn.Module) -> "ClassifierAdapter":
        return ClassifierAdapter(model, self.num_classes)

    # batches ---------------------------------------------------------------------
    def split(self, batch: Any) -> Tuple[torch.Tensor, torch.Tensor]:
        if isinstance(batch, Mapping):
            keys = (getattr(self.model, "main_input_name", None),) + self._X_KEYS  # a Hugging Face model's own first
            x = next((batch[k] for k in keys if k in batch), None)
            y = next((batch[k] for k in self._Y_KEYS if k in batch), None)
            if x is None or y is None:
                raise DataError(
                    f"Expected a classifier batch dict with an input key {self._X_KEYS} and a label "
                    f"key {self._Y_KEYS}, got keys {sorted(batch)}."
                )
            return x, y
        if isinstance(batch, (tuple, list)) and len(batch) >= 2:
            return batch[0], batch[1]
        raise DataError(
            f"Expected a classifier batch (x, y), got {type(batch).__name__}"
            + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
            + ". Build the loader from a dataset whose items are (input, label) pairs."
        )

    def to_device(self, batch: Any) -> Tuple[torch.Tensor, torch.Tensor]:
        x, y = self.split(batch)
        dev = self.device
        if not torch.is_tensor(y):
            y = torch.as_tensor(y)
        if y.dtype.is_floating_point or y.dtype == torch.bool:
            raise DataError(f"Expected integer class labels, got a {y.dtype} tensor.")
        return x.to(dev, non_blocking=True), y.to(dev, non_blocking=True).long()

    def batch_size(self, batch: Any) -> int:
        return len(self.split(batch)[1])

    def check_labels(self, y: torch.Tensor, n_out: int) -> None:
        check_label_range(y, n_out, f"a model with {n_out} outputs",
                          " Check the label encoding or the model's output layer.")

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            out = self.model(x)
        except (RuntimeError, TypeError, ValueError) as err:
            raise DataError(
                f"The model could not take an input batch of shape {tuple(x.shape)} and dtype {x.dtype}: "
                f"{err}. Expected (x, y) batches whose x the model's forward accepts."
            ) from err
        out = as_logits(out)
        if not torch.is_tensor(out) or out.dim() != 2:
            raise DataError(
                f"Expected the classifier to return logits of shape (batch, classes), got "
                f"{tuple(out.shape) if torch.is_tensor(out) else type(out).__name__}."
            )
        return out

    def functional_logits(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` with the weights ``params`` and ``buffers`` (``torch.func.functional_call``:
        per-sample gradients with ``vmap``, Hessians). Attention runs through its math kernel,
        which ``vmap`` batches and whose backward is itself differentiable; the fused CPU
        kernel's backward has no derivative of its own (a transformer's Hessian-vector products
        failed on it) and no batching rule (``vmap`` fell back to a loop)."""
        from torch.func import functional_call
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([SDPBackend.MATH]):
            return as_logits(functional_call(self.model, (params, buffers), (x,)))

    # the adapter interface ---------------------------------------------------------
    def logits(self, batch: Any) -> torch.Tensor:
        x, _ = self.to_device(batch)
        return self._forward(x)

    def logits_and_labels(self, batch: Any) -> Tuple[torch.Tensor, torch.Tensor]:
        x, y = self.to_device(batch)
        out = self._forward(x)
        self.check_labels(y, out.shape[1])
        return out, y

    def per_sample_loss(self, batch: Any, logits: torch.Tensor = None) -> torch.Tensor:
        if logits is None:
            logits, y = self.logits_and_labels(batch)
        else:
            _, y = self.to_device(batch)
            self.check_labels(y, logits.shape[1])
        return F.cross_entropy(logits.float(), y, reduction="none")

    def features(self, batch: Any) -> torch.Tensor:
        """Penultimate features (inputs to the final linear layer), flattened."""
        if self.head is None:
            x, _ = self.to_device(batch)
            return self._forward(x).flatten(1)
        captured = {}

        def hook(_m, inputs, _out):
            captured["h"] = inputs[0]

        handle = self.head.register_forward_hook(hook)
        try:
            self.logits(batch)
        finally:
            handle.remove()
        return captured["h"].flatten(1)
