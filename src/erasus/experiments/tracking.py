"""``ExperimentTracker``: record unlearning runs (parameters, validation metrics, the loss
history, the result, files) to a local folder or to MLflow, as a trainer callback.

It hooks the start of a run, each validation and the end of the run, and never each step:
per-step losses come from the run's history at the end, so tracking adds no host
synchronisation to the training loop.

    tracker = ExperimentTracker("local", directory="runs")      # or "mlflow" (mlflow installed)
    ErasusUnlearner(model, strategy="npo").fit(forget, retain, holdout, callbacks=[tracker])
    tracker.runs[-1]                                            # where the run was recorded
"""
from __future__ import annotations

import json
import math
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..core.callbacks import Callback
from ..core.exceptions import ConfigError


def _flat(d: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
    return out


class ExperimentTracker(Callback):
    """Records each run it sees. ``backend``: ``"local"`` (a folder per run under
    ``directory``: ``params.json``, ``metrics.jsonl`` (one line per logged value: key, value,
    step), ``result.json``; a fresh folder for every run, nothing overwritten) or
    ``"mlflow"`` (``mlflow`` runs under ``experiment``, at ``tracking_uri`` or MLflow's
    default). ``tags``: added to every run's parameters. The same tracker can be given to
    several runs; ``runs`` lists where each was recorded."""

    def __init__(self, backend: str = "local", directory: str = "erasus-runs", experiment: str = "erasus",
                 tracking_uri: Optional[str] = None, tags: Optional[Dict[str, Any]] = None):
        if backend not in ("local", "mlflow"):
            raise ConfigError(f"Expected backend 'local' or 'mlflow', got {backend!r}.")
        if backend == "mlflow":
            try:
                import mlflow  # noqa: F401
            except ImportError as e:
                raise ConfigError("The mlflow backend needs mlflow: pip install 'erasus[tracking]'.") from e
        self.backend, self.directory, self.experiment = backend, Path(directory), experiment
        self.tracking_uri, self.tags = tracking_uri, dict(tags or {})
        self.runs: List[str] = []
        self._dir: Optional[Path] = None
        self._mlflow_run = None

    # -- the backend's three operations ------------------------------------------------------
    def _start(self, params: Dict[str, Any]) -> None:
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        if self.backend == "local":
            self._dir = self.directory / name
            self._dir.mkdir(parents=True, exist_ok=False)
            self._write("params.json", json.dumps(params, indent=1, default=str))
            self.runs.append(str(self._dir))
        else:
            import mlflow

            if self.tracking_uri:
                mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_experiment(self.experiment)
            self._mlflow_run = mlflow.start_run(run_name=name)
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
            self.runs.append(self._mlflow_run.info.run_id)

    def log_metrics(self, metrics: Dict[str, float], step: Optional[int] = None) -> None:
        """Log finite numeric values (others are skipped) at ``step``."""
        clean = {k: float(v) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
        if not clean:
            return
        if self.backend == "local":
            if self._dir is None:
                raise ConfigError("No run in progress: log_metrics is called between a run's start and end.")
            with open(self._dir / "metrics.jsonl", "a") as f:
                for k, v in clean.items():
                    f.write(json.dumps({"key": k, "value": v, "step": step}) + "\n")
        else:
            import mlflow

            mlflow.log_metrics(clean, step=step)

    def _end(self, summary: Dict[str, Any]) -> None:
        if self.backend == "local":
            self._write("result.json", json.dumps(summary, indent=1, default=str))
            self._dir = None
        else:
            import mlflow

            mlflow.set_tags({k: str(v)[:5000] for k, v in summary.items() if not isinstance(v, (dict, list))})
            mlflow.end_run()
            self._mlflow_run = None

    def record(self, metrics: Optional[Dict[str, float]] = None, files=(), run: int = -1) -> None:
        """Add what is known only after a run ended (the verification's values, the report, the
        plots, the model card) to the run it recorded (``run``: index in :attr:`runs`).
        Locally the files are copied into the run's ``artifacts/`` folder."""
        import shutil

        if not self.runs:
            raise ConfigError("No run recorded yet: pass the tracker to fit(..., callbacks=[tracker]) first.")
        ref = self.runs[run]
        clean = {k: float(v) for k, v in (metrics or {}).items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
        if self.backend == "local":
            d = Path(ref)
            if clean:
                with open(d / "metrics.jsonl", "a") as f:
                    for k, v in clean.items():
                        f.write(json.dumps({"key": k, "value": v, "step": None}) + "\n")
            for p in map(Path, files):
                (d / "artifacts").mkdir(exist_ok=True)
                shutil.copy2(p, d / "artifacts" / p.name)
        else:
            import mlflow

            with mlflow.start_run(run_id=ref):
                if clean:
                    mlflow.log_metrics(clean)
                for p in files:
                    mlflow.log_artifact(str(p))

    def log_run(self, params: Dict[str, Any], metrics: Optional[Dict[str, float]] = None, files=()) -> str:
        """Record a run that did not go through the trainer (a benchmark, an evaluation) in one
        call: its parameters, final metrics and files. Returns where it was recorded."""
        self._start({**_flat(params), **self.tags})
        self._end({})
        self.record(metrics, files)
        return self.runs[-1]

    def _write(self, name: str, text: str) -> None:
        from ..utils.io import atomic_write_text

        atomic_write_text(self._dir / name, text)

    # -- the trainer's hooks -----------------------------------------------------------------
    def on_fit_start(self, trainer, module) -> None:
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
        if self.backend == "local" and h.get("loss"):
            with open(self._dir / "metrics.jsonl", "a") as f:  # the loss history in one write
                for s, v in zip(h.get("step", []), h["loss"]):
                    f.write(json.dumps({"key": "train_loss", "value": v, "step": s}) + "\n")
        elif h.get("loss"):
            import mlflow

            for s, v in zip(h.get("step", []), h["loss"]):
                mlflow.log_metric("train_loss", v, step=s)
        self._end({"strategy": result.strategy, "steps": result.steps, "best_step": result.best_step,
                   "stop_reason": result.stop_reason, "stop_kind": result.stop.kind.value if result.stop else None,
                   **{f"time.{k}": v for k, v in (result.timings or {}).items()},
                   "backoffs": h.get("backoffs", [])})
