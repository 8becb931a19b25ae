"""Seeding, device choice, parameter snapshots."""
from __future__ import annotations

import random
from typing import Dict, Optional

import numpy as np
import torch


def seed_everything(seed: Optional[int]) -> None:
    if seed is None:
        return
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class seeded_loaders:
    """Context manager: the shuffling generators of ``loaders`` (``loader.generator``,
    ``loader.sampler.generator`` and ``loader.batch_sampler.generator``) are seeded with ``seed + i`` on entry and put back to their
    previous state on exit, so a seeded run shuffles the same way however often the loaders
    were iterated before, and the caller's loaders are left as they were. A shuffling loader
    built without a generator (it would draw from torch's global one, shared by every thread)
    gets its own for the run, removed on exit."""

    def __init__(self, seed: Optional[int], *loaders):
        self.seed = seed
        self.gens = []
        self.lent = []  # samplers given a generator for the run
        for loader in loaders:
            sampler = getattr(loader, "sampler", None)
            if (seed is not None and isinstance(sampler, torch.utils.data.RandomSampler)
                    and sampler.generator is None and getattr(loader, "generator", None) is None):
                self.lent.append(sampler)
            for g in (getattr(loader, "generator", None), getattr(sampler, "generator", None),
                      getattr(getattr(loader, "batch_sampler", None), "generator", None)):
                if isinstance(g, torch.Generator) and all(g is not h for h in self.gens):
                    self.gens.append(g)
        self.states = []

    def __enter__(self):
        if self.seed is not None:
            for sampler in self.lent:
                sampler.generator = torch.Generator()
                self.gens.append(sampler.generator)
            self.states = [g.get_state() for g in self.gens]
            for i, g in enumerate(self.gens):
                g.manual_seed(self.seed + 7919 * (i + 1))
        return self

    def __exit__(self, *exc):
        for g, st in zip(self.gens, self.states):
            g.set_state(st)
        for sampler in self.lent:
            sampler.generator = None
        return False


def adam_options(params) -> Dict[str, bool]:
    """Keyword arguments for ``torch.optim.Adam``/``AdamW`` over ``params`` (tensors or
    parameter groups): the fused kernel where every parameter is a CUDA float tensor; on the
    CPU the multi-tensor (``foreach``) implementation, which torch leaves off there by default
    and which gives the same values bit for bit as the one-tensor-at-a-time loop (measured over
    100 steps of the toy text-to-image model) in fewer Python calls (6% off a step of that
    model: its 228 tensors cost 12 of 88 ms a step in the per-tensor loop)."""
    tensors = [p for g in params for p in g["params"]] if params and isinstance(params[0], dict) else list(params)
    if not tensors:
        return {}
    if all(p.is_cuda and p.is_floating_point() for p in tensors):
        return {"fused": True}
    if all(p.device.type == "cpu" for p in tensors):
        return {"foreach": True}
    return {}


def resolve_device(device=None) -> torch.device:
    """``device`` as a ``torch.device``: ``None`` or ``"auto"`` is the first CUDA GPU where torch
    sees one, else the CPU. A CUDA device torch cannot use (no GPU, a CPU build of torch, an
    index past the last GPU) is a :class:`~erasus.exceptions.ConfigError` that says what torch
    sees, raised here, before any work starts, rather than at the first tensor moved there."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        from ..exceptions import ConfigError

        raise ConfigError(f"Expected a device such as 'cpu', 'cuda' or 'cuda:1' (or 'auto'), got {device!r}: {e}") from None
    if dev.type == "cuda":
        from ..exceptions import ConfigError

        if not torch.cuda.is_available():
            raise ConfigError(f"device={str(device)!r}, but torch {torch.__version__} sees no CUDA GPU on this machine. "
                              "Use 'cpu' (or 'auto'), or install a CUDA build of torch on a machine with a GPU.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device={str(device)!r}, but torch sees {torch.cuda.device_count()} CUDA GPU(s) "
                              f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}).")
    return dev


def model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def reinitialised(model: torch.nn.Module, seed: Optional[int] = 0x5EED) -> torch.nn.Module:
    """A copy of ``model`` with every submodule's ``reset_parameters()`` called: fresh, randomly
    initialised weights of the same architecture, drawn from ``seed`` (the caller's random
    state is left as it was)."""
    import copy

    clone = copy.deepcopy(model)
    gen_state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    try:
        for m in clone.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    finally:
        torch.random.set_rng_state(gen_state)
    return clone


def snapshot(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """A detached copy of the state dict (for best-checkpoint restore)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class ModelState:
    """Everything needed to put a model back as it was: its weights and buffers, its train /
    eval mode, and what an inference-time edit attaches besides weights (forward hooks kept in
    ``model.erasus_hooks``, submodules such as DExperts' anti-expert, the ``use_cache`` flags of
    its config and generation config). Loading the state dict alone failed on a model that had
    gained a submodule, and left an edit's hooks in place."""

    def __init__(self, model: torch.nn.Module):
        self.weights, self.mode = snapshot(model), model.training
        self.children = {name for name, _ in model.named_children()}
        self.hooks = list(getattr(model, "erasus_hooks", None) or [])
        self.had_hooks = hasattr(model, "erasus_hooks")
        self.cache = [(c, c.use_cache) for c in (getattr(model, "config", None), getattr(model, "generation_config", None))
                      if c is not None and hasattr(c, "use_cache")]

    def restore(self, model: torch.nn.Module) -> None:
        keep = {id(h) for h in self.hooks}
        for h in getattr(model, "erasus_hooks", None) or []:
            if id(h) not in keep:
                h.remove()
        if self.had_hooks:
            model.erasus_hooks = self.hooks
        elif hasattr(model, "erasus_hooks"):
            del model.erasus_hooks
        for name in [n for n, _ in model.named_children() if n not in self.children]:
            delattr(model, name)
        for c, v in self.cache:
            c.use_cache = v
        model.load_state_dict(self.weights)
        model.train(self.mode)


class isolated_rng:
    """Context manager: run a block with its own seeded random state and leave the caller's
    untouched. On entry the global Python, NumPy and torch (CPU and CUDA) generators are
    saved and seeded with ``seed``; on exit they are put back. Verification entry points
    run inside one, so their verdicts depend only on their arguments (not on what ran
    before) and a caller's random stream continues as if they had not run."""

    def __init__(self, seed: Optional[int] = 0):
        self.seed = seed

    def __enter__(self):
        self._py = random.getstate()
        self._np = np.random.get_state()
        self._torch = torch.random.get_rng_state()
        self._cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        seed_everything(self.seed)
        return self

    def __exit__(self, *exc):
        random.setstate(self._py)
        np.random.set_state(self._np)
        torch.random.set_rng_state(self._torch)
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)
        return False


def weights_fingerprint(model) -> str:
    """A SHA-1 of a model's class, parameter and buffer names, shapes and values: equal for
    models with equal weights, different (barring a hash collision) after any change. For an
    adapter (:class:`~erasus.models.base.ModelAdapter`), also its class and its own tensors
    (CLIP's class prompts decide its zero-shot logits)."""
    import hashlib

    h = hashlib.sha1()
    tensors = []
    if not isinstance(model, torch.nn.Module) and isinstance(getattr(model, "model", None), torch.nn.Module):
        h.update(type(model).__qualname__.encode())
        tensors = sorted((f"adapter.{k}", v) for k, v in vars(model).items() if isinstance(v, torch.Tensor))
        model = model.model
    h.update(type(model).__qualname__.encode())
    for name, t in list(model.named_parameters()) + list(model.named_buffers()) + tensors:
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class ModelMemo:
    """Remembers a measurement of the last ``size`` models, keyed by a fingerprint of their
    weights (:func:`weights_fingerprint`) and ``extra`` (e.g. the ids of the loaders): a gold
    or original model judged against many candidates is measured once, and a model changed
    in place since is measured again."""

    def __init__(self, size: int = 8):
        self.size = size
        self._store: Dict[tuple, object] = {}

    def get(self, model: torch.nn.Module, extra: tuple, compute):
        key = (weights_fingerprint(model),) + tuple(extra)
        if key not in self._store:
            if len(self._store) >= self.size:
                self._store.pop(next(iter(self._store)))
            self._store[key] = compute()
        return self._store[key]
