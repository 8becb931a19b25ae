"""Config-driven runs: the YAML files under ``configs/`` and ``erasus unlearn --config``.

A config is a mapping of sections. Every key is checked before any work starts: an unknown key
is an error naming the closest valid key, a strategy's or selector's hyperparameters are
checked against that component's config class (its fields, types and ranges), and values given
on the command line as dotted overrides (``--set strategy.lr=1e-4``) go through the same
checks. Two families:

``family: classifier`` (the default) — a request on a classification task::

    task:     {name: fmnist_small, request: class, forget_class: 1, fraction: 0.1, seed: 0,
               cache_dir: null, factory: null}
    model:    {path: null}             # weights of the task's architecture; null: train it (cached)
    strategy: {name: scrub, lr: ...}   # name + the strategy's own hyperparameters
    selector: {name: null, prune_ratio: null, ...}
    unlearn:  {holdout: true, max_steps: null, epochs: null}
    verify:   {gold: retrain, max_samples: 5000, views: true}
    benchmark: {strategies: [...], selectors: [], seeds: [0]}   # used by `erasus benchmark`
    output:   {dir: null, overwrite: false, tracking: null, tracking_dir: erasus-runs, tracking_uri: null}

``output.tracking``: ``local``, ``mlflow`` or ``wandb`` (offline) also records the run with an
:class:`~erasus.experiments.tracking.ExperimentTracker` (parameters, validation metrics, the
loss history, the verification's values, the report and run files as artefacts).

``task.name`` is one of the built-in tasks (``digits``, ``fmnist_small``, ``fmnist``) or
``task.factory: "package.module:function"`` returning an
:class:`~erasus.evaluation.protocols.ClassificationTask` (your data and model recipe).

``family: causal_lm`` — question/answer pairs unlearned from a Hugging Face causal LM (the
``erasus unlearn-lm`` command's options as sections)::

    model:    {path: finetuned/, tokenizer: null, lora: false}
    data:     {tofu: forget10, tofu_dir: null, forget: null, retain: null}
    strategy: {name: npo, lr: null, epochs: null, max_steps: null}
    train:    {batch_size: 8, max_length: 128, seed: 0}
    output:   {dir: null, overwrite: false, history: null}

``family: diffusion`` — a concept erased from a text-to-image model (a diffusers pipeline's
folder or Hub name, or a model Erasus saved) with
:class:`~erasus.unlearners.DiffusionUnlearner`, saved with its model card, and a picture of
what the original and the erased model draw for each prompt::

    model:    {path: CompVis/stable-diffusion-v1-4, device: null}
    concept:  {prompts: [a painting in the style of Van Gogh], anchor: null, preserve: [],
               image_guard: false}   # true: the stopping rule also judges the preserved prompts' images
    strategy: {name: esd, lr: ...}     # name + the method's own hyperparameters
    sample:   {n: 4, seed: 0, steps: 25, guidance_scale: 5.0}   # n: 0 draws nothing; erase checks at this guidance
    output:   {dir: null, overwrite: false}

``family: clip`` — image-text pairs unlearned from a CLIP model (a transformers ``CLIPModel``
folder or Hub name) with :class:`~erasus.unlearners.VLMUnlearner`; each data set is a folder of
images and a COCO-style captions file (:func:`~erasus.data.folders.image_captions`, through the
model's own image processor when its folder has one). The saved folder holds the model, its
tokenizer and image processor, and the model card; the command prints retrieval recall on the
forget and retain pairs before and after::

    model:    {path: openai/clip-vit-base-patch32, device: null}
    data:     {forget_images: ..., forget_captions: ..., retain_images: ..., retain_captions: ...,
               batch_size: 32, image_size: 224, max_length: 77, seed: 0}
    strategy: {name: modality_decoupling, lr: ...}
    output:   {dir: null, overwrite: false}
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

from ..core.exceptions import ConfigError

CLASSIFIER: Dict[str, Dict[str, Any]] = {
    "task": {"name": "fmnist_small", "request": "class", "forget_class": 1, "fraction": 0.1, "seed": 0,
             "cache_dir": None, "factory": None},
    "model": {"path": None},
    "strategy": {"name": "scrub"},
    "selector": {"name": None, "prune_ratio": None},
    "unlearn": {"holdout": True, "max_steps": None, "epochs": None},
    "verify": {"gold": "retrain", "max_samples": 5000, "views": True},
    "benchmark": {"strategies": ["gradient_ascent", "negative_gradient", "scrub", "wga"], "selectors": [],
                  "seeds": [0]},
    "output": {"dir": None, "overwrite": False, "tracking": None, "tracking_dir": "erasus-runs",
               "tracking_uri": None},
}
CAUSAL_LM: Dict[str, Dict[str, Any]] = {
    "model": {"path": None, "tokenizer": None, "lora": False},
    "data": {"tofu": None, "tofu_dir": None, "forget": None, "retain": None},
    "strategy": {"name": "npo", "lr": None, "epochs": None, "max_steps": None},
    "train": {"batch_size": 8, "max_length": 128, "seed": 0},
    "output": {"dir": None, "overwrite": False, "history": None},
}
DIFFUSION: Dict[str, Dict[str, Any]] = {
    "model": {"path": None, "device": None},
    "concept": {"prompts": None, "anchor": None, "preserve": [], "image_guard": False},
    "strategy": {"name": "esd"},
    "sample": {"n": 4, "seed": 0, "steps": 25, "guidance_scale": 5.0},
    "output": {"dir": None, "overwrite": False},
}
CLIP: Dict[str, Dict[str, Any]] = {
    "model": {"path": None, "device": None},
    "data": {"forget_images": None, "forget_captions": None, "retain_images": None, "retain_captions": None,
             "batch_size": 32, "image_size": 224, "max_length": 77, "seed": 0},
    "strategy": {"name": "modality_decoupling"},
    "output": {"dir": None, "overwrite": False},
}
FAMILIES = {"classifier": CLASSIFIER, "causal_lm": CAUSAL_LM, "diffusion": DIFFUSION, "clip": CLIP}
TASKS = ("digits", "fmnist_small", "fmnist")


def _suggest(key: str, valid: Iterable[str]) -> str:
    valid = sorted(valid)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return (f" Did you mean {close[0]!r}?" if close else "") + f" Valid keys: {', '.join(valid)}."


def load_config(path, overrides: Iterable[str] = ()) -> Dict[str, Any]:
    """Read a YAML/JSON config, apply ``overrides`` (``"section.key=value"``, the value read as
    YAML), fill in the defaults and validate. Returns the complete config."""
    from ..core.config import read_config_file

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"Config file {p} not found. The shipped configs are under configs/ in the repository "
                          "(`erasus unlearn --config configs/classifier/fmnist_class.yaml`).")
    try:
        raw = read_config_file(p)
    except Exception as e:  # yaml / json syntax
        raise ConfigError(f"{p}: could not parse it ({type(e).__name__}: {e}).") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of sections (task:, strategy:, ...), got {type(raw).__name__}.")
    return resolve_config(apply_overrides(raw, overrides), source=str(p))


def apply_overrides(cfg: Dict[str, Any], overrides: Iterable[str]) -> Dict[str, Any]:
    """``cfg`` with each ``"a.b=value"`` set (a copy; the value parsed as YAML: ``1e-4`` is a
    number, ``[a, b]`` a list, ``null`` None)."""
    import yaml

    out = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. --set strategy.lr=1e-4.")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) == 1 and parts[0] == "family":
            out["family"] = yaml.safe_load(text)
            continue
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"--set {item!r}: expected section.key=value (two names and a dot), e.g. "
                              "--set strategy.lr=1e-4.")
        sec = out.setdefault(parts[0], {})
        if not isinstance(sec, dict):
            raise ConfigError(f"--set {item!r}: {parts[0]} is not a section.")
        try:
            v = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: could not read the value as YAML ({e}).") from e
        # YAML 1.1 reads "1e-4" as a string: take it as the number it spells
        if isinstance(v, str):
            try:
                v = float(v) if any(c in v for c in ".eE") else v
            except ValueError:
                pass
        sec[parts[1]] = v
    return out


def _resolve(kind: str, name, source: str, key: str) -> str:
    """The registered name, or the registry's error (with its suggestion) naming the config and key."""
    from ..core.exceptions import UnknownNameError
    from ..core.registry import resolve

    try:
        return resolve(kind, name)
    except (UnknownNameError, TypeError) as e:
        raise ConfigError(f"{source}: {key}: {e}") from e


def _component_fields(kind: str, name: str) -> Dict[str, Any]:
    from ..core.registry import get

    cls = get(kind, name)
    cc = getattr(cls, "config_class", None)
    return {f.name: f for f in dataclasses.fields(cc)} if cc is not None and dataclasses.is_dataclass(cc) else {}


def resolve_config(raw: Dict[str, Any], source: str = "config") -> Dict[str, Any]:
    """Defaults filled in and every key and value checked; see the module's docstring."""
    from ..core.registry import get

    family = raw.get("family", "classifier")
    if family not in FAMILIES:
        raise ConfigError(f"{source}: family {family!r} is not one the config CLI runs; expected one of "
                          f"{sorted(FAMILIES)}.{_suggest(str(family), FAMILIES).split(' Valid')[0]}")
    schema = FAMILIES[family]
    unknown = [k for k in raw if k not in schema and k != "family"]
    if unknown:
        raise ConfigError(f"{source}: unknown section {unknown[0]!r}.{_suggest(unknown[0], list(schema) + ['family'])}")
    cfg: Dict[str, Any] = {"family": family}
    for sec, defaults in schema.items():
        given = raw.get(sec) or {}
        if not isinstance(given, dict):
            raise ConfigError(f"{source}: section {sec!r} must be a mapping (key: value), got {given!r}.")
        cfg[sec] = {**defaults, **given}
    # the strategy's and selector's own hyperparameters, checked against their config classes
    strat = cfg["strategy"]
    if not strat.get("name"):
        raise ConfigError(f"{source}: strategy.name is required (`erasus list strategy` shows the names).")
    if family == "diffusion" and str(strat["name"]).lower() in ("salun", "saliency_unlearning"):
        strat["name"] = "salun_generation"  # SalUn's generative variant, as DiffusionUnlearner reads it
    strat["name"] = _resolve("strategy", strat["name"], source, "strategy.name")
    supports = getattr(get("strategy", strat["name"]), "supports", ("*",))
    if "*" not in supports and family not in supports:
        raise ConfigError(f"{source}: strategy {strat['name']!r} supports {list(supports)}, not {family} models.")
    if family == "causal_lm":
        _check_keys(cfg, schema, source)
        _check_lm(cfg, source)
        return cfg
    _check_strategy(strat, source)
    if family in ("diffusion", "clip"):
        _check_keys(cfg, schema, source)
        (_check_diffusion if family == "diffusion" else _check_clip)(cfg, source)
        return cfg
    sel = cfg["selector"]
    if sel.get("name"):
        sel["name"] = _resolve("selector", sel["name"], source, "selector.name")
        sfields = _component_fields("selector", sel["name"])
        for k in sel:
            if k not in ("name", "prune_ratio") and k not in sfields:
                raise ConfigError(f"{source}: selector.{k} is not a setting of {sel['name']!r}."
                                  f"{_suggest(k, ['name', 'prune_ratio', *sfields])}")
        _build_check("selector", {k: v for k, v in sel.items() if k != "prune_ratio"}, source)
    elif [k for k in sel if k not in ("name", "prune_ratio")]:
        raise ConfigError(f"{source}: selector settings given without selector.name (e.g. name: kcenter).")
    pr = sel.get("prune_ratio")
    if pr is not None and (not isinstance(pr, (int, float)) or not 0 < pr <= 1):
        raise ConfigError(f"{source}: selector.prune_ratio must be in (0, 1], got {pr!r}.")
    for sec in ("task", "unlearn", "verify", "benchmark", "output"):
        for k in cfg[sec]:
            if k not in schema[sec]:
                raise ConfigError(f"{source}: unknown key {sec}.{k}.{_suggest(k, schema[sec])}")
    _check_classifier(cfg, source)
    return cfg


def _check_strategy(strat: Dict[str, Any], source: str) -> None:
    """The strategy section's hyperparameters: each a field of the strategy's config class, and
    the strategy built once from them (types and ranges)."""
    fields = _component_fields("strategy", strat["name"])
    for k in strat:
        if k != "name" and k not in fields:
            raise ConfigError(f"{source}: strategy.{k} is not a hyperparameter of {strat['name']!r}."
                              f"{_suggest(k, ['name', *fields])}")
    _build_check("strategy", strat, source)


def _prompts(value, key: str, source: str, allow_empty: bool) -> list:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(p, str) and p.strip() for p in items) or (
            not items and not allow_empty):
        raise ConfigError(f"{source}: {key} must be {'a list of' if allow_empty else 'a prompt or a non-empty list of'}"
                          f" non-empty prompts, got {value!r}.")
    return list(items)


def _check_diffusion(cfg, source):
    from ..core.registry import build
    from ..unlearners.diffusion_unlearner import image_guard_refused, missing_preserve

    m, c, smp = cfg["model"], cfg["concept"], cfg["sample"]
    if not m["path"]:
        raise ConfigError(f"{source}: model.path is required (a diffusers pipeline's folder or Hub name, or a model "
                          "Erasus saved).")
    c["prompts"] = _prompts(c["prompts"], "concept.prompts", source, allow_empty=False)
    c["preserve"] = _prompts(c["preserve"] or [], "concept.preserve", source, allow_empty=True)
    clash = sorted(set(c["prompts"]) & set(c["preserve"]))
    if clash:
        raise ConfigError(f"{source}: prompts both erased and preserved: {clash}.")
    if c["anchor"] is not None and not isinstance(c["anchor"], str):
        raise ConfigError(f"{source}: concept.anchor must be a prompt or null, got {c['anchor']!r}.")
    strat = build("strategy", cfg["strategy"]["name"], **{k: v for k, v in cfg["strategy"].items() if k != "name"})
    if c["anchor"] is not None and not hasattr(strat.config, "anchor"):
        raise ConfigError(f"{source}: {cfg['strategy']['name']} takes no anchor (it maps the concept nowhere in "
                          "particular): leave concept.anchor out, or use strategy.name: uce.")
    why = missing_preserve(strat) if not c["preserve"] else None
    if why:
        raise ConfigError(f"{source}: {why}. Set concept.preserve: [a photo of ..., ...].")
    if not isinstance(c["image_guard"], bool):
        raise ConfigError(f"{source}: concept.image_guard must be true or false, got {c['image_guard']!r}.")
    if c["image_guard"] and not c["preserve"]:
        raise ConfigError(f"{source}: concept.image_guard judges the preserved prompts' images: set concept.preserve: "
                          "[a photo of ..., ...], or leave image_guard out.")
    why = image_guard_refused(strat) if c["image_guard"] else None
    if why:
        raise ConfigError(f"{source}: {why.replace('image_guard', 'concept.image_guard', 1)}.")
    for k, lo, hi in (("n", 0, 64), ("seed", 0, None), ("steps", 1, 1000)):
        v = smp[k]
        if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
            raise ConfigError(f"{source}: sample.{k} must be an integer in [{lo}, {hi if hi else '∞'}], got {v!r}.")
    g = smp["guidance_scale"]
    if not isinstance(g, (int, float)) or isinstance(g, bool) or not 0 <= g <= 50:
        raise ConfigError(f"{source}: sample.guidance_scale must be a number in [0, 50], got {g!r}.")


def _check_clip(cfg, source):
    m, d = cfg["model"], cfg["data"]
    if not m["path"]:
        raise ConfigError(f"{source}: model.path is required (a CLIPModel's folder or Hub name).")
    for part in ("forget", "retain"):
        imgs, caps = d[f"{part}_images"], d[f"{part}_captions"]
        if part == "retain" and imgs is None and caps is None:
            continue
        if not imgs or not Path(imgs).is_dir():
            raise ConfigError(f"{source}: data.{part}_images must be a folder of images, got {imgs!r}.")
        if not caps or not Path(caps).is_file():
            raise ConfigError(f"{source}: data.{part}_captions must be a COCO-style captions JSON file (images: id, "
                              f"file_name; annotations: image_id, caption), got {caps!r}.")
    for k in ("batch_size", "image_size", "max_length", "seed"):
        v = d[k]
        if not isinstance(v, int) or isinstance(v, bool) or v < (0 if k == "seed" else 1):
            raise ConfigError(f"{source}: data.{k} must be a {'non-negative' if k == 'seed' else 'positive'} integer, "
                              f"got {v!r}.")


def _check_keys(cfg, schema, source):
    for sec, defaults in schema.items():
        for k in cfg[sec]:
            if k not in defaults:
                raise ConfigError(f"{source}: unknown key {sec}.{k}.{_suggest(k, defaults)}")


def _build_check(kind: str, section: Dict[str, Any], source: str) -> None:
    """Build the component once from the section: its config class checks types and ranges."""
    from ..core.registry import build

    kw = {k: v for k, v in section.items() if k != "name"}
    try:
        build(kind, section["name"], **kw)
    except ConfigError as e:
        raise ConfigError(f"{source}: {kind} {section['name']!r}: {e}") from e


def _check_classifier(cfg, source):
    t, u, v = cfg["task"], cfg["unlearn"], cfg["verify"]
    if t["factory"] is None and t["name"] not in TASKS:
        raise ConfigError(f"{source}: task.name {t['name']!r} is not a built-in task.{_suggest(str(t['name']), TASKS)} "
                          "For your own data set task.factory: 'package.module:function' (returns a ClassificationTask).")
    if t["factory"] is not None and (not isinstance(t["factory"], str) or ":" not in t["factory"]):
        raise ConfigError(f"{source}: task.factory must be 'package.module:function', got {t['factory']!r}.")
    if t["request"] not in ("class", "random"):
        raise ConfigError(f"{source}: task.request must be 'class' or 'random', got {t['request']!r}.")
    if not isinstance(t["fraction"], (int, float)) or not 0 < t["fraction"] < 1:
        raise ConfigError(f"{source}: task.fraction must be in (0, 1), got {t['fraction']!r}.")
    for k in ("seed", "forget_class"):
        if not isinstance(t[k], int) or isinstance(t[k], bool) or t[k] < 0:
            raise ConfigError(f"{source}: task.{k} must be a non-negative integer, got {t[k]!r}.")
    o = cfg["output"]
    if o["tracking"] not in (None, "local", "mlflow", "wandb"):
        raise ConfigError(f"{source}: output.tracking must be null, 'local', 'mlflow' or 'wandb', "
                          f"got {o['tracking']!r}.")
    if v["gold"] not in ("retrain", "none"):
        raise ConfigError(f"{source}: verify.gold must be 'retrain' or 'none', got {v['gold']!r}.")
    if not isinstance(u["holdout"], bool):
        raise ConfigError(f"{source}: unlearn.holdout must be true or false, got {u['holdout']!r}.")
    for k in ("max_steps", "epochs"):
        if u[k] is not None and (not isinstance(u[k], (int, float)) or u[k] <= 0):
            raise ConfigError(f"{source}: unlearn.{k} must be a positive number or null, got {u[k]!r}.")
    mp = cfg["model"]["path"]
    if mp is not None and not Path(mp).is_file():
        raise ConfigError(f"{source}: model.path {mp} is not a file (expected the weights of the task's "
                          "architecture, .safetensors or .pt).")
    b = cfg["benchmark"]
    b["strategies"] = [_resolve("strategy", s, source, "benchmark.strategies") for s in (b["strategies"] or [])]
    b["selectors"] = [_resolve("selector", s, source, "benchmark.selectors") for s in (b["selectors"] or [])]
    if not isinstance(b["seeds"], list) or not all(isinstance(s, int) for s in b["seeds"]):
        raise ConfigError(f"{source}: benchmark.seeds must be a list of integers, got {b['seeds']!r}.")


def _check_lm(cfg, source):
    d = cfg["data"]
    if bool(d["tofu"]) == bool(d["forget"]):
        raise ConfigError(f"{source}: give either data.tofu (forget01/05/10) or data.forget (a JSON file of "
                          "question/answer pairs), not both or neither.")
    if not cfg["model"]["path"]:
        raise ConfigError(f"{source}: model.path is required (a local folder or Hub name of a causal LM).")


def lm_namespace(cfg: Dict[str, Any], out: Optional[str] = None):
    """The ``erasus unlearn-lm`` arguments a ``causal_lm`` config stands for."""
    import argparse

    m, d, s, t, o = cfg["model"], cfg["data"], cfg["strategy"], cfg["train"], cfg["output"]
    return argparse.Namespace(model=m["path"], tokenizer=m["tokenizer"], lora=bool(m["lora"]), tofu=d["tofu"],
                              forget=d["forget"], retain=d["retain"], tofu_dir=d["tofu_dir"], strategy=s["name"],
                              lr=s["lr"], epochs=s["epochs"], max_steps=s["max_steps"], batch_size=t["batch_size"],
                              max_length=t["max_length"], seed=t["seed"], out=out or o["dir"], history=o["history"],
                              overwrite=bool(o["overwrite"]))
