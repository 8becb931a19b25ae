"""``ExperimentTracker``: record unlearning runs (parameters, validation metrics, the loss
history, the result, files) to a local folder, to MLflow or to Weights & Biases (offline),
as a trainer callback.

It hooks the start of a run, each validation and the end of the run, and never each step:
per-step losses come from the run's history at the end, so tracking adds no host
synchronisation to the training loop.

    tracker = ExperimentTracker("local", directory="runs")      # or "mlflow", or "wandb"
    ErasusUnlearner(model, strategy="npo").fit(forget, retain, holdout, callbacks=[tracker])
    tracker.runs[-1]                                            # where the run was recorded
    tracker.read()                                              # its parameters and metrics, read back

Or by hand, as the specification writes it (one run for the ``with`` block)::

    with ExperimentTracker("clip_unlearning", backend="wandb") as tracker:
        tracker.log_config({"strategy": "gradient_ascent", "lr": 1e-4})
        result = unlearner.fit(forget, retain)
        tracker.log_metrics({"mia_auc": 0.52, "accuracy": 0.94})
        tracker.log_model(result.model)                         # safetensors, with the run's files
"""
from __future__ import annotations

import json
import math
import shutil
import struct
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..core.callbacks import Callback
from ..core.exceptions import ConfigError

BACKENDS = ("local", "mlflow", "wandb")


def _flat(d: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
    return out


def _finite(metrics: Optional[Dict[str, Any]]) -> Dict[str, float]:
    """The finite numeric values of ``metrics`` (booleans, strings, NaN and inf left out)."""
    return {k: float(v) for k, v in (metrics or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


# -- backends: start a run, log metrics, end it, add to it afterwards, read it back -------------
class _LocalBackend:
    """A folder per run under ``directory``: ``params.json``, ``metrics.jsonl`` (one line per
    value: key, value, step), ``result.json``, ``artifacts/``; nothing overwritten."""

    def __init__(self, directory, **_):
        self.directory = Path(directory)
        self._dir: Optional[Path] = None

    def start(self, name, params) -> str:
        self._dir = self.directory / name
        self._dir.mkdir(parents=True, exist_ok=False)
        self._write("params.json", json.dumps(params, indent=1, default=str))
        return str(self._dir)

    def log(self, rows) -> None:
        if self._dir is None:
            raise ConfigError("No run in progress: log_metrics is called between a run's start and end.")
        self._append(self._dir, rows)

    def end(self, summary, files=()) -> None:
        self._write("result.json", json.dumps(summary, indent=1, default=str))
        self._copy(self._dir, files)
        self._dir = None

    def record(self, ref, rows, files) -> None:
        d = Path(ref)
        if rows:
            self._append(d, rows)
        self._copy(d, files)

    @staticmethod
    def _copy(d: Path, files) -> None:
        for p in map(Path, files):
            (d / "artifacts").mkdir(exist_ok=True)
            shutil.copy2(p, d / "artifacts" / p.name)

    def read(self, ref) -> Dict[str, Any]:
        d = Path(ref)
        lines = (d / "metrics.jsonl").read_text().splitlines() if (d / "metrics.jsonl").exists() else []
        return {"params": json.loads((d / "params.json").read_text()), "metrics": [json.loads(x) for x in lines]}

    @staticmethod
    def _append(d: Path, rows) -> None:
        with open(d / "metrics.jsonl", "a") as f:
            for k, v, s in rows:
                f.write(json.dumps({"key": k, "value": v, "step": s}) + "\n")

    def _write(self, name: str, text: str) -> None:
        from ..utils.io import atomic_write_text

        atomic_write_text(self._dir / name, text)


class _MLflowBackend:
    """MLflow runs under ``experiment``, at ``tracking_uri`` or MLflow's default."""

    def __init__(self, experiment, tracking_uri=None, **_):
        try:
            import mlflow
        except ImportError as e:
            raise ConfigError("The mlflow backend needs mlflow: pip install 'erasus[tracking]'.") from e
        self.mlflow, self.experiment, self.tracking_uri = mlflow, experiment, tracking_uri

    def start(self, name, params) -> str:
        if self.tracking_uri:
            self.mlflow.set_tracking_uri(self.tracking_uri)
        self.mlflow.set_experiment(self.experiment)
        run = self.mlflow.start_run(run_name=name)
        self.mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        return run.info.run_id

    def log(self, rows) -> None:
        for k, v, s in rows:
            self.mlflow.log_metric(k, v, step=s)

    def end(self, summary, files=()) -> None:
        for p in files:
            self.mlflow.log_artifact(str(p))
        self.mlflow.set_tags({k: str(v)[:5000] for k, v in summary.items() if not isinstance(v, (dict, list))})
        self.mlflow.end_run()

    def record(self, ref, rows, files) -> None:
        with self.mlflow.start_run(run_id=ref):
            self.log(rows)
            for p in files:
                self.mlflow.log_artifact(str(p))

    def read(self, ref) -> Dict[str, Any]:
        client = self.mlflow.tracking.MlflowClient(tracking_uri=self.tracking_uri)
        run = client.get_run(ref)
        rows = [{"key": k, "value": m.value, "step": m.step}
                for k in run.data.metrics for m in client.get_metric_history(ref, k)]
        return {"params": dict(run.data.params), "metrics": rows}


class _WandbBackend:
    """Weights & Biases in offline mode: each run is written under ``directory/wandb/``
    (``wandb sync`` uploads it later; nothing is sent while the run is on). Every metric is
    plotted against the trainer's step (``trainer/step``, a W&B custom x-axis), since W&B's own
    step must only grow and the loss history is logged at the end of the run. Values added
    after the run (:meth:`ExperimentTracker.record`) go to a resumed offline run with the same
    id, which ``wandb sync`` merges; files are copied into the run's ``files/`` folder."""

    STEP = "trainer/step"

    def __init__(self, directory, experiment, **_):
        try:
            import wandb
        except ImportError as e:
            raise ConfigError("The wandb backend needs wandb: pip install wandb.") from e
        # absolute: W&B's service process, started by the first run of this process, resolves a
        # relative folder against its own working directory, and a later run's log lands there
        self.wandb, self.directory, self.experiment = wandb, Path(directory).absolute(), experiment
        self._run = None

    def _init(self, **kw):
        self.directory.mkdir(parents=True, exist_ok=True)
        run = self.wandb.init(mode="offline", project=self.experiment, dir=str(self.directory),
                              settings=self.wandb.Settings(silent=True, console="off"), reinit="create_new", **kw)
        run.define_metric(self.STEP)
        run.define_metric("*", step_metric=self.STEP)
        return run

    def start(self, name, params) -> str:
        self._run = self._init(name=name, config=params)
        return self._run.id

    def log(self, rows, run=None) -> None:
        run = run or self._run
        for k, v, s in rows:
            run.log({k: v} if s is None else {k: v, self.STEP: s})

    def end(self, summary, files=()) -> None:
        for k, v in summary.items():
            if not isinstance(v, (dict, list)):
                self._run.summary[k] = v
        for p in map(Path, files):
            shutil.copy2(p, Path(self._run.dir) / p.name)
        self._finish(self._run)
        self._run = None

    def _finish(self, run) -> None:
        """``run.finish()``, then wait until the run's transaction log ends with its exit
        record: W&B's service writes the log on its own and ``finish`` can return before the
        last records reach the file (measured: a run read back at once lacked its history
        about once in twenty)."""
        log = Path(run.dir).parent / f"run-{run.id}.wandb"
        run.finish()
        _wait_for_exit(log)

    def record(self, ref, rows, files) -> None:
        run = self._init(id=ref, resume="allow")
        try:
            self.log(rows, run)
            for p in map(Path, files):
                shutil.copy2(p, Path(run.dir) / p.name)
        finally:
            self._finish(run)

    def read(self, ref) -> Dict[str, Any]:
        """Parameters and metrics of run ``ref`` read back from its offline files (every
        folder written for it: the run and any resumed part)."""
        params, rows = {}, []
        found = sorted((self.directory / "wandb").glob(f"offline-run-*-{ref}/run-{ref}.wandb")) + sorted(
            (self.directory / "wandb").glob(f"offline-run-*-{ref}-*/run-{ref}.wandb"))
        if not found:
            raise ConfigError(f"No offline W&B run {ref!r} under {self.directory / 'wandb'}.")
        for f in found:
            for rec in _wait_for_exit(f):
                kind = rec.WhichOneof("record_type")
                if kind in ("run", "config"):                  # the config arrives with the run or later
                    updates = (rec.run.config if kind == "run" else rec.config).update
                    params.update({u.key: json.loads(u.value_json) for u in updates if not u.key.startswith("_")})
                elif kind == "history":
                    item = {(u.key or "/".join(u.nested_key)): json.loads(u.value_json) for u in rec.history.item}
                    step = item.get(self.STEP)
                    rows += [{"key": k, "value": v, "step": step} for k, v in item.items()
                             if not k.startswith("_") and k != self.STEP]
        return {"params": params, "metrics": rows}


def _wait_for_exit(path: Path, timeout: float = 30.0) -> list:
    """The parsed records of the W&B transaction log ``path`` once it holds the run's exit
    record, polled for up to ``timeout`` seconds (a run still open, or one that crashed, has
    none: then the records there are, with a warning)."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2 as pb

    deadline = time.monotonic() + timeout
    while True:
        records = []
        try:
            for data in _wandb_records(path):
                records.append(pb.Record.FromString(data))
        except (DecodeError, FileNotFoundError):   # not created yet, or a record half written: read again
            pass
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        if time.monotonic() > deadline:
            warnings.warn(f"{path} has no readable exit record after {timeout:.0f} s: the run is still open, did "
                          "not finish or its log is damaged; reading the records that parse.")
            return records
        time.sleep(0.05)


def _wandb_records(path: Path):
    """The records of a W&B transaction log (``run-*.wandb``): a 7-byte header (``:W&B``, a
    magic number, a version), then LevelDB's log format: 32 KiB blocks of chunks, each with a
    7-byte header (CRC, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    data = Path(path).read_bytes()
    if len(data) < 7:                                                 # not written yet
        return
    if data[:4] != b":W&B":
        raise ConfigError(f"{path} is not a W&B run file (expected the ':W&B' header).")
    pos, block, parts = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:                                   # the block's tail is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if pos + 7 + length > len(data):                              # still being written
            return
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            parts = chunk
        elif kind == 3:
            parts += chunk
        elif kind == 4:
            yield parts + chunk


class ExperimentTracker(Callback):
    """Records each run it sees. ``ExperimentTracker(backend)`` or, as the specification writes
    it, ``ExperimentTracker(experiment, backend=backend)``. ``backend``: ``"local"`` (a folder per run under
    ``directory``: ``params.json``, ``metrics.jsonl`` (one line per logged value: key, value,
    step), ``result.json``; a fresh folder for every run, nothing overwritten),
    ``"mlflow"`` (``mlflow`` runs under ``experiment``, at ``tracking_uri`` or MLflow's
    default) or ``"wandb"`` (Weights & Biases offline runs under ``directory/wandb``, project
    ``experiment``; ``wandb sync`` uploads them). ``tags``: added to every run's parameters.
    The same tracker can be given to several runs; ``runs`` lists where each was recorded,
    and :meth:`read` reads one back from its backend."""

    def __init__(self, name: str = "local", *, backend: Optional[str] = None, directory: str = "erasus-runs",
                 experiment: Optional[str] = None, tracking_uri: Optional[str] = None,
                 tags: Optional[Dict[str, Any]] = None):
        # ExperimentTracker("mlflow", ...) names the backend; ExperimentTracker("clip_unlearning",
        # backend="wandb") (the specification's form) names the experiment
        if backend is None:
            backend = name
        elif experiment is not None:
            raise ConfigError("Pass the experiment's name once: ExperimentTracker(name, backend=...) or "
                              "ExperimentTracker(backend, experiment=name).")
        else:
            experiment = name
        if backend not in BACKENDS:
            raise ConfigError(f"Expected backend 'local', 'mlflow' or 'wandb', got {backend!r} (to name the "
                              f"experiment: ExperimentTracker({backend!r}, backend='local')).")
        experiment = experiment or "erasus"
        impl = {"local": _LocalBackend, "mlflow": _MLflowBackend, "wandb": _WandbBackend}[backend]
        self._backend = impl(directory=directory, experiment=experiment, tracking_uri=tracking_uri)
        self.backend, self.directory, self.experiment = backend, Path(directory), experiment
        self.tracking_uri, self.tags = tracking_uri, dict(tags or {})
        self.runs: List[str] = []
        self._open = False          # a run is in progress
        self._manual = False        # inside ``with tracker:``: the block is one run
        self._files: Optional[Any] = None  # files log_model wrote, handed over when the run ends
        self._summary: Dict[str, Any] = {}  # a fit's summary inside the with block

    def _start(self, params: Dict[str, Any]) -> None:
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.runs.append(self._backend.start(name, params))
        self._open = True

    def _end(self, summary: Dict[str, Any], files=()) -> None:
        self._backend.end(summary, list(files))
        self._open = False

    # -- runs by hand (the specification's form) ----------------------------------------------
    def __enter__(self) -> "ExperimentTracker":
        if self._manual:
            raise ConfigError("This tracker is already inside a with block.")
        import tempfile

        self._manual, self._files, self._summary = True, tempfile.TemporaryDirectory(prefix="erasus-track-"), {}
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self._open:
                files = sorted(Path(self._files.name).iterdir())
                self._end({**self._summary, "status": "failed" if exc_type is not None else "finished"}, files)
        finally:
            self._files.cleanup()
            self._manual, self._files = False, None

    def _in_block(self) -> None:
        if not self._manual:
            raise ConfigError("log_config / log_model record a run by hand inside `with ExperimentTracker(...) as "
                              "tracker:`; to record a fit, pass the tracker to fit(..., callbacks=[tracker]).")

    def _manual_run(self) -> None:
        """The ``with`` block's run, started (with the tags only) when it is not yet."""
        self._in_block()
        if not self._open:
            self._start(dict(self.tags))

    def log_config(self, params: Dict[str, Any]) -> None:
        """The parameters of the run the ``with`` block records; called before anything else is
        logged in it (the run starts here)."""
        self._in_block()
        if self._open:
            raise ConfigError("log_config starts the run: call it once, before log_metrics, log_model or fit.")
        self._start({**_flat(params), **self.tags})

    def log_model(self, model, name: str = "model") -> Path:
        """The model's weights (``name.safetensors``; a result's ``.model``) with the run's files,
        handed to the backend when the ``with`` block ends. Returns the file written."""
        from safetensors.torch import save_model

        from ..core.callbacks import UnlearningResult
        from ..models.base import ModelAdapter

        self._manual_run()
        if isinstance(model, (UnlearningResult, ModelAdapter)):  # not getattr: a causal LM's .model is its body
            model = model.model
        path = Path(self._files.name) / f"{name}.safetensors"
        if path.exists():
            raise ConfigError(f"A model named {name!r} was already logged in this run: pass another name.")
        save_model(model, str(path))
        return path

    def log_metrics(self, metrics: Dict[str, float], step: Optional[int] = None) -> None:
        """Log finite numeric values (others are skipped) at ``step``."""
        clean = _finite(metrics)
        if self._manual:
            self._manual_run()
        if clean:
            self._backend.log([(k, v, step) for k, v in clean.items()])

    def record(self, metrics: Optional[Dict[str, float]] = None, files=(), run: int = -1) -> None:
        """Add what is known only after a run ended (the verification's values, the report, the
        plots, the model card) to the run it recorded (``run``: index in :attr:`runs`).
        Locally the files are copied into the run's ``artifacts/`` folder."""
        if not self.runs:
            raise ConfigError("No run recorded yet: pass the tracker to fit(..., callbacks=[tracker]) first.")
        self._backend.record(self.runs[run], [(k, v, None) for k, v in _finite(metrics).items()], list(files))

    def read(self, run: int = -1) -> Dict[str, Any]:
        """Run ``run`` (index in :attr:`runs`) read back from the backend: ``{"params": {...},
        "metrics": [{"key", "value", "step"}, ...]}``."""
        if not self.runs:
            raise ConfigError("No run recorded yet.")
        return self._backend.read(self.runs[run])

    def log_run(self, params: Dict[str, Any], metrics: Optional[Dict[str, float]] = None, files=()) -> str:
        """Record a run that did not go through the trainer (a benchmark, an evaluation) in one
        call: its parameters, final metrics and files. Returns where it was recorded."""
        if self._open:
            raise ConfigError("A run is in progress: log_run records a whole run of its own.")
        self._start({**_flat(params), **self.tags})
        self.log_metrics(metrics or {})
        self._end({}, files)
        return self.runs[-1]

    # -- the trainer's hooks -----------------------------------------------------------------
    def on_fit_start(self, trainer, module) -> None:
        """A run of its own; inside a ``with`` block, the block's run (started here with the
        fit's parameters unless log_config started it)."""
        if self._manual and self._open:
            return
        cfg = getattr(module, "config", None)
        params = {"strategy": getattr(module, "registered_name", "") or type(module).__name__, **self.tags}
        params.update(_flat(cfg.to_dict() if hasattr(cfg, "to_dict") else {}, "strategy."))
        params.update(_flat(trainer.config.to_dict(), "trainer."))
        self._start(params)

    def on_validation_end(self, trainer, module, step, metrics):
        self.log_metrics({k: v for k, v in metrics.items() if k != "step"}, step)
        return None

    def on_fit_end(self, trainer, module, result) -> None:
        h = result.history or {}
        if h.get("loss"):                                              # the loss history in one call
            self._backend.log([("train_loss", float(v), s) for s, v in zip(h.get("step", []), h["loss"])])
        summary = {"strategy": result.strategy, "steps": result.steps, "best_step": result.best_step,
                   "stop_reason": result.stop_reason, "stop_kind": result.stop.kind.value if result.stop else None,
                   **{f"time.{k}": v for k, v in (result.timings or {}).items()},
                   "backoffs": h.get("backoffs", [])}
        if self._manual:  # the with block's run goes on; the fit's summary is written when it ends
            self._summary.update(summary)
            return
        self._end(summary)


# -- benchmarks ---------------------------------------------------------------------------------
def add_tracking_arguments(parser) -> None:
    """``--track local|mlflow|wandb`` (and ``--track-dir``, ``--track-uri``) on a benchmark's
    command line: each result row is then also recorded as a run (see :func:`track_results`)."""
    parser.add_argument("--track", choices=BACKENDS, default=None,
                        help="also record every result row as a run with this ExperimentTracker backend")
    parser.add_argument("--track-dir", default="erasus-runs", help="the local / W&B backend's folder")
    parser.add_argument("--track-uri", default=None, help="the MLflow tracking URI (MLflow's default if unset)")


def track_results(args, name: str, meta: Dict[str, Any], rows: List[Dict[str, Any]], files=()) -> List[str]:
    """Record a benchmark's results with the tracker its command line asked for (``args.track``;
    nothing when unset): one run per result row, its parameters the row's non-numeric fields
    and the benchmark's ``meta``, its metrics the row's finite numbers; the results files
    (markdown, JSON) go with the first run, or with a run of their own when there are no rows.
    Returns where the runs were recorded."""
    backend = getattr(args, "track", None)
    if not backend:
        return []
    tracker = ExperimentTracker(backend, directory=args.track_dir, experiment=f"erasus-{name}",
                                tracking_uri=args.track_uri, tags={"benchmark": name})
    files = list(files)
    for i, row in enumerate(rows or [{}]):
        flat = _flat(row)
        numbers = _finite(flat)
        params = {**_flat(meta, "meta."), **{k: v for k, v in flat.items() if k not in numbers}}
        tracker.log_run(params, numbers, files if i == 0 else ())
    return tracker.runs
