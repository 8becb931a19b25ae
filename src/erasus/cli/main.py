"""Entry point of the ``erasus`` command."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def _cmd_list(args) -> int:
    """Every registered component: the model families it supports, what it needs beyond the
    forget data, and the first line of its docstring."""
    from ..core.registry import aliases, get, list_registered

    kinds = [args.kind] if args.kind else ["strategy", "selector", "metric", "protocol"]
    for k in kinds:
        names = list_registered(k)
        al = aliases(k)
        print(f"{k} ({len(names)}):")
        width = max(len(n) for n in names)
        for n in names:
            cls = get(k, n)
            fams = ",".join(getattr(cls, "supports", ("*",))).replace("*", "any model")
            needs = []
            if getattr(cls, "needs_training_records", False):
                needs.append("needs records made during training")
            if getattr(cls, "needs_retain", False):
                needs.append("needs retain data")
            if vars(cls).get("limits"):
                needs.append("falls short at its defaults: see -v")
            doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
            doc = doc if len(doc) <= 100 else doc[:97] + "..."
            extra = [a for a, t in al.items() if t == n]
            print(f"  {n:<{width}}  [{fams}]" + (f" ({'; '.join(needs)})" if needs else "")
                  + (f" aliases: {', '.join(sorted(extra))}" if extra and args.verbose else ""))
            if args.verbose:
                print(f"  {'':<{width}}  {doc}")
                if vars(cls).get("limits"):
                    print(f"  {'':<{width}}  measured limit at the defaults: {cls.limits}")
    return 0


def _cmd_demo(args) -> int:
    from .demo import DEFAULT_STRATEGIES, run_demo

    strategies = args.strategies.split(",") if args.strategies else DEFAULT_STRATEGIES
    from .demo import free_report_path

    report = None if args.no_report else (args.report or free_report_path())
    run_demo(strategies, seed=args.seed, forget_class=args.forget_class, cache_dir=args.cache_dir,
             progress=not args.no_progress, json_out=args.json, report=report)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="erasus", description="Machine unlearning: select, unlearn, verify.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="unlearn and verify on bundled Fashion-MNIST data; prints a verdict table")
    d.add_argument("--strategies", help="comma-separated strategy names (default: %(default)s)", default=None)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--forget-class", type=int, default=1, help="class to forget (default 1, Trouser)")
    d.add_argument("--cache-dir", default=None, help="where trained models are cached (default: a temp folder)")
    d.add_argument("--json", default=None, help="also write the rows as JSON here")
    d.add_argument("--no-progress", action="store_true", help="hide progress bars")
    d.add_argument("--report", default=None, help="HTML report to write (default: erasus-demo-report.html here, "
                   "or -1, -2, ... if that exists; never replaced)")
    d.add_argument("--no-report", action="store_true", help="write no HTML report")
    d.set_defaults(func=_cmd_demo)
    ls = sub.add_parser("list", help="list registered strategies, selectors and metrics")
    ls.add_argument("kind", nargs="?", choices=["strategy", "selector", "metric", "protocol"])
    ls.add_argument("-v", "--verbose", action="store_true", help="also aliases and each component's description")
    ls.set_defaults(func=_cmd_list)
    from .lm import add_parser as add_lm

    add_lm(sub)
    from .runs import add_parsers as add_runs

    add_runs(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from ..core.exceptions import ErasusError

    try:
        return args.func(args)
    except (ErasusError, FileExistsError) as err:
        print(f"erasus: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
