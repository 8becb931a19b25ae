"""Run tracking records what the run did (parameters, the loss history exactly, validation
metrics, the stop reason) without watching every step, in a fresh folder per run, locally
or in MLflow; the hyperparameter search is seeded, returns the best of the trials it ran,
and records each trial."""
import copy
import json

import numpy as np
import pytest

from erasus.core.callbacks import Callback
from erasus.experiments import ExperimentTracker, HyperparameterSearch
from erasus.testing import tiny_problem
from erasus.unlearners import ErasusUnlearner


@pytest.fixture(scope="module")
def problem():
    return tiny_problem()


def test_local_tracker_records_the_run_without_per_step_hooks(problem, tmp_path):
    model, forget, retain, holdout = problem
    tracker = ExperimentTracker("local", directory=tmp_path / "runs", tags={"request": "tiny"})
    assert type(tracker).on_step_end is Callback.on_step_end  # adds no host sync per step
    res = ErasusUnlearner(copy.deepcopy(model), strategy="npo").fit(forget, retain, holdout, progress=False,
                                                                    max_steps=25, min_steps=0, callbacks=[tracker])
    ErasusUnlearner(copy.deepcopy(model), strategy="wga").fit(forget, retain, holdout, progress=False, max_steps=5,
                                                              min_steps=0, callbacks=[tracker])
    assert len(tracker.runs) == 2 and len(set(tracker.runs)) == 2
    run = tmp_path / "runs" / tracker.runs[0].rsplit("/", 1)[-1]
    params = json.loads((run / "params.json").read_text())
    assert params["strategy"] == "npo" and params["request"] == "tiny" and params["strategy.beta"] == 0.1
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [x["value"] for x in lines if x["key"] == "train_loss"]
    np.testing.assert_allclose(losses, res.history["loss"])
    assert {x["key"] for x in lines} >= {"val_forget_loss", "val_retain_acc"}
    result = json.loads((run / "result.json").read_text())
    # the stop reason as the trainer ended the run (a strategy may append a remark after it)
    assert res.stop_reason.startswith(result["stop_reason"]) and result["steps"] == res.steps


def test_mlflow_tracker_logs_params_and_history(problem, tmp_path):
    mlflow = pytest.importorskip("mlflow")
    model, forget, retain, holdout = problem
    tracker = ExperimentTracker("mlflow", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="erasus-test")
    res = ErasusUnlearner(copy.deepcopy(model), strategy="npo").fit(forget, retain, holdout, progress=False,
                                                                    max_steps=12, min_steps=0, callbacks=[tracker])
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(tracker.runs[0])
    assert run.data.params["strategy"] == "npo" and res.stop_reason.startswith(run.data.tags["stop_reason"])
    hist = client.get_metric_history(tracker.runs[0], "train_loss")
    np.testing.assert_allclose([m.value for m in sorted(hist, key=lambda m: m.step)], res.history["loss"], rtol=1e-6)


def test_search_is_seeded_returns_its_best_trial_and_records_each(problem, tmp_path):
    pytest.importorskip("optuna")
    from erasus.core.stats import split_stats
    from erasus.models import wrap

    model, forget, retain, holdout = problem

    def forget_loss_drop(m, params):  # maximise: how far the forget loss rose
        return float(split_stats(wrap(m), forget)["loss"].mean())

    space = {"lr": ("log", 1e-4, 3e-2), "max_steps": ("int", 5, 20)}
    tracker = ExperimentTracker("local", directory=tmp_path / "search")
    a = HyperparameterSearch("gradient_ascent", space, n_trials=4, objective=forget_loss_drop, direction="maximize",
                             tracker=tracker, seed=3).run(model, forget, retain, holdout, min_steps=0, stopping="none")
    b = HyperparameterSearch("gradient_ascent", space, n_trials=4, objective=forget_loss_drop, direction="maximize",
                             seed=3).run(model, forget, retain, holdout, min_steps=0, stopping="none")
    assert [t["params"] for t in a.trials] == [t["params"] for t in b.trials]  # same seed, same trials
    assert a.value == max(t["value"] for t in a.trials) and a.params == max(a.trials, key=lambda t: t["value"])["params"]
    assert len(tracker.runs) == 4 and all((tmp_path / "search" / r.rsplit("/", 1)[-1] / "trial.json").exists()
                                          for r in tracker.runs)
    with pytest.raises(Exception, match="gold_model"):
        HyperparameterSearch("wga", space).run(model, forget, retain, holdout)
    with pytest.raises(Exception, match="Search space entry 'lr'"):  # before any trial runs
        HyperparameterSearch("wga", {"lr": ("uniform", 0, 1)}, n_trials=1, objective=forget_loss_drop)
