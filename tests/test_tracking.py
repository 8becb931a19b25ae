"""Run tracking records what the run did (parameters, the loss history exactly, validation
metrics, the stop reason) without watching every step, in a fresh folder per run, locally
or in MLflow; the hyperparameter search is seeded, returns the best of the trials it ran,
and records each trial."""
import copy
import json

import numpy as np
import torch
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


def test_wandb_offline_tracker_logs_and_reads_back(problem, tmp_path):
    """W&B in offline mode: parameters, the loss history on the trainer's steps, validation
    metrics and the values added after the run, read back from the run's own files."""
    pytest.importorskip("wandb")
    model, forget, retain, holdout = problem
    tracker = ExperimentTracker("wandb", directory=tmp_path / "wb", experiment="erasus-test", tags={"request": "tiny"})
    res = ErasusUnlearner(copy.deepcopy(model), strategy="npo").fit(forget, retain, holdout, progress=False,
                                                                    max_steps=12, min_steps=0, callbacks=[tracker])
    report = tmp_path / "report.html"
    report.write_text("<html>verdict</html>")
    tracker.record({"verify.forget_acc": 0.25}, [report])
    run = tracker.read()
    assert run["params"]["strategy"] == "npo" and run["params"]["request"] == "tiny"
    assert run["params"]["strategy.beta"] == 0.1
    loss = sorted((m["step"], m["value"]) for m in run["metrics"] if m["key"] == "train_loss")
    assert [s for s, _ in loss] == res.history["step"]
    np.testing.assert_allclose([v for _, v in loss], res.history["loss"], rtol=1e-6)
    assert {m["key"] for m in run["metrics"]} >= {"val_forget_loss", "verify.forget_acc"}
    assert list((tmp_path / "wb" / "wandb").glob(f"offline-run-*-{tracker.runs[0]}*/files/report.html"))


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
    assert len(tracker.runs) == 4 and all((tmp_path / "search" / r.rsplit("/", 1)[-1] / "artifacts" / "trial.json")
                                          .exists() for r in tracker.runs)
    assert [[m["value"] for m in tracker.read(i)["metrics"] if m["key"] == "search.objective"]
            for i in range(4)] == [[t["value"]] for t in a.trials]
    with pytest.raises(Exception, match="gold_model"):  # neither a retrained model nor held-out data
        HyperparameterSearch("wga", space).run(model, forget, retain)
    with pytest.raises(Exception, match="Search space entry 'lr'"):  # before any trial runs
        HyperparameterSearch("wga", {"lr": ("uniform", 0, 1)}, n_trials=1, objective=forget_loss_drop)


@pytest.mark.parametrize("backend", ["local", "wandb"])
def test_benchmark_results_are_tracked_one_run_per_row(backend, tmp_path):
    """``--track`` on a benchmark: every result row becomes a run (its text fields as
    parameters, its numbers as metrics), the results files go with the first; every script
    under benchmarks/ takes the flag and records what it wrote."""
    import argparse
    from pathlib import Path

    from erasus.experiments.tracking import add_tracking_arguments, track_results

    if backend == "wandb":
        pytest.importorskip("wandb")
    p = argparse.ArgumentParser()
    add_tracking_arguments(p)
    args = p.parse_args(["--track", backend, "--track-dir", str(tmp_path / "runs")])
    md = tmp_path / "b.md"
    md.write_text("| method | acc |")
    rows = [{"method": "npo", "seed": 0, "forget_acc": 12.5, "verdict": "PASS", "ok": True},
            {"method": "wga", "seed": 1, "forget_acc": float("nan"), "verdict": "FAIL", "ok": False}]
    runs = track_results(args, "b", {"seconds": 3.0}, rows, [md])
    assert len(runs) == 2
    tracker = ExperimentTracker(backend, directory=tmp_path / "runs")
    tracker.runs = runs                                                      # read back by a fresh tracker
    first, second = tracker.read(0), tracker.read(1)
    assert first["params"]["method"] == "npo" and first["params"]["verdict"] == "PASS"
    assert first["params"]["meta.seconds"] == 3.0 and first["params"]["benchmark"] == "b"
    assert {m["key"]: m["value"] for m in first["metrics"]} == {"seed": 0.0, "forget_acc": 12.5}
    assert {m["key"] for m in second["metrics"]} == {"seed"}               # NaN is not logged
    assert track_results(p.parse_args([]), "b", {}, rows) == []              # no --track: nothing
    for script in sorted(Path(__file__).parent.parent.glob("benchmarks/*.py")):
        text = script.read_text()
        assert "parse_benchmark_args(p, argv)" in text and "track_results(" in text, script.name


def test_the_specifications_experiments_example_as_written(problem, tmp_path, monkeypatch):
    """The specification's README block: a tracked run by hand (W&B offline), a search over a
    function, a full-factorial ablation over a function; each result checked against what it
    must hold."""
    pytest.importorskip("wandb")
    pytest.importorskip("optuna")
    from safetensors.torch import load_file

    from erasus.experiments import AblationStudy
    from erasus.metrics.accuracy import AccuracyMetric
    from erasus.metrics.context import context_of

    model, forget, retain, holdout = problem
    unlearner = ErasusUnlearner(model, strategy="gradient_ascent", strategy_kwargs={"lr": 1e-4})
    monkeypatch.chdir(tmp_path)

    def my_objective(params):  # lowest at lr = 1e-3
        return (np.log10(params["lr"]) + 3) ** 2

    def run_trial(config):
        res = ErasusUnlearner(model, strategy=config["strategy"], strategy_kwargs={"lr": config["lr"]}).fit(
            forget, retain, progress=False, max_steps=10, min_steps=0, stopping="none")
        return {"forget_accuracy": AccuracyMetric().compute(context_of(res, forget=forget))["forget_accuracy"]}

    # Supports: "local", "wandb", "mlflow"
    with ExperimentTracker("clip_unlearning", backend="wandb") as tracker:
        tracker.log_config({"strategy": "gradient_ascent", "lr": 1e-4})
        result = unlearner.fit(forget, retain, progress=False, max_steps=10, min_steps=0)
        tracker.log_metrics({"mia_auc": 0.52, "accuracy": 0.94})
        tracker.log_model(result.model)
    # Hyperparameter search (Optuna)
    search = HyperparameterSearch(
        objective_fn=my_objective,
        param_space={"lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True}},
        n_trials=50,
    )
    best = search.run()
    # Ablation studies
    ablation = AblationStudy(base_config={"lr": 1e-3, "strategy": "wga"}, run_fn=run_trial)
    ablation.run_full_ablation({"lr": [1e-3, 1e-4, 1e-5], "strategy": ["ga", "scrub"]})
    print(ablation.summary())

    # one run for the block, under the experiment's name, read back from its offline files
    assert tracker.backend == "wandb" and tracker.experiment == "clip_unlearning" and len(tracker.runs) == 1
    got = tracker.read()
    assert got["params"]["strategy"] == "gradient_ascent" and got["params"]["lr"] == 1e-4
    values = {m["key"]: m["value"] for m in got["metrics"]}
    assert values["mia_auc"] == 0.52 and values["accuracy"] == 0.94
    saved = list((tmp_path / "erasus-runs" / "wandb").glob(f"offline-run-*-{tracker.runs[0]}/files/model.safetensors"))
    assert len(saved) == 1
    weights = load_file(saved[0])
    assert all(torch.equal(weights[k], v) for k, v in result.model.state_dict().items())
    # the search found the function's minimum
    assert abs(np.log10(best.params["lr"]) + 3) < 0.3 and best.value == min(t["value"] for t in best.trials)
    # every combination ran once; each main effect is the mean of the rows that hold the value
    rows = ablation.to_dicts()
    assert len(rows) == 6 and len({r["variant"] for r in rows}) == 6
    text = ablation.summary()
    for r in rows:
        assert f"| {r['variant']} | 1 | {r['forget_accuracy']:.4g} |" in text
    ga = [r["forget_accuracy"] for r in rows if "strategy=ga" in r["variant"]]
    assert f"| strategy = ga | 3 | {np.mean(ga):.4g} |" in text
    # the specification's names with Erasus's own, or half a call, are errors that say so
    from erasus.core.exceptions import ConfigError

    with pytest.raises(ConfigError, match="backend"):
        ExperimentTracker("clip_unlearning")
    with pytest.raises(ConfigError, match="with"):
        ExperimentTracker("local", directory=tmp_path / "x").log_model(model)
    with pytest.raises(ConfigError, match="takes no data"):
        search.run(model, forget)
    with pytest.raises(ConfigError, match="param_space"):
        HyperparameterSearch()
    with pytest.raises(ConfigError, match="log"):
        HyperparameterSearch(objective_fn=my_objective, param_space={"n": {"type": "int", "low": 1, "high": 9, "log": True}})
