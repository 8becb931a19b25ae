"""The command line every script under ``benchmarks/`` shares: ``--config FILE`` (a YAML
mapping of the script's own options, ``configs/benchmarks/scripts/<script>.yaml`` holding the
settings its committed results were made with; the command line overrides it) and
``--track`` (record the results with an :class:`~erasus.experiments.tracking.ExperimentTracker`).

    p = argparse.ArgumentParser(...)
    p.add_argument("--seeds", default="0,1,2")
    args = parse_benchmark_args(p, argv)

Keys are option names with ``_`` or ``-`` (``forget_authors: 4``); an unknown key, or a value
outside an option's choices, is an error naming the valid options before any work starts.
"""
from __future__ import annotations

import argparse
import difflib
from pathlib import Path
from typing import Optional, Sequence

from ..core.exceptions import ConfigError


def parse_benchmark_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Add ``--config`` and the tracking options to ``parser``, apply the config file's values
    as defaults, and parse ``argv``."""
    from .tracking import add_tracking_arguments

    add_tracking_arguments(parser)
    parser.add_argument("--config", default=None, help="a YAML file of this script's options (e.g. "
                        "configs/benchmarks/scripts/<script>.yaml); options given on the command line override it")
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    values = config_defaults(parser, known.config) if known.config else {}
    parser.set_defaults(**values)
    args = parser.parse_args(argv)
    args.config_keys = sorted(values)       # what the file set (a script's presets leave these alone); a
    return args                             # list, since scripts write vars(args) into their JSON results


def config_defaults(parser: argparse.ArgumentParser, path) -> dict:
    """The options of the YAML file at ``path`` as ``{dest: value}``, each checked against
    ``parser``'s options (name and choices)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config {path}: no such file (expected a YAML file of this script's options).")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of option names to values, got {type(data).__name__}.")
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    out = {}
    for key, value in data.items():
        dest = str(key).replace("-", "_")
        if dest not in actions:
            near = difflib.get_close_matches(dest, list(actions), n=1)
            raise ConfigError(f"--config {path}: {key!r} is not an option of this script"
                              + (f"; did you mean {near[0]!r}?" if near else "")
                              + f" Options: {', '.join(sorted(actions))}.")
        a = actions[dest]
        if a.choices is not None and value not in a.choices:
            raise ConfigError(f"--config {path}: {key}: expected one of {sorted(a.choices)}, got {value!r}.")
        if a.nargs == 0 and not isinstance(value, bool):                  # store_true / store_false flags
            raise ConfigError(f"--config {path}: {key} is a flag: expected true or false, got {value!r}.")
        out[dest] = value
    return out


def benchmark_device(parser: argparse.ArgumentParser, device):
    """A script's ``--device`` as a ``torch.device`` (``auto`` or ``None``: the GPU where torch sees
    one); a CUDA device torch cannot use stops the script with the reason before any work."""
    from ..utils.misc import resolve_device

    try:
        return resolve_device(device)
    except ConfigError as e:
        parser.error(f"--device: {e}")
