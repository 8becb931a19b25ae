"""A user's first hour: nothing lost, no shared state, ordinary inputs that used to crash or
mislead, and the command line checking its arguments before it loads a model."""
import copy
import json
import os
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

from erasus import ErasusUnlearner
from erasus.core.exceptions import ConfigError, DataError, UnknownNameError


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# --------------------------------------------------------------------------- nothing lost
def test_inplace_run_that_fails_puts_the_model_back(digits):
    from erasus.core.trainer import Callback

    split = digits.split("class", forget_class=3, seed=0)
    model = copy.deepcopy(digits.original(0))
    before = copy.deepcopy(model)

    class Boom(Callback):
        def on_step_end(self, trainer, module, step, loss):
            if step == 5:
                raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted") as err:
        ErasusUnlearner(model, strategy="negative_gradient", inplace=True).fit(
            split.forget, split.retain, split.holdout, callbacks=[Boom()], progress=False)
    assert _same(model, before)  # half-trained weights were rolled back
    assert any("restored" in n for n in getattr(err.value, "__notes__", []))


def test_save_pretrained_overwrite_is_atomic_and_cleans_up(tmp_path, monkeypatch):
    from erasus.utils import io

    target = tmp_path / "model"

    def build(content):
        return lambda d: (d / "weights.txt").write_text(content)

    io.replace_dir(build("old"), target)
    (tmp_path / ".model.old").mkdir()  # a stale folder from an earlier interrupted save
    calls = {"n": 0}
    real = os.replace

    def flaky(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:  # between the two renames: the old folder is aside, the new one not yet in
            raise OSError("disk full")
        return real(src, dst)

    monkeypatch.setattr(io.os, "replace", flaky)
    with pytest.raises(OSError, match="disk full"):
        io.replace_dir(build("new"), target, overwrite=True)
    monkeypatch.setattr(io.os, "replace", real)
    assert (target / "weights.txt").read_text() == "old"  # the old model is back at the target
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name not in ("model", ".model.old"))
    assert leftovers == []  # no temporary or old folders of this save left behind
    io.replace_dir(build("new"), target, overwrite=True)
    assert (target / "weights.txt").read_text() == "new"
    with pytest.raises(FileExistsError, match="overwrite=True"):
        io.replace_dir(build("again"), target)


def test_configs_and_checkpoints_refuse_to_overwrite(tmp_path):
    from erasus.core.trainer import TrainerConfig
    from erasus.utils.io import save_state_dict

    cfg = TrainerConfig()
    cfg.save(tmp_path / "c.json")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        cfg.save(tmp_path / "c.json")
    cfg.save(tmp_path / "c.json", overwrite=True)
    save_state_dict({"w": torch.ones(2)}, tmp_path / "w.safetensors")
    with pytest.raises(FileExistsError):
        save_state_dict({"w": torch.zeros(2)}, tmp_path / "w.safetensors")


def test_tied_weights_save_and_load(tmp_path):
    pytest.importorskip("transformers")
    from erasus.models.causal_lm import gpt2_lm, word_tokenizer
    from erasus.utils.io import load_state_dict, save_state_dict

    lm = gpt2_lm(word_tokenizer(["a b c d"]), n_layer=1, n_embd=16, n_head=2)
    assert lm.lm_head.weight.data_ptr() == lm.transformer.wte.weight.data_ptr()  # tied
    path = save_state_dict(lm.state_dict(), tmp_path / "lm.safetensors")
    back = load_state_dict(path)
    assert torch.equal(back["lm_head.weight"], back["transformer.wte.weight"])


def test_cli_checks_everything_before_loading_the_model(tmp_path, monkeypatch, capsys):
    pytest.importorskip("transformers")
    from erasus.cli.main import main
    from erasus.unlearners import llm_unlearner

    def never(*a, **k):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(llm_unlearner, "load_causal_lm", never)
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("keep me")
    hist = tmp_path / "h.json"
    hist.write_text("{}")
    base = ["unlearn-lm", "--model", "gpt2", "--tofu", "forget01"]
    cases = [(["--out", str(out)], "--out"), (["--history", str(hist)], "--history"),
             (["--strategy", "npoo"], "Did you mean 'npo'"), (["--strategy", "boundary_shrink"], "not causal"),
             (["--model", str(tmp_path / "missing") + "/"], "no such folder")]
    for extra, msg in cases:
        args = base + extra
        if extra[0] == "--model":
            args = ["unlearn-lm", "--tofu", "forget01"] + extra
        assert main(args) == 2, args
        assert msg in capsys.readouterr().err
    assert (out / "x").read_text() == "keep me" and hist.read_text() == "{}"
    forget = tmp_path / "f.json"
    forget.write_text(json.dumps([{"question": "q", "answer": "a"}]))
    assert main(["unlearn-lm", "--model", "gpt2", "--forget", str(forget), "--retain", str(forget)]) == 2
    assert "also appear in --retain" in capsys.readouterr().err


# --------------------------------------------------------------------------- shared state
def test_fit_and_evaluate_leave_the_callers_random_state_alone(digits):
    split = digits.split("class", forget_class=3, seed=0)
    original = digits.original(0)  # (training the fixture's model seeds torch: done before the caller seeds)
    torch.manual_seed(1)
    np.random.seed(1)
    unl = ErasusUnlearner(original, strategy="random_label")
    unl.fit(split.forget, split.retain, split.holdout, progress=False, seed=0)
    unl.evaluate(split.forget, split.retain, split.test, split.holdout)
    got = (torch.rand(2), np.random.rand(2))
    torch.manual_seed(1)
    np.random.seed(1)
    assert torch.equal(got[0], torch.rand(2)) and np.array_equal(got[1], np.random.rand(2))


@pytest.mark.parametrize("strategy", ["random_label", "saliency_unlearning"])
def test_two_threads_give_the_sequential_result(digits, strategy):
    split = digits.split("class", forget_class=3, seed=0)
    original = digits.original(0)
    # loaders of their own per run: a shared loader object would be shared state of the caller's making
    loaders = lambda: (DataLoader(split.forget.dataset, batch_size=32, shuffle=True),  # noqa: E731
                       DataLoader(split.retain.dataset, batch_size=32, shuffle=True))

    def run(seed):
        f, r = loaders()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ErasusUnlearner(original, strategy=strategy).fit(f, r, split.holdout, progress=False,
                                                                      seed=seed).model

    torch.set_num_threads(1)  # one intra-op thread: the same float reductions in both orders
    try:
        sequential = [run(0), run(1)]
        threaded = [None, None]
        ts = [threading.Thread(target=lambda i=i: threaded.__setitem__(i, run(i))) for i in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    finally:
        torch.set_num_threads(int(os.environ.get("ERASUS_TEST_THREADS", min(2, os.cpu_count() or 1))))
    assert all(_same(a, b) for a, b in zip(sequential, threaded))


def test_first_registry_lookup_from_two_threads():
    code = ("import threading; from erasus.core.registry import get; errs = []\n"
            "def f():\n    try: get('strategy', 'npo'); get('metric', 'mia')\n    except Exception as e: errs.append(e)\n"
            "ts = [threading.Thread(target=f) for _ in range(8)]; [t.start() for t in ts]; [t.join() for t in ts]\n"
            "print(len(errs))")
    for _ in range(3):  # a fresh process each time: the first look-up imports the built-in packages
        assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True).stdout.strip() == "0"


# --------------------------------------------------------------------------- inputs
def test_indices_as_numpy_arrays_and_fractions(digits):
    from erasus.data.datasets import UnlearningDataset

    ds = UnlearningDataset(digits.train, forget_indices=np.array([3, 5, 8]))
    assert ds.forget_indices.tolist() == [3, 5, 8]
    assert UnlearningDataset(digits.train, forget_indices=np.array([3.0])).forget_indices.tolist() == [3]
    with pytest.raises(DataError, match="whole-number"):
        UnlearningDataset(digits.train, forget_indices=[1.7])


def test_bf16_data_overlap_check_and_nan_data():
    from erasus.data.unlearning_dataset import check_disjoint

    x = torch.randn(20, 4)
    bf = TensorDataset(x.bfloat16(), torch.arange(20) % 2)
    with pytest.raises(DataError, match="overlap"):
        check_disjoint(TensorDataset(x[:3].bfloat16(), torch.zeros(3)), bf)
    model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    bad = x.clone()
    bad[2, 1] = float("nan")
    ds = TensorDataset(bad, torch.arange(20) % 2)
    with pytest.raises(DataError, match="non-finite loss"):
        ErasusUnlearner(model, strategy="negative_gradient").fit(
            DataLoader(Subset(ds, range(5)), batch_size=4), DataLoader(Subset(ds, range(5, 15)), batch_size=4),
            DataLoader(Subset(ds, range(15, 20)), batch_size=4), progress=False)


def test_language_model_forget_rows_in_the_retain_list_are_refused():
    pytest.importorskip("transformers")
    from erasus.models import QACollator
    from erasus.models.causal_lm import gpt2_lm, word_tokenizer

    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(6)]
    tok = word_tokenizer([r["question"] + " " + r["answer"] for r in rows] + ["Question: Answer:"])
    coll = QACollator(tok)
    with pytest.raises(DataError, match="overlap"):
        ErasusUnlearner(gpt2_lm(tok, n_layer=1, n_embd=16, n_head=2), strategy="npo").fit(
            DataLoader(rows[:2], batch_size=2, collate_fn=coll), DataLoader(rows[1:], batch_size=2, collate_fn=coll),
            progress=False)


def test_neuron_pruning_leaves_frozen_layers_alone(digits):
    split = digits.split("class", forget_class=3, seed=0)
    model = copy.deepcopy(digits.original(0))
    for p in model[1].parameters():  # freeze the first hidden layer, as a user freezing a backbone
        p.requires_grad_(False)
    res = ErasusUnlearner(model, strategy="neuron_pruning").fit(split.forget, split.retain, progress=False)
    assert torch.equal(res.model[1].weight, model[1].weight)
    assert not torch.equal(res.model[3].weight, model[3].weight)


def test_option_typos_and_wrong_types_name_the_component():
    from erasus.core.registry import build

    with pytest.raises(ConfigError, match=r"gradient_norm: unknown option.*'last_layer'"):
        build("selector", "gradient_norm", lats_layer=True)
    with pytest.raises(ConfigError, match=r"lr: expected a float, got 'fast'"):
        build("strategy", "negative_gradient", lr="fast")


def test_model_card_names_the_objective_behind_lora():
    pytest.importorskip("peft")
    from erasus import LLMUnlearner
    from erasus.models import QACollator
    from erasus.models.causal_lm import gpt2_lm, word_tokenizer

    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(6)]
    tok = word_tokenizer([r["question"] + " " + r["answer"] for r in rows] + ["Question: Answer:"])
    coll = QACollator(tok)
    llm = LLMUnlearner(gpt2_lm(tok, n_layer=1, n_embd=16, n_head=2), strategy="npo", tokenizer=tok,
                       lora={"rank": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        llm.fit(DataLoader(rows[:2], batch_size=2, collate_fn=coll), DataLoader(rows[2:], batch_size=2, collate_fn=coll),
                max_steps=2, min_steps=0, progress=False)
    card = llm.model_card()
    assert "objective `npo` through LoRA adapters" in card and '"rank": 2' in card


def test_lr_1e3_without_held_out_data_is_flagged_and_undone(digits):
    split = digits.split("random", fraction=0.1, seed=0)
    original = digits.original(0)
    with pytest.warns(UserWarning, match="collapsed"):
        res = ErasusUnlearner(original, strategy="negative_gradient", strategy_kwargs={"lr": 1e3}).fit(
            split.forget, split.retain, progress=False)
    from erasus.core.stats import split_stats
    from erasus.models import wrap

    acc = lambda m: split_stats(wrap(m), split.retain)["correct"].mean()  # noqa: E731
    assert acc(res.model) >= acc(original) - 0.05, res.stop_reason  # not the collapsed model
    from erasus.core import StopKind

    assert res.stop.kind is StopKind.GUARD
    assert "retain-accuracy guard" in res.stop_reason and "holdout_data" in res.stop_reason


# --------------------------------------------------------------------------- bare calls
def _bare_strategies():
    from erasus.core.registry import get, list_registered

    return [n for n in list_registered("strategy", family="classifier")
            if not getattr(get("strategy", n), "needs_training_records", False)]


def _acc(model, loader, exclude=None):
    from erasus.core.stats import split_stats
    from erasus.models import wrap

    st = split_stats(wrap(model), loader)
    keep = st["label"] != exclude if exclude is not None else np.ones(len(st["label"]), bool)
    return float(st["correct"][keep].mean())


@pytest.mark.parametrize("name", _bare_strategies())
def test_bare_call_forgets_a_digits_class_or_says_it_falls_short(digits, name):
    """``fit(forget, retain)`` with no held-out data, every strategy at its defaults: the
    class is forgotten (forget accuracy <= 5%) with other-class test accuracy within 5 points
    of the retrained model's, or the strategy states the measured shortfall (``limits``, in
    its docstring and ``erasus list``) and the run warns. A stated limit that no longer holds
    fails too, so the statements stay true."""
    from erasus.core.registry import get

    split = digits.split("class", forget_class=3, seed=0)
    gold = digits.gold(split, 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = ErasusUnlearner(digits.original(0), strategy=name).fit(split.forget, split.retain, progress=False,
                                                                     seed=0)
    f_acc = _acc(res.model, split.forget)
    gap = abs(_acc(res.model, split.test, exclude=3) - _acc(gold, split.test, exclude=3))
    meets = f_acc <= 0.05 and gap <= 0.05
    cls = get("strategy", name)
    if vars(cls).get("limits"):
        assert not meets, f"{name} now forgets the class bare ({f_acc:.3f}, gap {gap:.3f}): drop its stated limit"
        assert cls.limits in cls.__doc__
        assert any("did not forget the class" in str(w.message) for w in caught), [str(w.message) for w in caught]
    else:
        assert meets, f"{name}: forget accuracy {f_acc:.3f}, other-class test gap to retraining {gap:.3f}"


def test_bare_random_deletion_never_ends_farther_from_retraining_than_the_original(fmnist_small):
    """A random 10% of the bundled Fashion-MNIST subset, every strategy called bare: without
    held-out data nothing says how far to go, so the retain-accuracy guard and the
    selectivity rule (a step or edit is kept only when it lowers forget accuracy twice as much
    as retain accuracy) must at least never leave the model farther from the retrained one
    than it started (average gap over forget / retain / test accuracy and MIA-efficacy)."""
    from erasus.experiments import run_scenario

    split = fmnist_small.split("random", fraction=0.1, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = run_scenario(fmnist_small, split, _bare_strategies(), seed=0, progress=False, calls=("bare",),
                            max_samples=2000)
    original = next(r for r in rows if r.method == "original")
    farther = {r.method: round(r.avg_gap, 2) for r in rows if r.avg_gap > original.avg_gap + 1e-6}
    assert not farther, f"farther than the original's {original.avg_gap:.2f}: {farther}"
    closer = [r.method for r in rows if r.avg_gap < original.avg_gap - 0.5 and r.method != "retrain"]
    assert len(closer) >= 5, closer  # and the guard does not simply keep every original


@pytest.mark.slow
def test_scrub_tests_pass_at_one_thread_as_well_as_two():
    """SCRUB's behaviour tests once failed at 2 threads and passed at 1 (floating-point
    order): they are run again here in a process with one torch thread (with -m slow: CI runs
    them at its own thread count in test_behaviour.py)."""
    from pathlib import Path

    if torch.get_num_threads() == 1:
        pytest.skip("this whole run uses one thread: test_behaviour.py's SCRUB tests already ran at one")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "ERASUS_TEST_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_behaviour.py",
                        "-k", "scrub"], cwd=root, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "2 passed" in r.stdout, r.stdout[-3000:]


def test_register_checks_a_class_against_its_kind():
    """Registering an UnlearningModule as a strategy used to fail only at fit() with an
    AttributeError; it is refused at registration, saying what to subclass instead."""
    import torch.nn.functional as F

    from erasus.core import LossStrategy, UnlearningModule
    from erasus.core.registry import get, register

    class Module(UnlearningModule):
        def forget_step(self, batch, batch_idx):
            x, y = batch
            return -F.cross_entropy(self.model(x), y)

    with pytest.raises(TypeError, match="LossStrategy"):
        register("strategy", "first_hour_module")(Module)
    with pytest.raises(TypeError, match="select"):
        register("selector", "first_hour_not_a_selector")(Module)
    with pytest.raises(UnknownNameError):
        get("strategy", "first_hour_module")  # nothing half-registered

    from erasus.core import registry

    try:
        @register("strategy", "first_hour_strategy")
        class Strategy(LossStrategy):
            def forget_step(self, batch, batch_idx):
                x, y = batch
                return -F.cross_entropy(self.model(x), y)

        assert get("strategy", "first_hour_strategy") is Strategy
    finally:  # leave the registry as the other tests expect it
        registry._REGISTRY["strategy"].pop("first_hour_strategy", None)
