"""``HyperparameterSearch``: tune a strategy's hyperparameters with Optuna (Akiba et al.,
KDD 2019; TPE sampler, seeded) against the gap to a model retrained without the forget data
(or any objective), each trial optionally recorded by an :class:`ExperimentTracker`.

    space = {"lr": ("log", 1e-4, 1e-2), "epochs": ("int", 2, 10)}
    search = HyperparameterSearch("wga", space, n_trials=20)
    best = search.run(model, forget, retain, holdout, gold_model=retrained, test_data=test)
    best.params, best.value, best.trials           # the best settings, their gap, every trial

The default objective is the average gap to the retrained model over forget / retain / test
accuracy and MIA-efficacy (``MetricSuite``'s ``gold_gap``, in points), the quantity the
classification benchmark reports; without a retrained model but with held-out data, it is the
calibrated distance of the model the run returned (the trainer's own measure of how far the
forget set still is from unseen data, see :mod:`erasus.core.stopping`). Bad trials are pruned
early (Optuna's median rule, after two complete trials): each validation reports the
calibrated distance, and from its fifth validation on, a trial whose best distance so far is
worse than the median of the complete trials' distances at that step is stopped there. Tuning on the same data the gap is then reported on
overstates how well the settings carry over: keep a second request (or seeds) for the report.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..core.callbacks import Callback
from ..core.exceptions import ConfigError

Space = Dict[str, Tuple]


@dataclass
class SearchResult:
    params: Dict[str, Any]
    value: float
    trials: List[Dict[str, Any]] = field(default_factory=list)
    study: Any = None


def _normalise(name: str, spec) -> Tuple:
    """A space entry as a tuple spec; the specification's dict form ``{"type": "float", "low": ...,
    "high": ..., "log": True}`` (types ``float``, ``int``, ``categorical`` with ``choices``) too."""
    if not isinstance(spec, dict):
        return spec
    kind, known = spec.get("type"), {"type", "low", "high", "log", "choices"}
    if set(spec) - known:
        raise ConfigError(f"Search space entry {name!r}: unknown keys {sorted(set(spec) - known)}; expected "
                          f"{sorted(known)}.")
    if kind == "categorical":
        return ("choice", list(spec.get("choices", ())))
    if kind in ("float", "int") and "low" in spec and "high" in spec:
        if spec.get("log"):
            if kind == "int":
                raise ConfigError(f"Search space entry {name!r}: a log scale is for floats here.")
            return ("log", spec["low"], spec["high"])
        return (kind, spec["low"], spec["high"])
    raise ConfigError(f"Search space entry {name!r}: expected {{'type': 'float'|'int', 'low', 'high'[, 'log']}} or "
                      f"{{'type': 'categorical', 'choices': [...]}}, got {spec!r}.")


def _suggest(trial, name: str, spec: Tuple):
    kind = spec[0]
    if kind == "log":
        return trial.suggest_float(name, float(spec[1]), float(spec[2]), log=True)
    if kind == "float":
        return trial.suggest_float(name, float(spec[1]), float(spec[2]))
    if kind == "int":
        return trial.suggest_int(name, int(spec[1]), int(spec[2]))
    if kind == "choice":
        return trial.suggest_categorical(name, list(spec[1]))
    raise ConfigError(f"Search space entry {name!r}: expected ('log'|'float'|'int', low, high) or ('choice', "
                      f"[values]), got {spec!r}.")


class _PruneOnDistance(Callback):
    """Reports each validation's calibrated distance to the Optuna trial and, from the
    ``after``-th validation on (the first few steps of every run look alike, and a slow start is
    not a bad run), stops the run when the pruner finds the trial worse than earlier ones."""

    def __init__(self, trial, after: int = 4):
        self.trial, self.after, self.pruned, self.seen = trial, after, False, 0

    def on_validation_end(self, trainer, module, step, metrics):
        d = metrics.get("calibration_distance")
        if d is None or not math.isfinite(d):
            return None
        self.trial.report(float(d), step)
        self.seen += 1
        if self.seen > self.after and self.trial.should_prune():
            self.pruned = True
            return f"pruned by the search at step {step} (calibrated distance {d:.3f}, worse than earlier trials)"
        return None


class HyperparameterSearch:
    """``strategy``: a registered name; ``space``: ``{hyperparameter: spec}`` with specs
    ``("log", low, high)``, ``("float", low, high)``, ``("int", low, high)`` or
    ``("choice", [values])`` (strategy hyperparameters, and the trainer's ``max_epochs`` /
    ``max_steps`` under those names); ``objective(model, params) -> float`` replaces the
    default gap (smaller is better unless ``direction="maximize"``); ``tracker``: an
    :class:`~erasus.experiments.tracking.ExperimentTracker` recording every trial's run;
    ``seed``: the sampler's and every trial's seed; ``include_default`` (on by default): the
    first trial runs the strategy's own defaults for the hyperparameters searched (those inside
    the space), so the search reports the default's value and never returns settings worse
    than it (measured on digits: six TPE trials over NegGrad+'s learning rate without it found
    nothing better than the measured default); ``prune`` (on by default, for
    ``direction="minimize"``): stop trials whose calibrated distance falls behind (module
    docstring); pruned trials are listed with ``"pruned": True`` and no value.

    The specification's form searches any function instead of a strategy::

        search = HyperparameterSearch(objective_fn=my_objective, n_trials=50,
                                      param_space={"lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True}})
        best = search.run()            # my_objective(params) -> value, minimised (direction= to maximise)

    (space entries in that dict form are accepted everywhere: ``"float"``/``"int"`` with
    ``low``, ``high`` and ``log``, ``"categorical"`` with ``choices``). Optuna is required:
    there is no random-search fallback, whose trials would not be the sampler's."""

    TRAINER_KEYS = ("max_epochs", "max_steps", "min_steps", "stopping")

    def __init__(self, strategy: Optional[str] = None, space: Optional[Space] = None, n_trials: int = 20,
                 objective: Optional[Callable] = None, direction: str = "minimize", tracker=None, seed: int = 0,
                 include_default: bool = True, prune: bool = True, *, objective_fn: Optional[Callable] = None,
                 param_space: Optional[Dict[str, Any]] = None):
        from ..core.registry import resolve

        if param_space is not None:
            if space is not None:
                raise ConfigError("Pass space or param_space (the same thing), not both.")
            space = param_space
        if objective_fn is not None:
            if strategy is not None or objective is not None:
                raise ConfigError("objective_fn(params) searches any function: pass it without strategy or objective.")
            if not callable(objective_fn):
                raise ConfigError(f"Expected objective_fn to be callable, got {type(objective_fn).__name__}.")
        elif strategy is None:
            raise ConfigError("Expected a strategy to tune (HyperparameterSearch('wga', space)) or "
                              "objective_fn=<params -> value> with param_space=...")
        else:
            resolve("strategy", strategy)  # a clear error now for an unknown name
        if not space:
            raise ConfigError("Expected a non-empty search space.")
        space = {name: _normalise(name, spec) for name, spec in space.items()}
        for name, spec in space.items():  # checked now, not at the first trial
            ok = (isinstance(spec, tuple) and spec and (
                (spec[0] in ("log", "float", "int") and len(spec) == 3 and float(spec[1]) <= float(spec[2])
                 and (spec[0] != "log" or float(spec[1]) > 0))
                or (spec[0] == "choice" and len(spec) == 2 and len(spec[1]) > 0)))
            if not ok:
                raise ConfigError(f"Search space entry {name!r}: expected ('log'|'float'|'int', low, high) with low <= "
                                  f"high (low > 0 for 'log') or ('choice', [values]), got {spec!r}.")
        if direction not in ("minimize", "maximize"):
            raise ConfigError(f"Expected direction 'minimize' or 'maximize', got {direction!r}.")
        if n_trials < 1:
            raise ConfigError(f"Expected n_trials >= 1, got {n_trials}.")
        self.strategy, self.space, self.n_trials = strategy, dict(space), n_trials
        self.objective, self.direction, self.tracker, self.seed = objective, direction, tracker, seed
        self.include_default, self.prune = include_default, prune
        self.objective_fn = objective_fn

    def default_params(self) -> Dict[str, Any]:
        """The strategy's defaults for the searched hyperparameters that lie inside the space
        (the trainer's keys and values outside a range are left to the sampler)."""
        import dataclasses

        from ..core.registry import get

        if self.strategy is None:
            return {}
        cls = get("strategy", self.strategy)
        cc = getattr(cls, "config_class", None)
        defaults = {f.name: f.default for f in dataclasses.fields(cc)} if cc is not None else {}
        out = {}
        for name, spec in self.space.items():
            v = defaults.get(name, dataclasses.MISSING)
            if v is dataclasses.MISSING or v is None:
                continue
            if spec[0] == "choice":
                if v in spec[1]:
                    out[name] = v
            elif float(spec[1]) <= float(v) <= float(spec[2]):
                out[name] = v
        return out

    def _record_trial(self, trial: Dict[str, Any]) -> None:
        """Add a finished trial's objective to the run the tracker recorded, and the trial
        itself as ``trial.json``."""
        import json
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as d:
            f = Path(d) / "trial.json"
            f.write_text(json.dumps(trial, indent=1))
            self.tracker.record({"search.objective": trial["value"], "search.trial": trial["number"]}, [f])

    def run(self, model=None, forget_data=None, retain_data=None, holdout_data=None, gold_model=None, test_data=None,
            progress: bool = False, **fit_kwargs) -> SearchResult:
        """Tune the strategy on this request (``model``, ``forget_data``, ...); with
        ``objective_fn``, ``run()`` takes nothing and calls ``objective_fn(params)`` per trial."""
        try:
            import optuna
        except ImportError as e:
            raise ConfigError("HyperparameterSearch needs optuna: pip install 'erasus[tracking]'.") from e
        if self.objective_fn is not None:
            given = [k for k, v in dict(model=model, forget_data=forget_data, retain_data=retain_data,
                                        holdout_data=holdout_data, gold_model=gold_model, test_data=test_data,
                                        **fit_kwargs).items() if v is not None]
            if given:
                raise ConfigError(f"With objective_fn, run() takes no data (got {given}): the function runs each trial.")
            trials: List[Dict[str, Any]] = []

            def free(trial):
                params = {k: _suggest(trial, k, spec) for k, spec in self.space.items()}
                value = float(self.objective_fn(params))
                trials.append({"number": trial.number, "params": params, "value": value, "pruned": False})
                if self.tracker is not None:
                    self.tracker.log_run({"search.trial": trial.number, **params}, {"search.objective": value})
                return value

            return self._optimise(optuna, free, trials, prune=False)
        if model is None or forget_data is None:
            raise ConfigError("Expected run(model, forget_data, ...): the request the strategy is tuned on.")
        gold = gold_model is not None
        if self.objective is None and gold and (retain_data is None or test_data is None):
            raise ConfigError("The gap to the retrained model needs gold_model, retain_data and test_data.")
        if self.objective is None and not gold and holdout_data is None:
            raise ConfigError("The default objective needs gold_model (with retain_data and test_data) for the gap "
                              "to a retrained model, or holdout_data for the calibrated distance; or pass objective=.")
        from ..unlearners import ErasusUnlearner

        trials: List[Dict[str, Any]] = []

        def objective(trial):
            params = {k: _suggest(trial, k, spec) for k, spec in self.space.items()}
            trainer = {k: v for k, v in params.items() if k in self.TRAINER_KEYS}
            strat = {k: v for k, v in params.items() if k not in self.TRAINER_KEYS}
            u = ErasusUnlearner(copy.deepcopy(model), strategy=self.strategy, strategy_kwargs=strat)
            pruning = _PruneOnDistance(trial)
            cbs = ([self.tracker] if self.tracker is not None else []) + [pruning]
            res = u.fit(forget_data, retain_data, holdout_data, progress=progress, seed=self.seed,
                        callbacks=cbs, **trainer, **fit_kwargs)
            if pruning.pruned:
                trials.append({"number": trial.number, "params": params, "value": None, "steps": res.steps,
                               "stop_reason": res.stop_reason, "pruned": True})
                raise optuna.TrialPruned(res.stop_reason)
            if self.objective is not None:
                value = self.objective(res.model, params)
            elif gold:
                value = self.gold_gap(res.model, forget_data, retain_data, test_data, holdout_data, gold_model)
            else:
                value = self.calibrated_distance(res)
            trials.append({"number": trial.number, "params": params, "value": float(value), "steps": res.steps,
                           "stop_reason": res.stop_reason, "pruned": False})
            if self.tracker is not None and self.tracker.runs:  # the trial's value, on any backend
                self._record_trial(trials[-1])
            return float(value)

        return self._optimise(optuna, objective, trials, self.prune)

    def _optimise(self, optuna, objective, trials, prune: bool) -> SearchResult:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        pruner = (optuna.pruners.MedianPruner(n_startup_trials=2) if prune and self.direction == "minimize"
                  else optuna.pruners.NopPruner())
        study = optuna.create_study(direction=self.direction, sampler=optuna.samplers.TPESampler(seed=self.seed),
                                    pruner=pruner)
        if self.include_default:
            d = self.default_params()
            if d:
                study.enqueue_trial(d, skip_if_exists=True)
        study.optimize(objective, n_trials=self.n_trials)
        if not any(not t.get("pruned") for t in trials):
            raise ConfigError("Every trial was pruned: run more trials or pass prune=False.")
        return SearchResult(dict(study.best_params), float(study.best_value), trials, study)

    @staticmethod
    def calibrated_distance(result) -> float:
        """The calibrated distance of the model a run returned: the validation at its best
        (restored) step."""
        evals = {e["step"]: e for e in (result.history or {}).get("eval", [])}
        e = evals.get(result.best_step)
        if e is None or "calibration_distance" not in e:
            raise ConfigError("The run recorded no calibrated distance at its returned step: give held-out data and "
                              "stopping='calibrated', a retrained model, or objective=.")
        return float(e["calibration_distance"])

    @staticmethod
    def gold_gap(model, forget, retain, test, holdout, gold_model) -> float:
        """The average gap to the retrained model, in points (``MetricSuite``'s ``avg_gap``)."""
        from ..metrics import MetricSuite

        from .runner import METRICS

        m = MetricSuite(METRICS).run(model, forget, retain, test, holdout,
                                                                     gold_model=gold_model)
        return float(m["avg_gap"])
