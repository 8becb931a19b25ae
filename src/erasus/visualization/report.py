"""``ReportGenerator``: one self-contained HTML file per run (figures embedded, no external
file or script), for the evidence an unlearning run has to show: what was forgotten, the
method and its configuration, how the run went, the verdict with its confidence intervals,
and the plots."""
from __future__ import annotations

import base64
import html
import io
import json
import time
from pathlib import Path
from typing import List, Optional

from ..core.exceptions import DataError
from .plots import PathLike

_STYLE = """body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}.PASS{color:#137333;font-weight:600}.FAIL{color:#b3261e;font-weight:600}
.PARTIAL{color:#b06000;font-weight:600}.INCONCLUSIVE{color:#555;font-weight:600}
figure{margin:1em 0}figcaption{color:#555;font-size:.9em}pre{background:#f7f7f7;padding:.6em;overflow-x:auto}"""


def figure_data_uri(fig, dpi: int = 110) -> str:
    """A matplotlib figure as a ``data:image/png;base64,...`` URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class ReportGenerator:
    """Build a report section by section, then :meth:`write` it::

        rep = ReportGenerator("Forgetting class 3")
        rep.add_run(result).add_verification(benchmark_report)
        rep.add_figure(loss_distributions(models, splits), "Loss distributions")
        rep.write("report.html")

    Text is HTML-escaped; figures are embedded as PNG data URIs, so the file stands alone."""

    def __init__(self, title: str = "Unlearning report"):
        self.title = title
        self.sections: List[str] = []

    def add_text(self, heading: str, text: str) -> "ReportGenerator":
        paras = "".join(f"<p>{html.escape(p)}</p>" for p in str(text).split("\n\n") if p.strip())
        self.sections.append(f"<h2>{html.escape(heading)}</h2>{paras}")
        return self

    def add_table(self, heading: str, header: List[str], rows: List[List[object]]) -> "ReportGenerator":
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(_cell(v) for v in r) + "</tr>" for r in rows)
        self.sections.append(f"<h2>{html.escape(heading)}</h2><table><tr>{head}</tr>{body}</table>")
        return self

    def add_figure(self, fig, caption: str = "") -> "ReportGenerator":
        self.sections.append(f'<figure><img alt="{html.escape(caption)}" src="{figure_data_uri(fig)}">'
                             f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        return self

    def add_run(self, result, history_plot: bool = True) -> "ReportGenerator":
        """The method, its configuration, the steps, the stop reason, the timings and (with
        ``history_plot``) the training history of an :class:`~erasus.core.callbacks.UnlearningResult`."""
        if not hasattr(result, "stop_reason"):
            raise DataError(f"Expected an UnlearningResult, got {type(result).__name__}.")
        rows = [["method", result.strategy], ["steps", result.steps], ["stopped", result.stop_reason]]
        rows += [[f"time: {k}", f"{v:.2f} s"] for k, v in sorted(getattr(result, "timings", {}).items())]
        if getattr(result, "coreset", None) is not None:
            rows.append(["coreset", f"{len(result.coreset)} samples"])
        self.add_table("Run", ["", ""], rows)
        cfg = getattr(result, "config", {}) or {}
        self.sections.append("<h3>Configuration</h3><pre>" + html.escape(json.dumps(cfg, indent=1, default=str))
                             + "</pre>")
        if history_plot and getattr(result, "history", {}).get("loss"):
            from .plots import training_history

            self.add_figure(training_history(result), "Training loss per step and validation losses; green: the "
                            "kept step, red: the stopping rule's back-offs")
        return self

    def add_verification(self, report) -> "ReportGenerator":
        """The verdict and each metric's value, reference, interval of the difference and verdict
        from a :class:`~erasus.evaluation.benchmark.BenchmarkReport` (or any report with
        ``verdict`` and ``results``)."""
        verdict = getattr(report, "verdict", None)
        results = getattr(report, "results", None)
        if verdict is None or results is None:
            raise DataError(f"Expected a verification report with verdict and results, got {type(report).__name__}.")
        rows = []
        for r in results:
            dci = getattr(r, "delta_ci", (float("nan"), float("nan")))
            rows.append([r.name, _num(getattr(r, "value", None)), _num(getattr(r, "reference", None)),
                         f"[{_num(dci[0])}, {_num(dci[1])}]", _Verdict(r.verdict), getattr(r, "note", "")])
        self.sections.append(f'<h2>Verdict: <span class="{html.escape(verdict)}">{html.escape(verdict)}</span></h2>')
        self.add_table("Metrics", ["metric", "value", "reference", "difference (CI)", "verdict", "note"], rows)
        notes = getattr(report, "notes", [])
        if notes:
            self.add_text("Notes", "\n\n".join(notes))
        return self

    def add_metrics(self, metrics, heading: str = "Metrics") -> "ReportGenerator":
        """A table of a metrics dict (``{"forget_accuracy": 0.01, ...}``); nested dicts
        (``{"unlearned": {...}, "original": {...}}``, as ``evaluate`` returns) become one column
        per outer key."""
        if not isinstance(metrics, dict) or not metrics:
            raise DataError(f"Expected a non-empty dict of metrics, got {type(metrics).__name__}.")
        if all(isinstance(v, dict) for v in metrics.values()):
            cols = list(metrics)
            names = list(dict.fromkeys(k for v in metrics.values() for k in v))
            return self.add_table(heading, ["metric"] + cols, [[n] + [_num(metrics[c].get(n)) for c in cols] for n in names])
        return self.add_table(heading, ["metric", "value"], [[k, _num(v)] for k, v in metrics.items()])

    def save(self, path: PathLike, overwrite: bool = False) -> Path:
        """:meth:`write` (the specification's name)."""
        return self.write(path, overwrite)

    def html(self) -> str:
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{_STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>"
                f"<p>Erasus report, {time.strftime('%Y-%m-%d %H:%M')}.</p>" + "".join(self.sections) + "</body></html>")

    def write(self, path: PathLike, overwrite: bool = False) -> Path:
        """Write the report atomically; an existing file is kept unless ``overwrite=True``."""
        from ..utils.io import atomic_write_text

        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists: pass overwrite=True to replace it, or another path.")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, self.html())
        return path


class _Verdict(str):
    pass


def _num(v) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "" if v is None else str(v)
    return f"{f:.4g}"


def _cell(v) -> str:
    if isinstance(v, _Verdict):
        return f'<td class="{html.escape(v)}">{html.escape(v)}</td>'
    return f"<td>{html.escape(str(v))}</td>"


def run_report(result, path: Optional[PathLike] = None, report=None, models=None, splits=None,
               title: str = "Unlearning report", overwrite: bool = False) -> ReportGenerator:
    """The standard report of a run: the run, the verification ``report`` if given, and the
    loss distributions of ``models`` (e.g. original / unlearned / retrained) on ``splits``
    when given; written to ``path`` when given."""
    rep = ReportGenerator(title).add_run(result)
    if report is not None:
        rep.add_verification(report)
    if models and splits:
        from .plots import loss_distributions

        rep.add_figure(loss_distributions(models, splits), "Per-sample loss distributions: forgetting shows as the "
                       "forget split's losses moving onto the held-out ones, as the retrained model's do")
    if path is not None:
        rep.write(path, overwrite=overwrite)
    return rep
