"""Core: registry, configs, base classes, coresets, the module/trainer split."""
from .base import BaseMetric, BaseSelector, resolve_k
from .config import BaseConfig
from .coreset import Coreset
from .exceptions import (ConfigError, DataError, DivergenceError, ErasusError, UnknownNameError,
                         UnsupportedModelError)
from .module import UnlearningModule
from .registry import get, list_registered, register
from .strategy import BaseStrategy, LossStrategy, LossStrategyConfig, OneShotStrategy
from .callbacks import Callback, UnlearningResult
from .stopping import (BestCheckpointRule, CalibratedStopping, Decision, FixedSchedule, MonitorStopping, Stop,
                       StopKind, StoppingRule)
from .trainer import TrainerConfig, UnlearningTrainer

__all__ = [
    "BaseConfig", "BaseMetric", "BaseSelector", "BaseStrategy", "BestCheckpointRule", "CalibratedStopping",
    "Callback", "ConfigError", "Coreset", "DataError", "Decision", "DivergenceError", "ErasusError",
    "FixedSchedule", "LossStrategy", "LossStrategyConfig", "MonitorStopping", "OneShotStrategy", "Stop",
    "StopKind", "StoppingRule", "TrainerConfig", "UnknownNameError", "UnlearningModule", "UnlearningResult", "UnlearningTrainer",
    "UnsupportedModelError", "get", "list_registered", "register", "resolve_k",
]
