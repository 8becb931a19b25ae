"""Exceptions raised by Erasus.

Every error that comes from user input is a ``ValueError`` or ``TypeError`` subclass, so
code that already catches those keeps working, and every message says what was expected,
what was given, and what to do about it.
"""
from __future__ import annotations


class ErasusError(Exception):
    """Base class of every Erasus error."""


class UnknownNameError(ErasusError, KeyError, ValueError):
    """A strategy, selector or metric name that is not registered."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class DataError(ErasusError, ValueError):
    """Bad data: empty forget set, overlapping splits, labels out of range, wrong batch format."""


class ConfigError(ErasusError, ValueError):
    """A hyperparameter with an invalid value."""


class DivergenceError(ErasusError, RuntimeError):
    """Unlearning produced a non-finite loss and no usable checkpoint could be restored."""


class UnsupportedModelError(ErasusError, TypeError):
    """A strategy, selector or metric was applied to a model family it does not support."""
