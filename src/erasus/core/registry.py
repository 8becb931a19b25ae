"""One registry for every named component: strategies, selectors, metrics and evaluation
protocols.

    @register("strategy", "npo", aliases=("negative_preference",))
    class NPO(BaseStrategy): ...

    get("strategy", "npo")          # -> the class
    list_registered("strategy")     # -> sorted names

Unknown names raise :class:`UnknownNameError` listing the known names and the closest match.
A component's saved config names its component (``strategy.save_config(path)``), so that
``load(path)`` rebuilds it.
Components register when their module is imported; ``_ensure_loaded`` imports the
built-in packages on first lookup so ``import erasus`` stays light.
"""
from __future__ import annotations

import difflib
import importlib
import threading
from typing import Callable, Dict, Iterable, List, Optional

from .exceptions import UnknownNameError

KINDS = ("strategy", "selector", "metric", "protocol")
_REGISTRY: Dict[str, Dict[str, type]] = {k: {} for k in KINDS}
_ALIASES: Dict[str, Dict[str, str]] = {k: {} for k in KINDS}
_BUILTIN_PACKAGES = {
    "strategy": "erasus.strategies",
    "selector": "erasus.selectors",
    "metric": "erasus.metrics",
    "protocol": "erasus.evaluation",
}
_loaded: set = set()
#: guards the tables and the first import of the built-in packages: two threads doing their
#: first look-up at once must both see the registered components (re-entrant: importing a
#: package runs ``register`` in the same thread)
_LOCK = threading.RLock()


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"Expected kind to be one of {KINDS}, got {kind!r}.")


def _ensure_loaded(kind: str) -> None:
    if kind in _loaded:
        return
    with _LOCK:
        if kind not in _loaded:
            importlib.import_module(_BUILTIN_PACKAGES[kind])
            _loaded.add(kind)  # only once the package's components are registered


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def register(kind: str, name: str, aliases: Iterable[str] = ()) -> Callable[[type], type]:
    """Class decorator that registers ``cls`` under ``name`` (and ``aliases``) for ``kind``."""
    _check_kind(kind)
    key = _normalise(name)

    def deco(cls: type) -> type:
        _check_component(kind, key, cls)
        with _LOCK:
            existing = _REGISTRY[kind].get(key)
            if existing is not None and existing is not cls:
                raise ValueError(f"{kind} {key!r} is already registered to {existing.__qualname__}.")
            _REGISTRY[kind][key] = cls
            for alias in aliases:
                _ALIASES[kind][_normalise(alias)] = key
            cls.registered_name = key
            cls.registered_kind = kind
        return cls

    return deco


def unregister(kind: str, name: str) -> None:
    """Remove ``name`` (and its aliases) from ``kind``: for extensions and tests that register
    a component for a while."""
    _check_kind(kind)
    key = _normalise(name)
    with _LOCK:
        _REGISTRY[kind].pop(key, None)
        for alias in [a for a, t in _ALIASES[kind].items() if t == key]:
            del _ALIASES[kind][alias]


#: the method each kind is called through, and the base class that provides the rest
_INTERFACE = {"strategy": ("unlearn", "erasus.core.BaseStrategy"),
              "selector": ("select", "erasus.core.BaseSelector"),
              "metric": ("compute", "erasus.core.BaseMetric"),
              "protocol": ("__call__", "function evaluate(benchmark, unlearned_model, **data) -> report, or a class")}


def _check_component(kind: str, name: str, cls) -> None:
    """A registered class must be usable as its kind: checked at registration, not at ``fit``."""
    method, base = _INTERFACE[kind]
    if isinstance(cls, type) and callable(getattr(cls, method, None)) or kind == "protocol" and callable(cls):
        return
    what = cls.__qualname__ if isinstance(cls, type) else repr(cls)
    hint = ""
    if isinstance(cls, type) and callable(getattr(cls, "forget_step", None)):
        hint = (" It is an UnlearningModule: subclass erasus.core.LossStrategy instead (a module that is also a "
                "strategy; override forget_step / retain_step the same way), or run the module directly with "
                "UnlearningTrainer().fit(module, forget, retain).")
    raise TypeError(f"register({kind!r}, {name!r}): expected a class with a {method}() method (a {base} "
                    f"subclass), got {what}.{hint}")


def resolve(kind: str, name: str) -> str:
    """Canonical registered name for ``name`` (an alias or different spelling is accepted)."""
    _check_kind(kind)
    _ensure_loaded(kind)
    if not isinstance(name, str):
        raise TypeError(f"Expected a {kind} name (str), got {type(name).__name__}.")
    key = _normalise(name)
    key = _ALIASES[kind].get(key, key)
    if key in _REGISTRY[kind]:
        return key
    known = sorted(_REGISTRY[kind])
    candidates = known + sorted(_ALIASES[kind])
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    hint = f" Did you mean {(_ALIASES[kind].get(close[0], close[0]))!r}?" if close else ""
    raise UnknownNameError(
        f"Unknown {kind} {name!r}.{hint} Known {kind} names: {', '.join(known)}."
    )


def get(kind: str, name: str) -> type:
    """The class registered as ``name`` for ``kind``."""
    return _REGISTRY[kind][resolve(kind, name)]


def list_registered(kind: str, family: Optional[str] = None) -> List[str]:
    """Sorted canonical names registered for ``kind``; with ``family`` (e.g.
    ``"classifier"``, ``"causal_lm"``) only those that support that model family."""
    _check_kind(kind)
    _ensure_loaded(kind)
    names = sorted(_REGISTRY[kind])
    if family is None:
        return names
    return [n for n in names if {"*", family} & set(getattr(_REGISTRY[kind][n], "supports", ("*",)))]


def aliases(kind: str) -> Dict[str, str]:
    _check_kind(kind)
    _ensure_loaded(kind)
    return dict(_ALIASES[kind])


def build(kind: str, name_or_obj, **kwargs):
    """Instantiate a registered component by name, or pass an instance through unchanged."""
    if isinstance(name_or_obj, str):
        return get(kind, name_or_obj)(**kwargs)
    if isinstance(name_or_obj, type):
        return name_or_obj(**kwargs)
    if kwargs:
        raise ValueError(
            f"Expected keyword arguments only with a {kind} name, got an instance of "
            f"{type(name_or_obj).__name__} together with {sorted(kwargs)}."
        )
    return name_or_obj


def load(path):
    """Rebuild a component from a config file written by its ``save_config`` (JSON or YAML:
    ``{"component": {"kind": ..., "name": ...}, "config": {...}}``)."""
    from pathlib import Path

    from .config import read_config_file
    from .exceptions import ConfigError

    data = read_config_file(Path(path))
    head = data.get("component") if isinstance(data, dict) else None
    if not isinstance(head, dict) or "kind" not in head or "name" not in head or "config" not in data:
        raise ConfigError(f"{path}: expected a component's saved config ({{'component': {{'kind', 'name'}}, "
                          "'config'}}, written by save_config); a bare config file loads with its config class's "
                          "load().")
    cls = get(head["kind"], head["name"])
    return cls(config=cls.config_class.from_dict(data["config"]))
