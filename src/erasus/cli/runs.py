"""The config-driven commands: ``erasus unlearn | evaluate | benchmark | report | visualize | dashboard``.

::

    erasus unlearn --config configs/classifier/fmnist_class.yaml --out runs/scrub --set strategy.lr=1e-4
    erasus evaluate --config configs/classifier/fmnist_class.yaml --model my_weights.safetensors
    erasus benchmark --config configs/benchmarks/fmnist_class.yaml --out results/
    erasus report runs/scrub                 # (re)write runs/scrub/report.html
    erasus visualize runs/scrub --out plots/ # every plot of the run as PNG (and --formats svg)
    erasus visualize runs/scrub --type embeddings --method tsne --output embeddings.png
    erasus visualize runs/scrub runs/ssd --type comparison --output comparison.png
    erasus dashboard runs/scrub runs/ssd     # compare runs in the browser
"""
from __future__ import annotations

from pathlib import Path


def _config(args):
    from ..experiments.configs import apply_overrides, load_config, resolve_config

    if args.config:
        cfg = load_config(args.config, args.set or [])
    else:  # the built-in defaults (configs/default.yaml holds the same)
        cfg = resolve_config(apply_overrides({}, args.set or []), source="defaults")
    if getattr(args, "overwrite", False):
        cfg["output"]["overwrite"] = True
    return cfg


def _cmd_unlearn(args) -> int:
    cfg = _config(args)
    if cfg["family"] == "causal_lm":
        from ..experiments.configs import lm_namespace
        from .lm import run as run_lm

        return run_lm(lm_namespace(cfg, args.out))
    if cfg["family"] == "diffusion":
        from ..experiments.diffusion_run import run_erase

        got = run_erase(cfg, args.out, progress=not args.no_progress)
        _print_stop(got["result"])
        print(f"saved to {got['dir']}" + (f" (what each model draws: {got['samples']})" if got["samples"] else ""))
        return 0
    if cfg["family"] == "clip":
        from ..experiments.clip_run import run_clip

        got = run_clip(cfg, args.out, progress=not args.no_progress)
        _print_stop(got["result"])
        for who, row in got["recall"].items():
            print(f"  {who:>9}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()))
        print(f"saved to {got['dir']}")
        return 0
    from ..experiments.config_run import run_unlearn

    out = args.out or cfg["output"]["dir"]
    if out is None:
        from ..core.exceptions import ConfigError

        raise ConfigError("erasus unlearn saves a run folder: pass --out RUN_DIR (or set output.dir in the config).")
    got = run_unlearn(cfg, out, progress=not args.no_progress)
    _print_outcome(got)
    return 0


def _print_stop(r):
    print(f"{r.strategy}: {r.steps} step{'' if r.steps == 1 else 's'}; stopped: {r.stop_reason}")


def _print_outcome(got):
    if got["report"] is not None:
        print(got["report"].summary())
    if got.get("result"):
        print(f"steps: {got['result']['steps']}; stopped: {got['result']['stop_reason']}")
    if got["dir"] is not None:
        print(f"run saved in {got['dir']} (report: {Path(got['dir']) / 'report.html'}); "
              f"compare runs with: erasus dashboard {got['dir']}")


def _cmd_evaluate(args) -> int:
    from ..experiments.config_run import run_evaluate

    cfg = _config(args)
    if cfg["family"] != "classifier":
        from ..core.exceptions import ConfigError

        raise ConfigError("erasus evaluate runs classifier configs; for language models use the TOFU / MUSE "
                          "protocols (erasus.evaluation.tofu, benchmarks/tofu.py), for diffusion models "
                          "DiffusionUnlearner.verify (benchmarks/diffusion.py).")
    got = run_evaluate(cfg, args.model, args.out, progress=not args.no_progress)
    _print_outcome(got)
    return 0 if got["verdict"] == "PASS" else 1


def _cmd_benchmark(args) -> int:
    from ..experiments.config_run import run_benchmark

    cfg = _config(args)
    if cfg["family"] != "classifier":
        from ..core.exceptions import ConfigError

        raise ConfigError(f"erasus benchmark compares strategies on classifier configs; for a {cfg['family']} model "
                          "run benchmarks/tofu.py (language models) or benchmarks/diffusion.py (diffusion).")
    if args.strategies:
        cfg["benchmark"]["strategies"] = [x.strip() for x in args.strategies.split(",") if x.strip()]
    if args.selectors:
        cfg["benchmark"]["selectors"] = [x.strip() for x in args.selectors.split(",") if x.strip()]
    from ..experiments.configs import resolve_config

    cfg = resolve_config(cfg, source="benchmark options")
    got = run_benchmark(cfg, args.out, progress=not args.no_progress)
    print(got["table"])
    print(f"\nresults in {got['dir']} (results.md, results.json, comparison.png)")
    return 0


def _cmd_report(args) -> int:
    from ..visualization.runs import report_from_run

    for d in args.runs:
        out = report_from_run(d, args.out if args.out and len(args.runs) == 1 else None, overwrite=True)
        print(f"report: {out}")
    return 0


def _cmd_visualize(args) -> int:
    import re

    import matplotlib.pyplot as plt

    from ..core.exceptions import ConfigError
    from ..visualization.plots import save_figure
    from ..visualization.runs import VIEWS, load_run, report_from_run, run_figures

    if args.type == "report":
        if args.output and len(args.runs) > 1:
            raise ConfigError("--type report --output FILE takes one run; leave --output out for one report per run.")
        for d in args.runs:
            print(report_from_run(d, args.output, overwrite=args.overwrite))
        return 0
    if args.type == "comparison":
        from ..visualization.analysis import run_comparison

        rows = [_comparison_row(load_run(d)) for d in args.runs]
        out = Path(args.output or "comparison.png")
        fig = run_comparison(rows, metrics=("forget_acc", "test_acc", "mia_auc"), label="run")
        print(*save_figure(fig, out, [out.suffix.lstrip(".") or "png"], overwrite=args.overwrite))
        plt.close(fig)
        return 0
    if len(args.runs) != 1:
        raise ConfigError(f"--type {args.type} draws one run; got {len(args.runs)} (use --type comparison for several).")
    run = load_run(args.runs[0])
    figs = run_figures(run, VIEWS if args.type == "all" else (args.type,), method=args.method)
    if args.output:
        if len(figs) != 1:
            raise ConfigError(f"--type {args.type} makes {len(figs)} figures: pass --out DIR instead of --output FILE.")
        out = Path(args.output)
        print(*save_figure(figs[0][0], out, [out.suffix.lstrip(".") or "png"], overwrite=args.overwrite))
        plt.close(figs[0][0])
        return 0
    out = Path(args.out) if args.out else Path(args.runs[0]) / "plots"
    for k, (fig, cap) in enumerate(figs):
        slug = re.sub(r"[^a-z0-9]+", "-", cap.lower())[:40].strip("-")
        for p in save_figure(fig, out / f"{k:02d}-{slug}", args.formats.split(","), overwrite=args.overwrite):
            print(p)
        plt.close(fig)
    return 0


def _comparison_row(run: dict) -> dict:
    m = (run.get("metrics") or {}).get("unlearned") or {}
    return {"run": run.get("name", ""), "forget_acc": m.get("forget_accuracy", float("nan")),
            "test_acc": m.get("test_accuracy", float("nan")), "mia_auc": m.get("mia_auc", float("nan")),
            "verdict": (run.get("verification") or {}).get("verdict", "")}


def _cmd_dashboard(args) -> int:
    from ..visualization.dashboard import serve

    serve(args.runs, host=args.host, port=args.port)
    return 0


def add_parsers(sub) -> None:
    def common(p, out_help):
        p.add_argument("--config", default=None, help="a YAML/JSON config (see configs/ in the repository; "
                       "default: the built-in defaults, as configs/default.yaml)")
        p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                       help="override a config value, e.g. --set strategy.lr=1e-4 (repeatable)")
        p.add_argument("--out", default=None, help=out_help)
        p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    u = sub.add_parser("unlearn", help="unlearn, verify and save a run from a config file")
    common(u, "run folder to write (default: output.dir of the config)")
    u.set_defaults(func=_cmd_unlearn)
    e = sub.add_parser("evaluate", help="verify a model's weights against the config's retrained model "
                                        "(exit 0 on PASS, 1 otherwise)")
    common(e, "also save the evaluation as a run folder")
    e.add_argument("--model", "--checkpoint", dest="model", required=True,
                   help="the weights to judge (.safetensors or .pt, the task's architecture)")
    e.set_defaults(func=_cmd_evaluate)
    b = sub.add_parser("benchmark", help="compare strategies on a config's request (markdown, JSON, plot)")
    common(b, "results folder (default: output.dir of the config)")
    b.add_argument("--strategies", default=None, help="comma-separated strategies (default: benchmark.strategies)")
    b.add_argument("--selectors", default=None, help="comma-separated selectors: each strategy also runs on the "
                   "coreset each picks (selector.prune_ratio, default 0.5), verified on the whole request")
    b.set_defaults(func=_cmd_benchmark)
    r = sub.add_parser("report", help="(re)write the HTML report of saved runs")
    r.add_argument("runs", nargs="+", help="run folders")
    r.add_argument("--out", default=None, help="report file (one run only; default RUN_DIR/report.html)")
    r.set_defaults(func=_cmd_report)
    v = sub.add_parser("visualize", help="plots of saved runs as image files (or their HTML report)")
    v.add_argument("runs", nargs="+", help="run folders")
    v.add_argument("--type", default="all", choices=["all", "history", "attack", "per_class", "matrices",
                                                     "embeddings", "layers", "comparison", "report"],
                   help="which view (default all; comparison: several runs side by side; report: HTML)")
    v.add_argument("--method", default="pca", choices=["pca", "tsne", "umap"], help="projection of the embeddings")
    v.add_argument("--output", default=None, help="one file for one figure (the suffix picks the format)")
    v.add_argument("--out", default=None, help="folder for the images (default RUN_DIR/plots)")
    v.add_argument("--formats", default="png", help="with --out: comma-separated png, svg, pdf (default png)")
    v.add_argument("--overwrite", action="store_true", help="replace existing files")
    v.set_defaults(func=_cmd_visualize)
    d = sub.add_parser("dashboard", help="compare saved runs side by side in the browser")
    d.add_argument("runs", nargs="+", help="run folders (or folders holding run folders)")
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=int, default=8050)
    d.set_defaults(func=_cmd_dashboard)
