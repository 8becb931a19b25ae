"""Conformance checks for plugin authors: the checks Erasus's own strategies, selectors and
metrics pass, importable (as scikit-learn's ``check_estimator``).

    from erasus.testing import check_strategy

    @register("strategy", "my_method")
    class MyMethod(ForgetRetainStrategy):
        ...

    def test_my_method():
        check_strategy("my_method")      # or the class, or a configured instance

Each check raises ``AssertionError`` naming what failed. They run on a tiny classifier
(:func:`tiny_problem`: 96 random 4×4 images, 3 classes, a two-layer MLP) in about a second;
the mechanics are checked (a finite loss, the model changes, the caller's model does not,
seeded runs repeat, ``inplace=True`` edits the given model, only trainable parameters move),
not whether a method forgets well, which ``benchmarks/`` measures.
"""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

from ..core.registry import get


def tiny_problem(seed: int = 0) -> Tuple[torch.nn.Module, DataLoader, DataLoader, DataLoader]:
    """``(model, forget, retain, holdout)``: a tiny classifier and loaders on random data whose
    forget set (12 samples) is a distinct sub-population, as deletion requests are."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(96, 1, 4, 4, generator=g)
    x[:12] += 3.0
    y = torch.randint(0, 3, (96,), generator=g)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    ds = TensorDataset(x, y)
    forget = DataLoader(Subset(ds, list(range(12))), batch_size=4, shuffle=True)
    retain = DataLoader(Subset(ds, list(range(12, 72))), batch_size=8, shuffle=True)
    holdout = DataLoader(Subset(ds, list(range(72, 96))), batch_size=8)
    return model, forget, retain, holdout


def _require(ok, message: str) -> None:
    """A failed check: ``AssertionError`` with ``message`` (explicit, so ``python -O`` keeps it)."""
    if not ok:
        raise AssertionError(message)


def _instance(kind: str, component):
    if isinstance(component, str):
        return get(kind, component)()
    if isinstance(component, type):
        return component()
    return component


def _params_equal(a, b) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def _fresh(component):
    """A new instance with the same config (runs must not depend on an earlier run's state)."""
    return type(component)(config=copy.deepcopy(component.config)) if hasattr(component, "config") else component


def check_config_round_trip(component) -> None:
    """The component's config saves to JSON and YAML and loads back equal."""
    cfg = getattr(component, "config", None)
    if cfg is None:
        return
    with tempfile.TemporaryDirectory() as d:
        for suffix in (".json", ".yaml"):
            path = cfg.save(Path(d) / f"cfg{suffix}")
            _require(type(cfg).load(path) == cfg, f"{type(component).__name__}: config does not round-trip ({suffix})")


def check_cites_a_paper(component) -> None:
    doc = type(component).__doc__ or ""
    _require(doc and any(ch.isdigit() for ch in doc),
             f"{type(component).__name__}: the docstring must cite the paper it implements (authors, venue, year)")


def _mechanics_kwargs(strategy, steps: int) -> dict:
    """A fixed schedule of ``steps`` steps for loss-based and composite strategies, and one-shot
    edits kept whatever they cost (the tiny random data give the guards nothing to keep)."""
    from ..core.strategy import OneShotStrategy

    if isinstance(strategy, OneShotStrategy):
        return {"progress": False, "guard": False}
    return {"max_steps": steps, "progress": False, "stopping": "none", "min_steps": 0}


def check_strategy(strategy, problem: Optional[tuple] = None) -> None:
    """A strategy (registered name, class or configured instance) builds, cites its paper,
    round-trips its config and, on a classifier: takes finite steps that change the model,
    leaves the caller's model untouched (and edits it with ``inplace=True``), repeats under a
    seed, and (loss-based) moves only trainable parameters."""
    from ..core.strategy import LossStrategy

    s = _instance("strategy", strategy)
    check_cites_a_paper(s)
    check_config_round_trip(s)
    if not {"*", "classifier"} & set(getattr(s, "supports", ("*",))):
        return  # language-model methods: checked on a causal LM by their own tests
    model, forget, retain, holdout = problem or tiny_problem()
    name = getattr(s, "registered_name", None) or type(s).__name__
    before = copy.deepcopy(model)
    res = _fresh(s).unlearn(model, forget, retain, **_mechanics_kwargs(s, 3))
    _require(_params_equal(model, before), f"{name}: the caller's model changed without inplace=True")
    _require(all(torch.isfinite(p).all() for p in res.model.parameters()), f"{name}: non-finite weights")
    _require(not _params_equal(res.model, before), f"{name} left the model unchanged")
    if isinstance(s, LossStrategy):
        _require(res.steps == 3 and all(np.isfinite(res.history["loss"])), f"{name}: expected 3 finite steps")
    kw = {"max_steps": 4, "progress": False, "min_steps": 0} if isinstance(s, LossStrategy) else {"progress": False}
    a = _fresh(s).unlearn(model, forget, retain, holdout, seed=3, **kw).model
    b = _fresh(s).unlearn(model, forget, retain, holdout, seed=3, **kw).model
    _require(_params_equal(a, b), f"{name}: two runs with seed=3 differ")
    if isinstance(s, LossStrategy):
        frozen = copy.deepcopy(model)
        frozen[1].weight.requires_grad_(False)
        res = _fresh(s).unlearn(frozen, forget, retain, max_steps=3, progress=False, stopping="none", min_steps=0)
        _require(torch.equal(res.model[1].weight, frozen[1].weight), f"{name} changed a frozen parameter")
    target = copy.deepcopy(model)
    res = _fresh(s).unlearn(target, forget, retain, inplace=True, **_mechanics_kwargs(s, 2))
    _require(res.model is target and not _params_equal(target, before), f"{name}: inplace=True did not edit the model")


def check_selector(selector, problem: Optional[tuple] = None) -> None:
    """A selector (name, class or instance) returns exactly ``k`` distinct dataset indices,
    the same whatever the loader's order, with provenance; ``prune_ratio=1`` keeps all."""
    from ..core.registry import resolve

    sel = _instance("selector", selector)
    check_config_round_trip(sel)
    model, forget, _, _ = problem or tiny_problem()
    n = len(forget.dataset)
    name = getattr(sel, "registered_name", None) or type(sel).__name__
    k = n if name == resolve("selector", "full") else 7
    a = sel.select(model, forget, k=k)
    shuffled = DataLoader(forget.dataset, batch_size=5, shuffle=True, generator=torch.Generator().manual_seed(9))
    b = sel.select(model, shuffled, k=k)
    _require(len(a) == k and len(set(a.indices.tolist())) == k, f"{name}: expected {k} distinct indices")
    _require(a.indices.min() >= 0 and a.indices.max() < n, f"{name}: indices outside the dataset")
    _require(np.array_equal(a.indices, b.indices), f"{name}: the selection depends on the loader's order")
    _require(a.provenance["selector"] == name and a.provenance["k"] == k, f"{name}: provenance missing")
    _require(len(sel.select(model, forget, prune_ratio=1.0)) == n, f"{name}: prune_ratio=1.0 must keep every sample")


def check_metric(metric, problem: Optional[tuple] = None) -> None:
    """A metric (name or class) gives finite values, each with a direction
    (``higher_is_better``) and a reference (``reference``)."""
    from ..metrics import MetricSuite

    m = _instance("metric", metric)
    name = getattr(m, "registered_name", None) or type(m).__name__
    model, forget, retain, holdout = problem or tiny_problem()
    gold = copy.deepcopy(model)
    with torch.no_grad():
        gold[3].weight.add_(0.5)
    out = MetricSuite([m]).run(model, forget, retain, holdout, holdout, gold_model=gold)
    for key, v in out.items():
        if key.startswith("gap_"):
            continue
        _require(key in m.higher_is_better and key in m.reference, f"{name}: {key} lacks a direction or a reference")
        _require(np.isfinite(v), f"{name}: {key} = {v}")
