"""Registry, configs, coresets, the trainer's hooks and the guide's examples."""
import copy

import numpy as np
import pytest
import torch

from erasus.core import (Callback, Coreset, UnlearningModule, UnlearningTrainer, get, list_registered, register)
from erasus.core.registry import resolve


def test_registry_aliases_and_listing():
    assert resolve("strategy", "NegGrad+") == "negative_gradient"
    assert resolve("strategy", "GA") == "gradient_ascent"
    assert get("selector", "grad-norm").registered_name == "gradient_norm"
    assert {"gradient_ascent", "negative_gradient", "scrub", "ssd"} <= set(list_registered("strategy"))
    assert {"random", "full", "gradient_norm", "el2n", "kcenter", "herding"} <= set(list_registered("selector"))


def test_register_refuses_a_second_class_under_one_name():
    with pytest.raises(ValueError, match="already registered"):
        @register("strategy", "scrub")
        class Other:
            def unlearn(self, model, forget, retain=None, holdout=None):
                return model


def test_import_erasus_is_light():
    import subprocess
    import sys

    code = "import sys, erasus; erasus.Coreset; print(any(m in sys.modules for m in ('transformers', 'diffusers')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_coreset_algebra_and_persistence(tmp_path):
    a = Coreset([1, 2, 3, 4], [0.9, 0.1, 0.5, 0.8], {"selector": "a"})
    b = Coreset([3, 4, 5], [0.7, 0.2, 0.6], {"selector": "b"})
    assert a.intersect(b).indices.tolist() == [3, 4]
    assert a.union(b).indices.tolist() == [1, 2, 3, 4, 5]
    assert a.filter(min_score=0.5).indices.tolist() == [1, 3, 4]
    assert a.top(2).indices.tolist() == [1, 4]
    p = a.save(tmp_path / "c.json")
    c = Coreset.load(p)
    assert c.indices.tolist() == a.indices.tolist() and np.allclose(c.scores, a.scores)
    with pytest.raises(FileExistsError):
        a.save(p)
    with pytest.raises(ValueError, match="distinct"):
        Coreset([1, 1])


def test_coreset_from_selector_and_to_loader(tiny):
    model, forget, _, _ = tiny
    cs = Coreset.from_selector("el2n", model, forget, k=5)
    loader = cs.to_loader(forget)
    assert len(loader.dataset) == 5
    x0 = loader.dataset[0][0]
    assert torch.equal(x0, forget.dataset[int(cs.indices[0])][0])


def test_monitor_restores_the_best_checkpoint(tiny):
    from erasus.core.stats import split_stats
    from erasus.models import wrap
    from erasus.utils.data import subsample_loader

    model, forget, retain, _ = tiny

    class Forget(UnlearningModule):
        def forget_step(self, batch, i):
            return -self.adapter.loss(batch)

    res = UnlearningTrainer(max_steps=30, min_steps=0, eval_every_steps=5, stopping="monitor",
                            monitor="val_retain_acc", monitor_mode="max", progress=False, lr=0.05).fit(
        Forget(copy.deepcopy(model)), forget, retain)
    best = max(res.history["eval"], key=lambda m: m["val_retain_acc"])
    now = split_stats(wrap(res.model), subsample_loader(retain, 1000, seed=2))["correct"].mean()
    assert now == pytest.approx(best["val_retain_acc"])


def test_callbacks_are_called(tiny):
    model, forget, retain, holdout = tiny
    seen = []

    class Rec(Callback):
        def on_fit_start(self, trainer, module):
            seen.append("start")

        def on_step_end(self, trainer, module, step, loss):
            seen.append("step")

        def on_validation_end(self, trainer, module, step, metrics):
            seen.append("val")

        def on_fit_end(self, trainer, module, result):
            seen.append("end")

    from erasus.strategies import NegativeGradient

    NegativeGradient().unlearn(model, forget, retain, holdout, callbacks=[Rec()], max_steps=4, min_steps=0,
                               progress=False, stopping="calibrated", eval_every_steps=2)
    assert seen[0] == "start" and seen[-1] == "end" and "step" in seen and "val" in seen


def test_calibrated_stopping_without_holdout_says_so(tiny):
    model, forget, retain, _ = tiny
    from erasus.strategies import GradientAscent

    with pytest.warns(UserWarning, match="no held-out data"):
        res = GradientAscent().unlearn(model, forget, retain, stopping="calibrated", max_steps=3, min_steps=0,
                                       progress=False)
    assert "no held-out data" in res.stop_reason or "none was given" in res.stop_reason


def test_unlearner_fit_then_evaluate_reports_mia_auc(tiny):
    """The spec's high-level example: fit, then evaluate(forget, retain) gives mia_auc."""
    from erasus import ErasusUnlearner

    model, forget_loader, retain_loader, holdout = tiny
    unlearner = ErasusUnlearner(model=model, strategy="negative_gradient", selector="gradient_norm")
    result = unlearner.fit(forget_data=forget_loader, retain_data=retain_loader, holdout_data=holdout,
                           prune_ratio=0.5, epochs=2, progress=False)
    assert len(result.coreset) == 6 and result.timings["select_s"] > 0
    metrics = unlearner.evaluate(forget_data=forget_loader, retain_data=retain_loader)
    assert 0.0 <= metrics["mia_auc"] <= 1.0 and "forget_accuracy" in metrics
    assert result.metrics["mia_auc"] == metrics["mia_auc"]


def test_calibrated_stopping_raises_a_rate_too_small_for_the_budget(tiny):
    """A learning rate that cannot reach the target within the step budget is raised by
    1/backoff per decision, at most max_lr_growth in all; max_lr_growth=1 turns it off."""
    from erasus.strategies import NegativeGradient

    model, forget, retain, holdout = tiny
    kw = dict(max_steps=40, min_steps=0, progress=False, stopping="calibrated", eval_every_steps=2)
    res = NegativeGradient(lr=1e-7).unlearn(model, forget, retain, holdout, **kw)  # on by default
    raised = [b for b in res.history["backoffs"] if b["restored_step"] is None]
    assert raised and "raised the learning rate" in res.stop_reason
    lrs = [1e-7] + [b["lr"] for b in raised]
    assert all(b / a == pytest.approx(1 / 0.3) for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] <= 30 * 1e-7 * (1 + 1e-9)
    off = NegativeGradient(lr=1e-7).unlearn(model, forget, retain, holdout, max_lr_growth=1.0, **kw)
    assert not off.history["backoffs"] and "raised" not in off.stop_reason


def test_a_raised_rate_is_judged_on_the_forget_side_of_the_distance(tiny):
    """Distances scripted through a callback: after a first raise, a run whose whole distance
    stands still while its forget side closes in (forget-set progress paid for in retain
    accuracy) keeps its rate; one whose forget side stands still too is raised again."""
    from erasus.core.trainer import Callback
    from erasus.strategies import NegativeGradient

    class Script(Callback):
        def __init__(self, moving):
            self.moving, self.r0 = moving, None

        def on_validation_end(self, trainer, module, step, m):
            self.r0 = m["val_retain_acc"] if self.r0 is None else self.r0
            m["val_retain_acc"], m["calibration_distance"] = self.r0, 0.5
            m["forget_distance"] = 0.5 - (0.02 * max(0, step - 10) if self.moving else 0.0)

    model, forget, retain, holdout = tiny
    kw = dict(epochs=100, max_steps=40, min_steps=0, progress=False, stopping="calibrated", eval_every_steps=2,
              calibration_patience=100)  # 40 steps: judged every 10

    def raises(moving):
        res = NegativeGradient(lr=1e-7).unlearn(model, forget, retain, holdout, callbacks=[Script(moving)], **kw)
        return [b["step"] for b in res.history["backoffs"] if b["restored_step"] is None]

    assert raises(moving=True) == [10]
    assert raises(moving=False) == [10, 20]  # a third raise would pass max_lr_growth (30x)


def _results_file(tmp_path, command, mode="new", max_minutes=None):
    from erasus.experiments import ResultsFile

    render = lambda rows, meta: " ".join(f"{r['m']}={r.get('v')}" for r in rows) + "\n"  # noqa: E731
    return ResultsFile(tmp_path, "r", lambda r: r["m"], render, {"command": command}, mode, max_minutes)


def _read(tmp_path):
    import json

    return json.loads((tmp_path / "r.json").read_text()), (tmp_path / "r.md").read_text()


def test_results_file_writes_every_row_and_a_cut_off_run_resumes(tmp_path):
    """Results written as they come: after each row both files hold it and say they are partial;
    a run cut off after two rows and resumed runs only the missing cells, and the file ends
    with every row once, both commands and their minutes."""
    res = _results_file(tmp_path, "a")
    res.add({"m": 1, "v": 0})
    data, md = _read(tmp_path)
    assert data["rows"] == [{"m": 1, "v": 0}] and data["meta"]["partial"] is True and "Partial results" in md
    res.add({"m": 2, "v": 0})                     # ... and the process is killed here
    resumed = _results_file(tmp_path, "b", mode="resume")
    assert [m for m in (1, 2, 3) if not resumed.done(m)] == [3]
    assert resumed.kept(2) == {"m": 2, "v": 0} and resumed.kept(3) is None   # what a skipped cell measured
    resumed.add({"m": 3, "v": 1})
    resumed.finish()
    data, md = _read(tmp_path)
    assert [r["m"] for r in data["rows"]] == [1, 2, 3] and data["meta"]["partial"] is False
    assert data["meta"]["runs"] == ["a", "b"] and md == "1=0 2=0 3=1\n"
    again = _results_file(tmp_path, "b", mode="resume")   # the same command twice is two runs
    again.finish()
    assert _read(tmp_path)[0]["meta"]["runs"] == ["a", "b", "b"]
    fresh = _results_file(tmp_path, "c")          # without --resume or --merge the file is replaced
    assert not fresh.done(1) and fresh.kept(1) is None
    fresh.add({"m": 9})
    assert [r["m"] for r in _read(tmp_path)[0]["rows"]] == [9]


def test_results_file_merge_replaces_only_the_rerun_rows(tmp_path):
    """--merge: the rows this run produces replace their earlier versions, the rest are kept
    in order, and the minutes of both runs add up."""
    import json

    (tmp_path / "r.json").write_text(json.dumps({"meta": {"command": "a", "total_min": 5.0},
                                                 "rows": [{"m": 1, "v": 0}, {"m": 2, "v": 0}]}))
    res = _results_file(tmp_path, "b", mode="merge")
    assert not res.done(1)                        # merging reruns cells; only resuming skips them
    res.add({"m": 1, "v": 9})
    res.finish()
    data, _ = _read(tmp_path)
    assert data["rows"] == [{"m": 2, "v": 0}, {"m": 1, "v": 9}] and data["meta"]["runs"] == ["a", "b"]
    assert 5.0 <= data["meta"]["total_min"] < 5.5


def test_results_file_keeps_the_files_note_across_runs(tmp_path):
    """A note in the results (why its numbers differ from a clean run: a pause, a rerun) belongs
    to the file: a resumed or merged run keeps it and adds its own once; a new file starts clean."""
    import json

    from erasus.experiments import ResultsFile

    def run(mode, note=None, m=1):
        meta = {"command": mode, **({"note": note} if note else {})}
        res = ResultsFile(tmp_path, "r", lambda r: r["m"], lambda rows, meta: "", meta, mode)
        res.add({"m": m})
        res.add({"m": m + 10})           # the note is added once, however many writes
        res.finish()
        return json.loads((tmp_path / "r.json").read_text())["meta"].get("note")

    assert run("new", "Paused 5 min.") == "Paused 5 min."
    assert run("resume", m=2) == "Paused 5 min."
    assert run("merge", "Rows of m=3 rerun.", m=3) == "Paused 5 min. Rows of m=3 rerun."
    assert run("merge", "Rows of m=3 rerun.", m=3) == "Paused 5 min. Rows of m=3 rerun."
    assert run("new", m=4) is None


def _merge_worker(args):
    path, seed = args
    res = _results_file(path, f"seed {seed}", mode="merge")
    for m in range(5):
        res.add({"m": f"{seed}-{m}", "v": seed})
    res.finish()


def test_results_file_processes_side_by_side_merge_into_one_file(tmp_path):
    """Two processes running parts of one grid with --merge (one seed per core) each rewrite the
    file after every row; neither loses the other's rows."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(2) as pool:
        pool.map(_merge_worker, [(tmp_path, 0), (tmp_path, 1)])
    data, _ = _read(tmp_path)
    assert sorted(r["m"] for r in data["rows"]) == sorted(f"{s}-{m}" for s in (0, 1) for m in range(5))
    assert sorted(data["meta"]["runs"]) == ["seed 0", "seed 1"]


def test_results_file_stops_on_max_minutes_and_says_how_to_go_on(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="max_minutes"):
        _results_file(tmp_path, "a", max_minutes=0)
    done = _results_file(tmp_path, "a", max_minutes=1e-9)   # late, but no cell was skipped: complete
    done.add({"m": 1})
    done.finish()
    assert _read(tmp_path)[0]["meta"]["partial"] is False
    res = _results_file(tmp_path, "a", max_minutes=1e-9)
    res.add({"m": 1})
    assert res.out_of_time()
    res.finish()
    data, md = _read(tmp_path)
    assert data["meta"]["partial"] is True and "--resume" in data["meta"]["stopped"] and "--resume" in md


def test_benchmark_results_options_pick_the_results_file_mode(tmp_path):
    """Every grid benchmark's ``--resume``/``--merge``/``--max-minutes`` (one set of options,
    ``add_results_arguments``) reach its ResultsFile: resume skips the cells in the file, merge
    reruns them, neither replaces a new file's rows, and ``--max-minutes`` stops between cells."""
    import argparse

    from erasus.experiments.benchargs import add_results_arguments, results_file

    def opened(*argv, **kw):
        p = argparse.ArgumentParser()
        add_results_arguments(p, tmp_path, "r", **kw)
        return results_file(p.parse_args(list(argv)), lambda r: r["m"], lambda rows, meta: "", {"command": "x"})

    first = opened()
    first.add({"m": 1})
    first.finish()
    assert opened("--resume").done(1) and not opened("--merge").done(1) and not opened().done(1)
    assert opened("--resume", "--max-minutes", "1e-9").out_of_time() and not opened("--resume").out_of_time()
    import pytest

    with pytest.raises(SystemExit):       # a script without --merge refuses it
        opened("--merge", merge=False)


def test_rerender_rewrites_the_table_from_the_json_and_keeps_the_partial_note(tmp_path):
    """A benchmark's ``--render``: the markdown is rebuilt from the JSON's rows with a new layout,
    a partial file still says it is partial, and a missing file is an error naming the path."""
    import pytest

    from erasus.exceptions import DataError
    from erasus.experiments.runner import rerender

    res = _results_file(tmp_path, "a")
    res.add({"m": 1, "v": 2})
    res.add({"m": 2, "v": 3})
    path = rerender(tmp_path, "r", lambda rows, meta: f"sum {sum(r['v'] for r in rows)}\n")
    assert path == tmp_path / "r.md" and path.read_text().startswith("> **Partial results** (2 rows")
    assert path.read_text().endswith("sum 5\n")
    res.finish()
    assert rerender(tmp_path, "r", lambda rows, meta: f"n {len(rows)}\n").read_text() == "n 2\n"
    with pytest.raises(DataError, match="nothing.json"):
        rerender(tmp_path, "nothing", lambda rows, meta: "")


def test_resolve_device_refuses_a_gpu_torch_cannot_use(monkeypatch):
    """A CUDA device torch does not see is an error that says so before any work starts, from
    the library (``ErasusUnlearner(device=...)``) and from every benchmark's ``--device``."""
    import argparse

    import pytest
    import torch

    from erasus.exceptions import ConfigError
    from erasus.experiments.benchargs import benchmark_device
    from erasus.utils.misc import resolve_device

    assert resolve_device(None) == resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="Expected a device"):
        resolve_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="sees no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(SystemExit):
        benchmark_device(argparse.ArgumentParser(), "cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ConfigError, match="cuda:0 to cuda:1"):
        resolve_device("cuda:2")


def test_calibrated_stopping_backtracks_only_on_a_dip_that_does_not_recover(tiny):
    """Retain accuracy scripted through a callback: a dip below the tolerance that climbs
    back on every evaluation (how random-label methods move) is left alone; a dip that
    keeps falling for two evaluations restores the best checkpoint and cuts the rate."""
    from erasus.core.trainer import Callback
    from erasus.strategies import NegativeGradient

    class Script(Callback):
        def __init__(self, drops):
            self.drops, self.r0 = list(drops), None

        def on_validation_end(self, trainer, module, step, m):
            if self.r0 is None:
                self.r0 = m["val_retain_acc"]
            drop = self.drops.pop(0) if self.drops else 0.0
            m["val_retain_acc"] = self.r0 - drop

    model, forget, retain, holdout = tiny
    kw = dict(max_steps=12, min_steps=0, progress=False, stopping="calibrated", eval_every_steps=2,
              max_lr_growth=1.0, calibration_patience=100)

    def run(drops):
        return NegativeGradient(lr=1e-3).unlearn(model, forget, retain, holdout, callbacks=[Script(drops)], **kw)

    recovering = run([0.0, 0.20, 0.15, 0.10, 0.07, 0.0, 0.0])
    assert not recovering.history["backoffs"] and "backtracked" not in recovering.stop_reason
    falling = run([0.0, 0.20, 0.25, 0.0, 0.0, 0.0, 0.0])
    cuts = [b for b in falling.history["backoffs"] if b["restored_step"] is not None]
    assert len(cuts) == 1 and cuts[0]["lr"] == pytest.approx(1e-3 * 0.3)
    assert "backtracked 1x" in falling.stop_reason


def test_a_callback_can_stop_the_run(tiny):
    """A stopping rule of one's own, without editing the trainer: a hook that returns a string
    stops the run there; with monitored stopping the best checkpoint is restored."""
    from erasus.core import Callback, UnlearningModule, UnlearningTrainer

    model, forget, retain, _ = tiny

    class Ascent(UnlearningModule):
        def forget_step(self, batch, i):
            return -self.adapter.loss(batch)

    class StopAtStep(Callback):
        def __init__(self, at):
            self.at = at

        def on_step_end(self, trainer, module, step, loss):
            return f"reached step {self.at}" if step >= self.at else None

    res = UnlearningTrainer(max_steps=50, min_steps=0, stopping="none", progress=False,
                            callbacks=[StopAtStep(7)]).fit(Ascent(copy.deepcopy(model)), forget, retain)
    assert res.steps == 7 and res.stop_reason == "stopped by StopAtStep: reached step 7 at step 7"

    class StopOnLoss(Callback):
        first = None

        def on_validation_end(self, trainer, module, step, metrics):
            self.first = self.first or metrics["val_forget_loss"]
            return "forget loss doubled" if metrics["val_forget_loss"] > 2 * self.first else None

    res = UnlearningTrainer(max_epochs=1000, max_steps=200, min_steps=0, stopping="monitor",
                            early_stopping_patience=100,
                            validate_every=1, progress=False, callbacks=[StopOnLoss()]).fit(
        Ascent(copy.deepcopy(model)), forget, retain)
    from erasus.core import StopKind

    assert res.stop.kind is StopKind.CALLBACK
    assert res.stop_reason.startswith("stopped by StopOnLoss: forget loss doubled at step"), res.stop_reason
    assert "restored best step" in res.stop_reason and res.steps < 200

    class Wrong(Callback):
        def on_step_end(self, trainer, module, step, loss):
            return True

    with pytest.raises(TypeError, match="expected None"):
        UnlearningTrainer(max_steps=3, min_steps=0, stopping="none", progress=False,
                          callbacks=[Wrong()]).fit(Ascent(copy.deepcopy(model)), forget, retain)


def test_a_saved_component_config_names_its_component_and_loads_back(tmp_path):
    from erasus.core import ConfigError, get
    from erasus.core.registry import load

    for kind, name, kw in (("strategy", "scrub", {"lr": 3e-4}), ("selector", "kcenter", {}), ("metric", "mia_efficacy", {})):
        comp = get(kind, name)(**kw)
        for suffix in (".json", ".yaml"):
            path = comp.save_config(tmp_path / f"{kind}{suffix}")
            back = load(path)
            assert type(back) is type(comp) and back.config == comp.config
            assert type(comp.config).load(path) == comp.config  # the config part alone, as before
    with pytest.raises(FileExistsError):
        get("strategy", "scrub")().save_config(tmp_path / "strategy.json")
    get("strategy", "scrub")().config.save(tmp_path / "bare.json")
    with pytest.raises(ConfigError, match="save_config"):
        load(tmp_path / "bare.json")


def test_protocols_are_a_registry_kind():
    from erasus.core import list_registered
    from erasus.evaluation import UnlearningBenchmark

    assert {"tofu", "muse", "wmdp"} <= set(list_registered("protocol"))
    assert UnlearningBenchmark.protocols()[0] == "general"


@pytest.mark.parametrize("cls, wd", [(torch.optim.Adam, 1e-4), (torch.optim.AdamW, 0.01)])
def test_adam_options_on_the_cpu_change_no_value(cls, wd):
    """The multi-tensor Adam that ``adam_options`` picks on the CPU gives the weights of the
    one-tensor-at-a-time loop torch uses there by default, bit for bit, through a rate change:
    a speed-up that must not change a result (the golden trainer runs pin the loop too)."""
    from erasus.utils.misc import adam_options

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.GELU(), torch.nn.Flatten(), torch.nn.Linear(8 * 36, 5),
                              torch.nn.LayerNorm(5))
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 5, (16,))
    fast = adam_options(list(net.parameters()))
    assert fast == {"foreach": True}
    weights = []
    for opts in ({}, fast):
        m = copy.deepcopy(net)
        opt = cls(m.parameters(), lr=1e-2, weight_decay=wd, **opts)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=40)
        for _ in range(40):
            loss = torch.nn.functional.cross_entropy(m(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        weights.append([p.detach() for p in m.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights))
    assert adam_options([]) == {}
