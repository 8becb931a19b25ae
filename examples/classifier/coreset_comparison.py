"""The select stage: unlearn a class from a digits MLP on coresets of a quarter of the forget
set picked by several selectors, verify each on the whole request against the retrained
model, and compare them in one table and plot.

    python examples/classifier/coreset_comparison.py [--out DIR]    # about half a minute on a CPU
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import out_dir  # noqa: E402

from erasus.evaluation.protocols import digits_task  # noqa: E402
from erasus.experiments import format_table, run_scenario  # noqa: E402
from erasus.experiments.runner import coreset_row  # noqa: E402
from erasus.visualization.analysis import run_comparison  # noqa: E402

out = out_dir(__doc__.splitlines()[0])
task = digits_task(cache_dir=out / "models")
split = task.split("class", forget_class=3)
rows = run_scenario(task, split, ["wga"], progress=False)       # original, retrained, WGA on the whole request
for selector in ("random", "kcenter", "gradient_norm", "el2n"):
    rows.append(coreset_row(task, split, "wga", selector, prune_ratio=0.25, progress=False))
print(format_table(rows))
run_comparison([r.to_dict() for r in rows], path=out / "coresets.png")
print(f"plot: {out / 'coresets.png'}")
