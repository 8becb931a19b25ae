"""High-level unlearners."""
from .diffusion_unlearner import DiffusionUnlearner
from .erasus_unlearner import ErasusUnlearner
from .llm_unlearner import LLMUnlearner
from .media_unlearner import AudioUnlearner, VideoUnlearner
from .vlm_unlearner import MultimodalUnlearner, VLMUnlearner

__all__ = ["AudioUnlearner", "VideoUnlearner", "DiffusionUnlearner", "ErasusUnlearner", "LLMUnlearner", "MultimodalUnlearner", "VLMUnlearner"]
