"""High-level unlearners."""
from .erasus_unlearner import ErasusUnlearner

__all__ = ["ErasusUnlearner"]
