"""High-level unlearners."""
from .diffusion_unlearner import DiffusionUnlearner
from .erasus_unlearner import ErasusUnlearner
from .llm_unlearner import LLMUnlearner
from .vlm_unlearner import MultimodalUnlearner, VLMUnlearner

__all__ = ["DiffusionUnlearner", "ErasusUnlearner", "LLMUnlearner", "MultimodalUnlearner", "VLMUnlearner"]
