"""``Splits``: the one currency of stage 3. Every verification entry point
(``MetricSuite.run``, ``UnlearningBenchmark.evaluate``, ``UnlearningVerifier.verify_all``,
``UnlearningVerificationSuite.run``, ``attack_report``, ``ErasusUnlearner.evaluate``) takes
the model, a :class:`Splits` (or the loaders one by one, as before) and ``gold_model=`` by
keyword::

    splits = UnlearningDataset(train, forget_indices=idx, holdout=test).splits(test=test_loader)
    UnlearningBenchmark().evaluate(unlearned, splits, gold_model=retrained)
    UnlearningVerificationSuite().run(unlearned, splits, gold_model=retrained)

The older call forms (a gold model passed by position, or in second place) still work for one
release and warn (``DeprecationWarning``).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import torch


@dataclass(frozen=True)
class Splits:
    """The data of one forget request, by role: ``forget`` (what was unlearned), ``retain``
    (what the model keeps, seen in training), ``test`` (unseen data for utility) and
    ``holdout`` (unseen data from the forget set's distribution; entry points that need it
    fall back to ``test``, as they do with loaders). Each is a ``DataLoader`` or ``None``."""

    forget: Any
    retain: Any = None
    test: Any = None
    holdout: Any = None

    def as_tuple(self) -> Tuple[Any, Any, Any, Any]:
        return self.forget, self.retain, self.test, self.holdout


def unpack(forget, retain=None, test=None, holdout=None, where: str = "") -> Tuple[Any, Any, Any, Any]:
    """``(forget, retain, test, holdout)`` from a :class:`Splits` or from loaders given one by one
    (not both)."""
    if isinstance(forget, Splits):
        if any(x is not None for x in (retain, test, holdout)):
            raise ValueError(f"{where}: expected either a Splits or loaders one by one, got a Splits and loaders.")
        return forget.as_tuple()
    return forget, retain, test, holdout


def legacy_positional(where: str, legacy: Sequence, names: Sequence[str], given: Dict[str, Any]) -> Dict[str, Any]:
    """Arguments that used to be positional (``gold_model``, ``original_model``, …) and are now
    keyword-only: accepted for one release with a ``DeprecationWarning``."""
    if not legacy:
        return given
    if len(legacy) > len(names):
        raise TypeError(f"{where}: too many positional arguments ({len(legacy)} after the data).")
    out = dict(given)
    for name, value in zip(names, legacy):
        if out.get(name) is not None:
            raise TypeError(f"{where}: {name} given twice (by position and by keyword).")
        out[name] = value
    warnings.warn(f"{where}: passing {', '.join(names[:len(legacy)])} by position is deprecated and will be removed "
                  f"in the next release: pass {', '.join(f'{n}=...' for n in names[:len(legacy)])} by keyword.",
                  DeprecationWarning, stacklevel=3)
    return out


def gold_in_second_place(where: str, forget, retain, test, holdout, legacy: Sequence,
                         gold_model: Optional[torch.nn.Module]) -> Tuple[Any, Any, Any, Any, Any, tuple]:
    """The old form ``f(model, gold_model, forget, retain, test, holdout, ...)``: when a model
    stands where the data should, shift the arguments back and warn. Returns
    ``(gold_model, forget, retain, test, holdout, remaining_legacy)``."""
    if not isinstance(forget, torch.nn.Module):
        return gold_model, forget, retain, test, holdout, tuple(legacy)
    if gold_model is not None:
        raise TypeError(f"{where}: gold_model given twice (in second place and by keyword).")
    warnings.warn(f"{where}(model, gold_model, forget, ...) is deprecated and will be removed in the next release: "
                  f"call {where}(model, splits_or_forget, ..., gold_model=...).", DeprecationWarning, stacklevel=3)
    rest = tuple(legacy)
    holdout_new, rest = (rest[0], rest[1:]) if rest else (None, rest)
    return forget, retain, test, holdout, holdout_new, rest
