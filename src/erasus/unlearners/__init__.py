"""High-level unlearners."""
from .erasus_unlearner import ErasusUnlearner
from .llm_unlearner import LLMUnlearner

__all__ = ["ErasusUnlearner", "LLMUnlearner"]
