"""The demo's table as a committed result: ``erasus demo`` at its defaults, written to
``benchmarks/results/demo.md`` and ``demo.json``.

The README's paragraph about the demo quotes this file (``scripts/check_readme_numbers.py``
checks it). One run on 2 CPU cores takes a few minutes.

    python benchmarks/demo.py                 # seed 0, the demo's default strategies
    python benchmarks/demo.py --seed 1 --out /tmp/demo
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv=None) -> None:
    import torch

    from erasus.cli.demo import DEFAULT_STRATEGIES, run_demo
    from erasus.experiments import format_table
    from erasus.utils.io import atomic_write_text

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES))
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--out", type=Path, default=HERE / "results")
    from erasus.experiments.benchargs import parse_benchmark_args
    from erasus.experiments.tracking import track_results

    a = parse_benchmark_args(p, argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_demo(a.strategies.split(","), seed=a.seed, progress=False, json_out=Path(tmp) / "rows.json")
    total = time.perf_counter() - t0
    meta = {"seed": a.seed, "strategies": a.strategies.split(","), "seconds": round(total, 1),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or
            platform.machine(), "cores": os.cpu_count()}
    a.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out / "demo.json", json.dumps({"meta": meta, "rows": [r.to_dict() for r in rows]},
                                                      indent=2))
    lines = ["# `erasus demo` at its defaults", "",
             f"Command: `python benchmarks/demo.py --seed {a.seed}` (what `erasus demo` prints, kept). "
             f"{meta['cores']} cores, torch {meta['torch']} with {meta['threads']} threads; "
             f"{total:.0f} s in all.", "",
             "Fashion-MNIST subset bundled with Erasus (6,000 training images), MLP, two requests: a random 10% "
             "of the training set and every image of class 1. Each strategy at its default settings with "
             "held-out data (calibrated stopping); the original and the retrained model are the sanity "
             "checks. Accuracies in %; avg gap: mean |difference| to the retrained model in points over "
             "forget / retain / test accuracy and MIA-efficacy; verdict: `UnlearningBenchmark` against the "
             "retrained model.", "", "```", format_table(rows), "```", "", "Stop reasons:", ""]
    lines += [f"- {r.scenario} / {r.method}: {r.note}" for r in rows if r.method not in ("original", "retrain")]
    atomic_write_text(a.out / "demo.md", "\n".join(lines) + "\n")
    track_results(a, "demo", meta, [r.to_dict() for r in rows], [a.out / "demo.md", a.out / "demo.json"])
    print(f"wrote {a.out / 'demo.md'} and demo.json ({total:.0f} s)")


if __name__ == "__main__":
    main()
