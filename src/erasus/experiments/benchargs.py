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


def add_results_arguments(parser: argparse.ArgumentParser, out, name: str, cells: str = "(method, seed)",
                          merge: bool = True, max_minutes: bool = True, render_help: str = "") -> None:
    """The options of a script that writes its rows with
    :class:`~erasus.experiments.runner.ResultsFile`: ``--out``, ``--name``, ``--resume``,
    ``--render``, and where the script supports them ``--merge`` and ``--max-minutes``
    (``cells``: what identifies a row, for the help)."""
    parser.add_argument("--out", default=str(out), help="the folder of the results (<out>/<name>.json and .md)")
    parser.add_argument("--name", default=name, help="the results' file name")
    if merge:
        parser.add_argument("--merge", action="store_true",
                            help=f"replace only the {cells} rows this run produces in an existing <out>/<name>.json, "
                                 "keeping the others (parts of one grid may run side by side as separate processes, "
                                 "one per core); every run's command is recorded in meta")
    parser.add_argument("--resume", action="store_true",
                        help="go on where a cut-off run stopped: keep the rows of an existing <out>/<name>.json and "
                             f"run only the {cells} cells it lacks (results are written after every row)")
    if max_minutes:
        parser.add_argument("--max-minutes", type=float, default=None,
                            help="start no new cell after this many minutes; the results say the run stopped, and "
                                 "the same command with --resume goes on")
    parser.add_argument("--render", action="store_true",
                        help="rewrite <out>/<name>.md from <out>/<name>.json (no runs)" + render_help)


def render_only(args: argparse.Namespace, render) -> bool:
    """``--render``: rewrite ``<out>/<name>.md`` from its JSON with ``render(rows, meta)``, print
    it and return True (the script then stops); False without ``--render``."""
    if not args.render:
        return False
    from .runner import rerender

    print(rerender(args.out, args.name, render).read_text())
    return True


def results_file(args: argparse.Namespace, key, render, meta: dict):
    """The :class:`~erasus.experiments.runner.ResultsFile` of a script's run, in the mode its
    ``--resume``/``--merge`` ask for (a new file otherwise), stopping after ``--max-minutes``."""
    from .runner import ResultsFile

    mode = "resume" if args.resume else "merge" if getattr(args, "merge", False) else "new"
    return ResultsFile(args.out, args.name, key, render, meta, mode, getattr(args, "max_minutes", None))
