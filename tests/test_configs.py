"""The config-driven CLI as a user calls it: every shipped config validates, typos get the
closest valid key, `erasus unlearn --config` saves a run whose report carries the verdict,
the configuration and every plot, `erasus evaluate` passes a retrained model and fails the
original and a cheat, `erasus benchmark` and `visualize` write what they say, an ablation
runs what its variants name, and a search beats or ties the default learning rate."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from erasus.cli.main import main
from erasus.core.exceptions import ConfigError
from erasus.experiments.configs import apply_overrides, load_config, resolve_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT_CONFIGS = ROOT / "configs" / "benchmarks" / "scripts"    # options of the scripts under benchmarks/
CONFIGS = sorted(f for f in (ROOT / "configs").rglob("*.yaml") if SCRIPT_CONFIGS not in f.parents)


def test_every_shipped_config_validates(tmp_path):
    from erasus.core.registry import load

    assert len(CONFIGS) >= 15
    (tmp_path / "images").mkdir()
    (tmp_path / "captions.json").write_text("{}")
    data = [f"data.{p}_{k}={tmp_path / ('images' if k == 'images' else 'captions.json')}"
            for p in ("forget", "retain") for k in ("images", "captions")]  # a CLIP config's folders must exist
    for f in CONFIGS:
        if f.parent.name in ("strategies", "selectors"):
            comp = load(f)  # a component's saved config: rebuilds it with the measured defaults
            assert type(comp).registered_name == f.stem
        else:
            cfg = load_config(f, data if f.stem == "clip" else ())
            assert cfg["family"] in ("classifier", "causal_lm", "diffusion", "clip"), f
    assert load_config(ROOT / "configs" / "default.yaml") == resolve_config({})  # the file is the built-in defaults


@pytest.mark.parametrize("overrides, match", [
    (["tsak.name=digits"], "unknown section 'tsak'. Did you mean 'task'"),
    (["task.nme=digits"], "unknown key task.nme. Did you mean 'name'"),
    (["strategy.lrr=0.1"], "strategy.lrr is not a hyperparameter of 'scrub'. Did you mean 'lr'"),
    (["strategy.name=scurb"], "Did you mean 'scrub'"),
    (["selector.name=kcentre"], "Did you mean 'kcenter'"),
    (["strategy.lr=-1"], "lr: expected a value > 0"),
    (["task.name=mnist"], "not a built-in task"),
    (["task.request=half"], "task.request must be 'class' or 'random'"),
    (["selector.prune_ratio=2"], "prune_ratio must be in"),
    (["strategy.lr"], "expected section.key=value"),
])
def test_mistakes_are_named_with_the_closest_valid_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        resolve_config(apply_overrides({"task": {"name": "digits"}}, overrides))


def test_overrides_read_values_as_yaml():
    cfg = resolve_config(apply_overrides({}, ["strategy.lr=1e-4", "task.seed=3", "benchmark.seeds=[0, 1]",
                                              "selector.name=kcenter", "selector.prune_ratio=0.25", "model.path=null"]))
    assert cfg["strategy"]["lr"] == 1e-4 and isinstance(cfg["strategy"]["lr"], float)
    assert cfg["task"]["seed"] == 3 and cfg["benchmark"]["seeds"] == [0, 1]
    assert cfg["selector"] == {"name": "kcenter", "prune_ratio": 0.25}


def test_a_typo_on_the_command_line_is_an_error_before_any_work(capsys, tmp_path):
    assert main(["unlearn", "--config", str(ROOT / "configs/default.yaml"), "--set", "strategy.lrr=1",
                 "--out", str(tmp_path / "r")]) == 2
    assert "Did you mean 'lr'" in capsys.readouterr().err and not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("cfg")
    cache = root / "cache"
    base = ["--set", "task.name=digits", "--set", "task.forget_class=3", "--set", f"task.cache_dir={cache}"]
    assert main(["unlearn", *base, "--set", "strategy.name=wga", "--out", str(root / "wga"), "--no-progress"]) == 0
    return root, base


def test_unlearn_saves_a_run_whose_report_holds_the_verdict_config_and_plots(digits):
    from erasus.experiments.config_run import make_task
    from erasus.metrics import MetricSuite
    from erasus.utils.io import load_state_dict
    from erasus.visualization.runs import load_run, run_figures

    root, _ = digits
    run = load_run(root / "wga")
    assert run["config"]["strategy"]["name"] == "wga" and run["request"]["forget samples"] > 0
    assert run["verification"]["verdict"] in ("PASS", "FAIL", "PARTIAL", "INCONCLUSIVE")
    # the saved model is the unlearned one: its measured forget accuracy is the saved value
    task, split = make_task(run["config"], progress=False)
    model = task.model_fn()
    model.load_state_dict(load_state_dict(root / "wga" / "model.safetensors"))
    got = MetricSuite(("accuracy",)).run(model.eval(), split.forget, split.retain, split.test)
    assert got["forget_accuracy"] == pytest.approx(run["metrics"]["unlearned"]["forget_accuracy"])
    assert run["verification"]["metrics"]["forget_acc"]["value"] == pytest.approx(got["forget_accuracy"])
    html = (root / "wga" / "report.html").read_text()
    assert f'class="{run["verification"]["verdict"]}"' in html and "&quot;forget_class&quot;: 3" in html
    import matplotlib.pyplot as plt

    figs = run_figures(run)
    assert html.count("<img") == len(figs) >= 9
    for f, _ in figs:
        plt.close(f)


def test_evaluate_passes_the_retrained_model_and_fails_the_original_and_a_cheat(digits, tmp_path):
    from erasus.experiments.config_run import make_task
    from erasus.utils.io import save_state_dict

    root, base = digits
    cfg = resolve_config(apply_overrides({}, [b for b in base if b != "--set"]))
    task, split = make_task(cfg, progress=False)
    original, gold = task.original(0), task.gold(split, 0)
    cheat = task.model_fn()
    cheat.load_state_dict(original.state_dict())
    with torch.no_grad():  # hides class 3 at the output; the weights still know it
        [m for m in cheat.modules() if isinstance(m, torch.nn.Linear)][-1].bias[3] -= 100
    codes = {}
    for name, m in (("retrained", gold), ("original", original), ("cheat", cheat)):
        path = save_state_dict(m.state_dict(), tmp_path / f"{name}.safetensors")
        codes[name] = main(["evaluate", *base, "--set", "verify.views=false", "--checkpoint", str(path),
                            "--no-progress"])
    assert codes == {"retrained": 0, "original": 1, "cheat": 1}


def test_benchmark_writes_the_table_json_and_plot_with_the_sanity_rows(digits, tmp_path):
    root, base = digits
    out = tmp_path / "bench"
    assert main(["benchmark", *base, "--strategies", "negative_gradient,wga", "--selectors", "kcenter",
                 "--out", str(out), "--no-progress"]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["original", "retrain", "negative_gradient", "wga",
                                           "negative_gradient + kcenter 50%", "wga + kcenter 50%"]
    verdict = {r["method"]: r["verdict"] for r in rows}
    assert verdict["original"] == "FAIL" and verdict["retrain"] == "PASS"
    assert "| retrain |" in (out / "results.md").read_text().replace("  ", " ")
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_visualize_writes_each_view_and_the_spec_calls(digits, tmp_path, capsys):
    root, _ = digits
    run = str(root / "wga")
    assert main(["visualize", run, "--out", str(tmp_path / "all"), "--formats", "png,svg"]) == 0
    pngs = sorted((tmp_path / "all").glob("*.png"))
    assert len(pngs) >= 9 and len(list((tmp_path / "all").glob("*.svg"))) == len(pngs)
    assert main(["visualize", run, "--type", "embeddings", "--method", "tsne", "--output",
                 str(tmp_path / "embeddings.png")]) == 0
    assert main(["visualize", run, run, "--type", "comparison", "--output", str(tmp_path / "comparison.png")]) == 0
    assert main(["visualize", run, "--type", "report", "--output", str(tmp_path / "report.html")]) == 0
    assert "<img" in (tmp_path / "report.html").read_text()
    assert main(["visualize", run, "--type", "report", "--output", str(tmp_path / "report.html")]) == 2  # kept
    assert "exists" in capsys.readouterr().err


def test_an_llm_config_runs_through_unlearn_lm(tmp_path):
    pytest.importorskip("transformers")
    from erasus.data.datasets.tofu import load_tofu
    from erasus.models.causal_lm import gpt2_lm, word_tokenizer

    records = load_tofu("full").records[:24]
    tok = word_tokenizer([r["question"] + " " + r["answer"] for r in records] + ["Question: Answer:"])
    gpt2_lm(tok, seed=0).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    (tmp_path / "forget.json").write_text(json.dumps(records[:8]))
    (tmp_path / "retain.json").write_text(json.dumps(records[8:]))
    r = subprocess.run([sys.executable, "-m", "erasus", "unlearn", "--config",
                        str(ROOT / "configs/llm/qa_pairs_negative_gradient.yaml"),
                        "--set", f"model.path={tmp_path / 'model'}", "--set", f"data.forget={tmp_path / 'forget.json'}",
                        "--set", f"data.retain={tmp_path / 'retain.json'}", "--set", "strategy.max_steps=3",
                        "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "negative_gradient: 3 steps" in r.stdout and (tmp_path / "out" / "model.safetensors").exists()


def test_a_diffusion_config_erases_saves_and_draws_what_each_model_generates(tmp_path, capsys):
    """``family: diffusion`` (the spec's configs/models/stable_diffusion.yaml, on a small model
    saved to a folder): the command saves what the Python API gives for the same settings, with
    its model card and a picture of the original's and the erased model's images; mistakes are
    named before the model loads, and an existing folder is kept."""
    pytest.importorskip("diffusers")
    from PIL import Image

    from erasus.models.diffusion import TextToImage, toy_text_to_image
    from erasus.unlearners import DiffusionUnlearner

    prompts = ["a red square", "a green square", "a blue square"]
    toy_text_to_image(prompts).save_pretrained(tmp_path / "model")
    cfg = str(ROOT / "configs/models/stable_diffusion.yaml")
    common = ["--set", f"model.path={tmp_path / 'model'}", "--set", "concept.prompts=[a red square]",
              "--set", "concept.preserve=[a green square]", "--set", "sample.n=2", "--set", "sample.steps=4",
              "--no-progress"]
    out = tmp_path / "erased"
    assert main(["unlearn", "--config", cfg, "--set", "strategy.name=uce", "--set", "concept.anchor=a blue square",
                 "--out", str(out), *common]) == 0
    assert "uce:" in capsys.readouterr().out
    api = DiffusionUnlearner(TextToImage.from_pretrained(tmp_path / "model"), strategy="uce")
    api.erase("a red square", anchor="a blue square", preserve=["a green square"], progress=False)
    saved = TextToImage.from_pretrained(out)
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(saved.parameters(), api.model.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(saved.parameters(),
                                                      TextToImage.from_pretrained(tmp_path / "model").parameters()))
    assert "uce" in (out / "README.md").read_text()
    w, h = Image.open(out / "samples.png").size
    assert w > h > 0  # two prompts as rows, 2 models x 2 images as columns
    from erasus.visualization import generation_grid_data

    grid = generation_grid_data({"erased": saved}, ["a red square", "a green square"], n=2, steps=4)["erased"]
    want = (saved.generate(["a red square"] * 2 + ["a green square"] * 2, seed=0, steps=4) + 1) / 2
    np.testing.assert_allclose(grid.reshape(4, 8, 8, 3), want.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    assert main(["unlearn", "--config", cfg, "--set", "strategy.name=uce", "--out", str(out), *common]) == 2
    assert "exists" in capsys.readouterr().err
    for bad, match in [(["concept.prompts=[]"], "concept.prompts must be"),
                       (["strategy.name=salun", "concept.preserve=[]"], "needs prompts of concepts to keep"),
                       (["strategy.name=gradient_ascent", "concept.preserve=[]"], "not made for diffusion"),
                       (["strategy.name=esd", "concept.anchor=a blue square"], "takes no anchor"),
                       (["sample.steps=0"], "sample.steps must be"),
                       (["concept.preserve=[a red square]"], "both erased and preserved"),
                       (["strategy.iterations=-1"], "iterations"),
                       (["concept.image_guard=2"], "image_guard must be true or false"),
                       (["concept.image_guard=true", "concept.preserve=[]"], "judges the preserved prompts"),
                       (["concept.image_guard=true", "strategy.name=uce", "concept.preserve=[a green square]"],
                        "one-shot edit")]:
        with pytest.raises(ConfigError, match=match):
            load_config(cfg, ["concept.prompts=[a red square]", *bad])
    assert main(["benchmark", "--config", cfg, "--out", str(tmp_path / "b")]) == 2  # a KeyError traceback before
    assert "benchmarks/diffusion.py" in capsys.readouterr().err


def test_a_clip_config_unlearns_the_forget_pairs_and_saves_a_loadable_model(tmp_path, capsys):
    """``family: clip`` on a small CLIP trained here on coloured squares saved as PNG files with
    COCO-style captions: the command forgets the red pairs (the share of red images whose own
    caption scores highest falls well below the original's, the other colours' stays high),
    prints recall and that accuracy before and after, and saves a folder that CLIPModel and
    AutoTokenizer load back."""
    pytest.importorskip("transformers")
    from PIL import Image
    from torch.utils.data import DataLoader, TensorDataset
    from transformers import AutoTokenizer, CLIPModel

    from erasus.data.folders import image_captions
    from erasus.experiments.clip_run import run_clip
    from erasus.models.clip import toy_clip, train_clip

    colours = {"red": (230, 30, 30), "green": (30, 200, 40), "blue": (40, 40, 220), "yellow": (220, 220, 30)}
    g = np.random.default_rng(0)
    for part, names in (("forget", ["red"]), ("retain", ["green", "blue", "yellow"])):
        (tmp_path / part).mkdir()
        images, notes = [], []
        for c in names:
            for i in range(24):
                px = np.clip(np.array(colours[c]) + g.normal(0, 25, (16, 16, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(px).save(tmp_path / part / f"{c}{i}.png")
                images.append({"id": len(images), "file_name": f"{c}{i}.png"})
                notes.append({"image_id": len(notes), "caption": f"a photo of a {c} square"})
        (tmp_path / f"{part}.json").write_text(json.dumps({"images": images, "annotations": notes}))
    model, tok = toy_clip([f"a photo of a {c} square" for c in colours])
    pairs = [image_captions(tmp_path / p, tmp_path / f"{p}.json", tok, size=16, max_length=8)[:2]
             for p in ("forget", "retain")]
    train = TensorDataset(torch.cat([x for x, _ in pairs]), torch.cat([i for _, i in pairs]))
    train_clip(model, DataLoader(train, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0)),
               steps=300)
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    sets = [f"model.path={tmp_path / 'model'}", "data.image_size=16", "data.max_length=8"] + [
        f"data.{p}_{k}={tmp_path / p if k == 'images' else tmp_path / (p + '.json')}"
        for p in ("forget", "retain") for k in ("images", "captions")]
    cfg_file = str(ROOT / "configs/models/clip.yaml")
    got = run_clip(load_config(cfg_file, sets), str(tmp_path / "a"), progress=False)
    before, after = got["recall"]["original"], got["recall"]["unlearned"]
    assert before["forget_zero_shot_acc"] > 0.9 and after["forget_zero_shot_acc"] < 0.5, got["recall"]
    assert after["retain_zero_shot_acc"] > 0.8, got["recall"]
    back = CLIPModel.from_pretrained(got["dir"])
    assert all(torch.equal(p, q) for p, q in zip(back.state_dict().values(), got["result"].model.state_dict().values()))
    assert AutoTokenizer.from_pretrained(got["dir"])("a photo of a red square")["input_ids"] == tok(
        "a photo of a red square")["input_ids"]
    args = ["unlearn", "--config", cfg_file, "--out", str(tmp_path / "b"), "--no-progress"]
    assert main(args + [x for s in sets for x in ("--set", s)]) == 0
    printed = capsys.readouterr().out
    assert "unlearned: forget_i2t@1" in printed and "forget_zero_shot_acc" in printed and "original:" in printed
    with pytest.raises(ConfigError, match="data.forget_images must be a folder"):
        load_config(cfg_file, sets + ["data.forget_images=/no/such/folder"])


def test_ablation_runs_each_variant_as_named(digits, tmp_path):
    from erasus.experiments import AblationStudy
    from erasus.experiments.config_run import run_unlearn

    root, base = digits
    overrides = [b for b in base if b != "--set"]
    study = AblationStudy(apply_overrides({}, overrides + ["strategy.name=wga"]), {
        "full": [], "coreset 25%": ["selector.name=kcenter", "selector.prune_ratio=0.25"],
        "no calibrated stop": ["unlearn.holdout=false"]})
    rows = {r.variant: r for r in study.run()}
    alone = run_unlearn(resolve_config(apply_overrides({}, overrides + ["strategy.name=wga", "verify.views=false"])))
    assert rows["full"].forget_acc == pytest.approx(alone["metrics"]["unlearned"]["forget_accuracy"])
    assert rows["full"].verdict == alone["verdict"] and rows["full"].steps == alone["result"]["steps"]
    from erasus.experiments.config_run import make_task

    n_forget = len(make_task(study.configs["full"], progress=False)[1].dataset.forget_indices)
    assert rows["full"].coreset is None and rows["coreset 25%"].coreset == pytest.approx(0.25 * n_forget, abs=1)
    table = study.table()
    assert table.count("\n") == 4 and "coreset 25%" in table
    study.plot(tmp_path / "ablation.png")
    assert (tmp_path / "ablation.png").exists()
    with pytest.raises(ConfigError, match="Did you mean 'prune_ratio'"):
        AblationStudy({}, {"bad": ["selector.name=kcenter", "selector.prune_ration=0.5"]})


def test_search_over_neggrad_lr_is_no_worse_than_the_default(digits):
    pytest.importorskip("optuna")
    from erasus.experiments import HyperparameterSearch
    from erasus.experiments.config_run import make_task
    from erasus.unlearners import ErasusUnlearner

    root, base = digits
    cfg = resolve_config(apply_overrides({}, [b for b in base if b != "--set"]))
    task, split = make_task(cfg, progress=False)
    original, gold = task.original(0), task.gold(split, 0)
    args = (split.forget, split.retain, split.test, split.holdout, gold)
    default = ErasusUnlearner(original, "negative_gradient").fit(split.forget, split.retain, split.holdout,
                                                                 progress=False, seed=0)
    default_gap = HyperparameterSearch.gold_gap(default.model, *args)
    search = HyperparameterSearch("negative_gradient", {"lr": ("log", 1e-5, 1e-2)}, n_trials=6, seed=0)
    best = search.run(original, split.forget, split.retain, split.holdout, gold_model=gold, test_data=split.test)
    first = best.trials[0]
    from erasus.core.registry import get

    assert first["params"] == search.default_params() == {"lr": get("strategy", "negative_gradient").config_class().lr}
    assert first["value"] == pytest.approx(default_gap)  # the search measures what the default run gives
    assert best.value <= default_gap + 1e-9, (best.params, best.value, default_gap)
    assert len({t["params"]["lr"] for t in best.trials}) == 6  # and it searched


def test_a_tracked_run_reads_back_through_mlflow_with_its_verdict_and_report(digits, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)  # MLflow keeps a sqlite store's artefacts in ./mlruns
    from erasus.experiments.config_run import run_unlearn

    root, base = digits
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = resolve_config(apply_overrides({}, [b for b in base if b != "--set"] + [
        "strategy.name=wga", "output.tracking=mlflow", f"output.tracking_uri={uri}", "verify.views=false"]))
    got = run_unlearn(cfg, str(tmp_path / "run"), progress=False)
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    run = client.get_run(got["tracked"])
    assert run.data.params["strategy"] == "wga" and run.data.params["task"] == "digits"
    assert run.data.metrics["verify.forget_acc"] == pytest.approx(got["report"].metrics["forget_acc"])
    assert {a.path for a in client.list_artifacts(got["tracked"])} == {"report.html", "run.json"}
    local = resolve_config(apply_overrides(cfg, ["output.tracking=local", f"output.tracking_dir={tmp_path / 'loc'}"]))
    got = run_unlearn(local, None, progress=False)
    lines = [json.loads(x) for x in (Path(got["tracked"]) / "metrics.jsonl").read_text().splitlines()]
    assert any(x["key"] == "verify.forget_acc" for x in lines)
    if importlib.util.find_spec("wandb") is not None:                 # W&B offline, read back from its files
        from erasus.experiments import ExperimentTracker

        wb = resolve_config(apply_overrides(cfg, ["output.tracking=wandb", f"output.tracking_dir={tmp_path / 'wb'}"]))
        got = run_unlearn(wb, str(tmp_path / "run-wb"), progress=False)
        reader = ExperimentTracker("wandb", directory=tmp_path / "wb")
        reader.runs = [got["tracked"]]
        back = reader.read()
        assert back["params"]["strategy"] == "wga" and back["params"]["task"] == "digits"
        assert any(m["key"] == "verify.forget_acc" and m["value"] == pytest.approx(got["report"].metrics["forget_acc"])
                   for m in back["metrics"])


def test_the_demo_ends_by_writing_its_report_and_saying_where(tmp_path, capsys, monkeypatch, cache_dir):
    """(With the session's model cache: the models the other Fashion-MNIST tests trained.)"""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "erasus-demo-report.html").write_text("a user's file")
    assert main(["demo", "--strategies", "wga", "--no-progress", "--cache-dir", str(cache_dir)]) == 0
    out = capsys.readouterr().out
    assert "Report: " in out and str(tmp_path / "erasus-demo-report-1.html") in out
    assert (tmp_path / "erasus-demo-report.html").read_text() == "a user's file"  # never replaced
    html = (tmp_path / "erasus-demo-report-1.html").read_text()
    assert html.count('class="FAIL"') >= 2 and 'class="PASS"' in html  # the original's and retrain's rows at least
    assert html.count("<img") >= 10


def test_search_without_a_retrained_model_tunes_the_calibrated_distance_and_prunes_by_the_median_rule(digits):
    """No gold model, held-out data only: the objective is the calibrated distance of the model
    each trial returned; trials that fall behind are stopped early, each one exactly when its
    best distance so far is worse than the median of the complete trials at that step."""
    pytest.importorskip("optuna")
    from erasus.experiments import HyperparameterSearch
    from erasus.experiments.config_run import make_task

    root, base = digits
    cfg = resolve_config(apply_overrides({}, [b for b in base if b != "--set"]))
    task, split = make_task(cfg, progress=False)
    best = HyperparameterSearch("negative_gradient", {"lr": ("log", 1e-5, 1e-1)}, n_trials=8, seed=0).run(
        task.original(0), split.forget, split.retain, split.holdout)
    done = [t for t in best.trials if not t["pruned"]]
    pruned = [t for t in best.trials if t["pruned"]]
    assert pruned and len(done) >= 2 and all(t["value"] is None and "pruned by the search" in t["stop_reason"]
                                             for t in pruned)
    assert best.value == min(t["value"] for t in done) <= done[0]["value"]       # the default is trial 0
    assert max(t["steps"] for t in pruned) < max(t["steps"] for t in done)      # pruning cut runs short
    trials = best.study.trials
    for t in pruned:
        ft = trials[t["number"]]
        step = max(ft.intermediate_values)
        earlier = [o.intermediate_values[step] for o in trials[:t["number"]]
                   if o.state.name == "COMPLETE" and step in o.intermediate_values]
        assert min(ft.intermediate_values.values()) > np.median(earlier), (t, earlier)
    with pytest.raises(ConfigError, match="holdout_data for the calibrated distance"):
        HyperparameterSearch("wga", {"lr": ("log", 1e-4, 1e-2)}).run(task.original(0), split.forget, split.retain)


def _script(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_benchmark_script_has_a_config_that_its_own_parser_accepts(capsys):
    """configs/benchmarks/scripts/<script>.yaml for every script under benchmarks/, each
    checked by the script's parser (names and choices) before its --help exits."""
    scripts = sorted(f.stem for f in (ROOT / "benchmarks").glob("*.py"))
    assert sorted(f.stem for f in SCRIPT_CONFIGS.glob("*.yaml")) == scripts
    for name in scripts:
        with pytest.raises(SystemExit) as e:
            _script(name).main(["--config", str(SCRIPT_CONFIGS / f"{name}.yaml"), "--help"])
        assert e.value.code == 0, name
    assert "--config" in capsys.readouterr().out


def test_a_benchmark_config_sets_defaults_the_command_line_overrides(tmp_path):
    import argparse

    from erasus.experiments.benchargs import parse_benchmark_args

    def parser():
        p = argparse.ArgumentParser()
        p.add_argument("--seeds", default="0,1,2")
        p.add_argument("--forget-authors", type=int, default=None)
        p.add_argument("--preset", choices=("cpu", "gpu"), default="cpu")
        p.add_argument("--merge", action="store_true")
        return p

    f = tmp_path / "c.yaml"
    f.write_text("seeds: '0,1'\nforget-authors: 4\nmerge: true\n")
    a = parse_benchmark_args(parser(), ["--config", str(f)])
    assert (a.seeds, a.forget_authors, a.merge, a.preset) == ("0,1", 4, True, "cpu") and a.config_keys == [
        "forget_authors", "merge", "seeds"]
    json.dumps(vars(a))                          # scripts write their arguments into their results
    assert parse_benchmark_args(parser(), ["--config", str(f), "--seeds", "7"]).seeds == "7"
    f.write_text("forget_author: 4\n")
    with pytest.raises(ConfigError, match="did you mean 'forget_authors'"):
        parse_benchmark_args(parser(), ["--config", str(f)])
    f.write_text("preset: tpu\n")
    with pytest.raises(ConfigError, match="expected one of"):
        parse_benchmark_args(parser(), ["--config", str(f)])
