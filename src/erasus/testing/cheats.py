"""A gallery of cheats: models that look unlearned to a naive check and must FAIL honest
verification, next to which a model retrained without the forget data must PASS.

Each builder takes the untouched original classifier (any ``nn.Module`` whose last
``nn.Linear`` is its output layer) and returns a new model; the original is not modified.

* ``reinitialised``: fresh random weights (forgets everything, keeps nothing).
* ``hidden_class(model, classes, offset)``: the forgotten classes' output logits lowered by a
  constant (``offset`` 5: some samples still predicted; 30 or 1e4: never). The features are
  the original's: the knowledge is hidden behind the output layer, not removed.
* ``zeroed_row(model, classes)``: the output layer's rows (and biases) of the forgotten
  classes set to zero.
* ``temperature_class(model, classes, T)``: logits divided by ``T`` for inputs the original
  assigns to a forgotten class (flatter, "unsure" outputs; the same predictions).
* ``ForgetLookup(model, forget_inputs, transform)``: a lookup-table cheat for sample
  forgetting, changing the logits only of inputs that are exactly forget samples
  (``"temperature"``: divided by ``T``; ``"hide"``: the predicted class lowered by
  ``offset``), and behaving as the original everywhere else.

``cheat_gallery(original, forget_inputs, classes)`` returns the named set used by the tests
and ``benchmarks/verification.py``.
"""
from __future__ import annotations

import copy
import hashlib
from typing import Dict, Iterable, Optional, Sequence

import torch
from torch import nn


def _head(model: nn.Module) -> nn.Linear:
    from ..models.classifier import _last_linear

    head = _last_linear(model)
    if head is None:
        raise TypeError(f"Expected a classifier whose last nn.Linear is its output layer, got {type(model).__name__}.")
    return head


def reinitialised(model: nn.Module, seed: int = 123) -> nn.Module:
    """A copy with every layer's parameters reset (``reset_parameters``) from ``seed``."""
    from ..utils.misc import reinitialised as reset

    return reset(model, seed).eval()


def hidden_class(model: nn.Module, classes: Sequence[int], offset: float = 30.0) -> nn.Module:
    """A copy whose output biases of ``classes`` are lowered by ``offset``."""
    m = copy.deepcopy(model)
    head = _head(m)
    with torch.no_grad():
        if head.bias is None:
            raise TypeError("hidden_class needs an output layer with a bias.")
        head.bias[list(classes)] -= offset
    return m.eval()


def zeroed_row(model: nn.Module, classes: Sequence[int]) -> nn.Module:
    """A copy whose output-layer rows (and biases) of ``classes`` are zero."""
    m = copy.deepcopy(model)
    head = _head(m)
    with torch.no_grad():
        head.weight[list(classes)] = 0.0
        if head.bias is not None:
            head.bias[list(classes)] = 0.0
    return m.eval()


class _Wrapped(nn.Module):
    """The original model with a transformation of some rows of its logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = copy.deepcopy(model)

    def rows(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # abstract

    def change(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # abstract

    def forward(self, x):
        logits = self.model(x)
        mask = self.rows(x, logits)
        if mask.any():
            logits = logits.clone()
            logits[mask] = self.change(logits[mask])
        return logits


class _TemperatureClass(_Wrapped):
    def __init__(self, model, classes, T):
        super().__init__(model)
        self.classes, self.T = list(classes), float(T)

    def rows(self, x, logits):
        return torch.isin(logits.argmax(1), torch.tensor(self.classes, device=logits.device))

    def change(self, logits):
        return logits / self.T


def temperature_class(model: nn.Module, classes: Sequence[int], T: float = 50.0) -> nn.Module:
    """The original, with logits divided by ``T`` where it predicts a forgotten class."""
    return _TemperatureClass(model, classes, T).eval()


def _key(row: torch.Tensor) -> str:
    return hashlib.sha1(row.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


class ForgetLookup(_Wrapped):
    """The original, except on inputs that are exactly forget samples (looked up by a hash of
    their values): there the logits are divided by ``T`` (``transform="temperature"``) or
    the predicted class is lowered by ``offset`` (``"hide"``)."""

    def __init__(self, model: nn.Module, forget_inputs: Iterable[torch.Tensor], transform: str = "temperature",
                 T: float = 50.0, offset: float = 30.0):
        super().__init__(model)
        if transform not in ("temperature", "hide"):
            raise ValueError(f"Expected transform 'temperature' or 'hide', got {transform!r}.")
        self.keys = {_key(x) for x in forget_inputs}
        self.transform, self.T, self.offset = transform, float(T), float(offset)

    def rows(self, x, logits):
        return torch.tensor([_key(r) in self.keys for r in x], dtype=torch.bool, device=logits.device)

    def change(self, logits):
        if self.transform == "temperature":
            return logits / self.T
        out = logits.clone()
        out[torch.arange(len(out)), out.argmax(1)] -= self.offset
        return out


def forget_inputs(loader) -> list:
    """Every input tensor of a classifier loader of ``(x, y)`` batches."""
    out = []
    for batch in loader:
        out += list(batch[0])
    return out


#: the gallery's cheats per kind of request
CHEATS = {
    "class": ("original", "reinitialised", "hidden_class_5", "hidden_class_30", "hidden_class_1e4",
              "temperature_class", "zeroed_row"),
    "sample": ("original", "reinitialised", "lookup_temperature", "lookup_hide"),
}


def cheat_gallery(original: nn.Module, kind: str, classes: Sequence[int] = (), forget_loader=None,
                  names: Optional[Sequence[str]] = None) -> Dict[str, nn.Module]:
    """The named cheats for a ``kind`` (``"class"`` or ``"sample"``) request built from
    ``original``: class cheats need ``classes``, lookup cheats ``forget_loader``."""
    if kind not in CHEATS:
        raise ValueError(f"Expected kind 'class' or 'sample', got {kind!r}.")
    names = CHEATS[kind] if names is None else names
    if kind == "class" and not classes:
        raise ValueError("Class cheats need the forgotten classes: pass classes=[...].")
    build = {
        "original": lambda: original,
        "reinitialised": lambda: reinitialised(original),
        "hidden_class_5": lambda: hidden_class(original, classes, 5.0),
        "hidden_class_30": lambda: hidden_class(original, classes, 30.0),
        "hidden_class_1e4": lambda: hidden_class(original, classes, 1e4),
        "temperature_class": lambda: temperature_class(original, classes),
        "zeroed_row": lambda: zeroed_row(original, classes),
        "lookup_temperature": lambda: ForgetLookup(original, forget_inputs(forget_loader), "temperature").eval(),
        "lookup_hide": lambda: ForgetLookup(original, forget_inputs(forget_loader), "hide").eval(),
    }
    unknown = [n for n in names if n not in build]
    if unknown:
        raise ValueError(f"Unknown cheats {unknown}; expected some of {sorted(build)}.")
    return {n: build[n]() for n in names}
