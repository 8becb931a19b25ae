"""Core: registry, configs, base classes, coresets, the module/trainer split."""
from .base import BaseMetric, BaseSelector, resolve_k
from .config import BaseConfig
from .coreset import Coreset
from .exceptions import (ConfigError, DataError, DivergenceError, ErasusError, UnknownNameError,
                         UnsupportedModelError)
from .module import UnlearningModule
from .registry import get, list_registered, register
from .strategy import BaseStrategy, LossStrategy, LossStrategyConfig, OneShotStrategy
from .trainer import Callback, TrainerConfig, UnlearningResult, UnlearningTrainer

__all__ = [
    "BaseConfig", "BaseMetric", "BaseSelector", "BaseStrategy", "Callback", "ConfigError", "Coreset",
    "DataError", "DivergenceError", "ErasusError", "LossStrategy", "LossStrategyConfig", "OneShotStrategy",
    "TrainerConfig", "UnknownNameError", "UnlearningModule", "UnlearningResult", "UnlearningTrainer",
    "UnsupportedModelError", "get", "list_registered", "register", "resolve_k",
]
