"""High-level unlearners."""
from .diffusion_unlearner import DiffusionUnlearner
from .erasus_unlearner import ErasusUnlearner
from .llm_unlearner import LLMUnlearner

__all__ = ["DiffusionUnlearner", "ErasusUnlearner", "LLMUnlearner"]
