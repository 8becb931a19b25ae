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
from typing import Any, Dict, Type, TypeVar, Union

from .exceptions import ConfigError

T = TypeVar("T", bound="BaseConfig")


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

    def save(self, path: Union[str, os.PathLike], overwrite: bool = False) -> Path:
        """Write as JSON (``.json``) or YAML (``.yaml``/``.yml``), atomically; an existing file
        is replaced only with ``overwrite=True``."""
        from ..utils.io import atomic_write_text

        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True or choose a new path.")
        if path.suffix in (".yaml", ".yml"):
            import yaml

            text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        elif path.suffix == ".json":
            text = json.dumps(self.to_dict(), indent=2)
        else:
            raise ConfigError(f"Expected a .json, .yaml or .yml path, got {str(path)!r}.")
        atomic_write_text(path, text)
        return path

    @classmethod
    def load(cls: Type[T], path: Union[str, os.PathLike]) -> T:
        path = Path(path)
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
        return cls.from_dict(data)
