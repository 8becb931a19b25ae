"""Stopping rules as objects: a user's own rule works without touching Erasus, the named
rules are objects with structured stop reasons, and a result's ``config`` has one meaning."""
import json
import warnings

import pytest

from erasus import ErasusUnlearner
from erasus.core import (CalibratedStopping, ConfigError, Decision, Stop, StopKind, StoppingRule, TrainerConfig,
                         UnlearningTrainer)
from erasus.core.stats import split_stats
from erasus.models import wrap


def accuracy(model, loader):
    return float(split_stats(wrap(model), loader)["correct"].mean())


class StopUnderForgetAccuracy(StoppingRule):
    """A rule a user writes: stop as soon as forget accuracy is under a threshold."""

    def __init__(self, threshold: float):
        self.threshold = threshold

    def decide(self, step, metrics):
        if metrics["val_forget_acc"] < self.threshold:
            return Decision(stop=Stop(StopKind.RULE, f"forget accuracy {metrics['val_forget_acc']:.2f} under "
                                      f"{self.threshold} at step {step}", metric="val_forget_acc"))
        return Decision()


def test_a_users_stopping_rule_stops_the_run(digits):
    split = digits.split("class", forget_class=3)
    original = digits.original(0)
    before = accuracy(original, split.forget)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ErasusUnlearner(original, strategy="negative_gradient").fit(
            split.forget, split.retain, stopping=StopUnderForgetAccuracy(0.5), eval_every_steps=1, max_steps=200,
            progress=False)
    assert before > 0.9
    assert res.stop.kind is StopKind.RULE and res.stop.metric == "val_forget_acc" and "under 0.5" in res.stop_reason
    assert res.steps < 200  # it stopped the run, at the first step under the threshold
    evals = res.history["eval"]
    assert evals[-1]["val_forget_acc"] < 0.5 and all(e["val_forget_acc"] >= 0.5 for e in evals[:-1])
    # a plain rule keeps the last weights: the returned model is the one the rule stopped on
    assert accuracy(res.model, split.forget) < 0.5
    assert res.config["trainer"]["stopping"].startswith("<") or "StopUnderForgetAccuracy" in res.config["trainer"]["stopping"]


def test_named_rules_are_objects_and_say_why_they_stopped(tiny):
    from erasus.core import get

    model, forget, retain, holdout = tiny
    kinds = {}
    for stopping in ("calibrated", CalibratedStopping(tolerance=10.0), "none"):
        m = get("strategy", "negative_gradient")(lr=1e-3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = m.unlearn(model, forget, retain, holdout, stopping=stopping, max_steps=30, progress=False)
        kinds[str(stopping)[:12]] = res.stop.kind, res.stop.metric
    assert kinds["none"] == (StopKind.FIXED, None)    # no measurement decided a fixed schedule
    # a tolerance of 10 is met at the first validation: the target kind, at step 0, decided by the distance
    assert (StopKind.TARGET, "calibration_distance") in kinds.values()
    assert str(Stop(StopKind.BUDGET, "a", ["b", "c"])) == "a; b; c"


def test_a_stopping_rule_of_the_wrong_kind_is_refused():
    with pytest.raises(ConfigError, match="StoppingRule"):
        TrainerConfig(stopping=42)
    with pytest.raises(ConfigError, match="stopping"):
        UnlearningTrainer(stopping="sometimes")
    cfg = TrainerConfig(stopping=CalibratedStopping(tolerance=0.05)).to_dict()
    assert "CalibratedStopping(tolerance=0.05" in cfg["stopping"]
    json.dumps(cfg)


@pytest.mark.parametrize("strategy", ["negative_gradient", "ssd", "sequential"])
def test_result_config_has_one_meaning(digits, strategy):
    split = digits.split("class", forget_class=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ErasusUnlearner(digits.original(0), strategy=strategy).fit(split.forget, split.retain, progress=False)
    assert set(res.config) == {"strategy", "params", "trainer"}
    assert res.config["strategy"] == res.strategy and isinstance(res.config["params"], dict)
    # the training loop's settings where there is a loop, None for a one-shot edit
    if strategy == "negative_gradient":
        assert res.config["trainer"]["stopping"] == "auto" and res.config["params"]["lr"] == res.config["trainer"]["lr"]
    elif strategy == "ssd":
        assert res.config["trainer"] is None and res.stop.kind is StopKind.EDIT
    else:
        assert res.stop.kind is StopKind.COMPOSITE and "strategies" in res.config["params"]


def test_a_registered_metric_joins_the_benchmark_verdict_by_name(fmnist_small):
    """One implementation of each measurement: a metric named in metrics= is judged against the
    retrained model (as the verification suite judges it) and counts in the overall verdict."""
    from erasus.evaluation import UnlearningBenchmark

    split = fmnist_small.split("random", fraction=0.1)
    gold = fmnist_small.gold(split, 0)
    bench = UnlearningBenchmark(n_bootstrap=100, refit=False, metrics=["mia_efficacy"])
    orig = bench.evaluate(fmnist_small.original(0), split.splits, gold_model=gold)
    retrained = bench.evaluate(fmnist_small.gold(split, 1), split.splits, gold_model=gold)
    assert {r.name: r.verdict for r in orig.results}["mia_efficacy"] == "FAIL" and orig.verdict == "FAIL"
    assert {r.name: r.verdict for r in retrained.results}["mia_efficacy"] == "PASS"
    with pytest.raises(Exception, match="Unknown metric"):
        UnlearningBenchmark(metrics=["no_such_metric"])
