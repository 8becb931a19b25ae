"""Reusable loss terms that strategies compose."""
from .distillation import distillation_kl

__all__ = ["distillation_kl"]
