"""Hyperparameter configs: dataclasses validated in ``__post_init__``, saved as JSON/YAML.

Every strategy and selector has a config dataclass whose defaults are the values that were
measured to work (see ``benchmarks/results``). Validation errors are :class:`ConfigError`
with the field, the expected range and the value given.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Type, TypeVar, Union

from .exceptions import ConfigError
from .stopping import CalibratedStopping as _CAL
from .stopping import StoppingRule

T = TypeVar("T", bound="BaseConfig")


def write_config_file(path: Path, data: Dict[str, Any], overwrite: bool = False) -> Path:
    """``data`` as JSON (``.json``) or YAML (``.yaml``/``.yml``), written atomically; an
    existing file is replaced only with ``overwrite=True``."""
    from ..utils.io import atomic_write_text

    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True or choose a new path.")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        text = yaml.safe_dump(data, sort_keys=False)
    elif path.suffix == ".json":
        text = json.dumps(data, indent=2)
    else:
        raise ConfigError(f"Expected a .json, .yaml or .yml path, got {str(path)!r}.")
    atomic_write_text(path, text)
    return path


def read_config_file(path: Path) -> Any:
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(text) or {}
    return json.loads(text)


@dataclasses.dataclass
class BaseConfig:
    """Base of all configs. Subclasses add fields and call the ``_check_*`` helpers."""

    def __post_init__(self) -> None:
        self._check_types()
        self.validate()

    def _check_types(self) -> None:
        """Values of the wrong kind (``lr="fast"``) get an error naming the field and the kind
        expected, before any comparison could fail obscurely. Fields annotated ``float``,
        ``int``, ``bool`` or ``str`` (or ``Optional`` of them) are checked; others are left to
        ``validate``."""
        import numbers

        kinds = {"float": (numbers.Real,), "int": (numbers.Integral,), "bool": (bool,), "str": (str,)}
        for f in dataclasses.fields(self):
            ann = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
            optional = ann.startswith("Optional[")
            base = ann[len("Optional["):-1] if optional else ann
            if base not in kinds:
                continue
            v = getattr(self, f.name)
            if v is None and optional:
                continue
            ok = isinstance(v, kinds[base]) and (base == "bool" or not isinstance(v, bool))
            if base == "int" and not ok and isinstance(v, float) and v.is_integer():
                ok = True
            if not ok:
                raise ConfigError(f"{type(self).__name__}.{f.name}: expected {'an' if base == 'int' else 'a'} "
                                  f"{base}{' or None' if optional else ''}, got {v!r} ({type(v).__name__}).")

    def validate(self) -> None:  # overridden by subclasses
        pass

    # validation helpers -------------------------------------------------------------
    def _check_positive(self, *names: str, allow_zero: bool = False) -> None:
        for name in names:
            v = getattr(self, name)
            if v is None:
                continue
            ok = v >= 0 if allow_zero else v > 0
            if not ok:
                bound = ">= 0" if allow_zero else "> 0"
                raise ConfigError(f"{type(self).__name__}.{name}: expected a value {bound}, got {v!r}.")

    def _check_range(self, name: str, lo: float, hi: float) -> None:
        v = getattr(self, name)
        if v is not None and not (lo <= v <= hi):
            raise ConfigError(f"{type(self).__name__}.{name}: expected a value in [{lo}, {hi}], got {v!r}.")

    def _check_choice(self, name: str, choices) -> None:
        v = getattr(self, name)
        if v not in choices:
            raise ConfigError(f"{type(self).__name__}.{name}: expected one of {list(choices)}, got {v!r}.")

    # serialisation ------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: Type[T], data: Dict[str, Any]) -> T:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"{cls.__name__}: unknown field(s) {unknown}. Expected a subset of {sorted(names)}."
            )
        return cls(**data)

    def replace(self: T, **changes) -> T:
        return self.from_dict({**self.to_dict(), **changes})

    def save(self, path: Union[str, os.PathLike], overwrite: bool = False,
             component: Optional[Dict[str, str]] = None) -> Path:
        """Write as JSON (``.json``) or YAML (``.yaml``/``.yml``), atomically; an existing file
        is replaced only with ``overwrite=True``. With ``component`` (``{"kind", "name"}``) the
        file names the component it configures, and ``erasus.core.registry.load`` rebuilds it."""
        data = self.to_dict() if component is None else {"component": dict(component), "config": self.to_dict()}
        return write_config_file(Path(path), data, overwrite)

    @classmethod
    def load(cls: Type[T], path: Union[str, os.PathLike]) -> T:
        data = read_config_file(Path(path))
        if isinstance(data, dict) and isinstance(data.get("component"), dict) and "config" in data:
            data = data["config"]  # a component's saved config: its config part
        return cls.from_dict(data)


@dataclasses.dataclass
class TrainerConfig(BaseConfig):
    """Schedule and stopping hyperparameters of :class:`UnlearningTrainer`.

    ``max_epochs`` counts passes over the forget loader; ``max_steps`` caps optimiser steps;
    ``min_steps`` is a floor on the step budget so a tiny forget set (a few batches) still
    gets enough updates (stopping rules can still end the run earlier). ``stopping`` is a rule's
    name (``"auto"``, ``"calibrated"``, ``"monitor"``, ``"none"``) or a
    :class:`~erasus.core.stopping.StoppingRule`; the calibrated rule's settings
    (``calibration_tolerance`` … ``forget_mode``) and the monitor's (``monitor``,
    ``monitor_mode``, ``early_stopping_patience``) configure the named rules. ``log_every``:
    the losses of the last steps are read back from the accelerator (one host
    synchronisation) every ``log_every`` steps, and at every validation; the history, the
    progress bar and the non-finite-loss guard see them then (the first step's loss is read at
    once). A callback with ``on_step_end`` makes it every step. ``compile``: run the model's
    forward through ``torch.compile`` for the run (the backbone of a language model, whose
    batches come in a few shapes with :func:`~erasus.models.causal_lm.qa_loader`; the model
    is returned uncompiled); off by default: the compile time pays off only over long runs.
    ``accumulate``: batches per optimiser step (gradient accumulation: the losses of
    ``accumulate`` forget/retain batch pairs are averaged), for large effective batches;
    ``max_steps``, ``min_steps`` and validation count optimiser steps.
    """

    max_epochs: Optional[float] = 5
    max_steps: Optional[int] = None
    min_steps: int = 100
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    scheduler: str = "constant"
    grad_clip: Optional[float] = 5.0
    schedule: Optional[str] = None
    retain_steps_per_epoch: Optional[int] = None
    stopping: Any = "auto"
    eval_every_steps: Optional[int] = None
    validate_every: Optional[int] = None
    early_stopping_patience: Optional[int] = None
    monitor: str = "val_forget_loss"
    monitor_mode: str = "max"
    # the calibrated rule's settings: its defaults are CalibratedStopping's (one source)
    calibration_tolerance: float = _CAL.tolerance
    calibration_patience: int = _CAL.patience
    retain_tolerance: float = _CAL.retain_tolerance
    guard_tolerance: float = _CAL.guard_tolerance
    guard_selectivity: float = _CAL.guard_selectivity
    backoff: float = _CAL.backoff
    max_backoffs: int = _CAL.max_backoffs
    backoff_patience: int = _CAL.backoff_patience
    max_lr_growth: float = _CAL.max_lr_growth
    forget_mode: str = _CAL.forget_mode
    val_max_samples: Optional[int] = 500
    precision: str = "auto"
    progress: bool = True
    seed: Optional[int] = 0
    log_every: int = 10
    compile: bool = False
    accumulate: int = 1

    def validate(self) -> None:
        self._check_positive("max_epochs", "max_steps", "lr", "eval_every_steps", "validate_every",
                             "early_stopping_patience", "calibration_patience", "retain_steps_per_epoch",
                             "val_max_samples", "log_every", "accumulate")
        self._check_positive("weight_decay", "calibration_tolerance", "retain_tolerance", "guard_tolerance", "min_steps",
                             "max_backoffs", allow_zero=True)
        self._check_positive("backoff_patience")
        if self.max_lr_growth < 1.0:
            raise ConfigError(f"TrainerConfig: expected max_lr_growth >= 1 (1 disables growth), got {self.max_lr_growth}.")
        self._check_range("backoff", 0.0, 1.0)
        if self.grad_clip is not None:
            self._check_positive("grad_clip")
        if self.max_epochs is None and self.max_steps is None:
            raise ConfigError("TrainerConfig: expected max_epochs or max_steps to be set, got neither.")
        self._check_choice("optimizer", ("adam", "adamw", "sgd"))
        self._check_choice("scheduler", ("constant", "cosine", "linear"))
        self._check_choice("schedule", (None, "interleaved", "alternating"))
        if isinstance(self.stopping, str):
            self._check_choice("stopping", ("auto", "calibrated", "monitor", "none"))
        elif not isinstance(self.stopping, StoppingRule):
            raise ConfigError(f"TrainerConfig.stopping: expected 'auto', 'calibrated', 'monitor', 'none' or a "
                              f"StoppingRule, got {self.stopping!r}.")
        self._check_choice("monitor_mode", ("min", "max"))
        self._check_choice("forget_mode", ("auto", "sample", "class"))
        self._check_choice("precision", ("auto", "fp32", "bf16", "fp16"))

    def to_dict(self) -> Dict[str, Any]:
        rule = self.stopping
        d = dataclasses.asdict(dataclasses.replace(self, stopping="auto"))
        d["stopping"] = rule if isinstance(rule, str) else repr(rule)
        return d
