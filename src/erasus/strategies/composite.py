"""Strategies built from other strategies: sequential and averaged ensembles, layer freezing."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch

from ..core.config import BaseConfig
from ..core.exceptions import ConfigError
from ..core.registry import build, register, resolve
from ..core.strategy import BaseStrategy, LossStrategy
from ..core.callbacks import UnlearningResult
from ..core.stopping import Stop, StopKind
from ..models import wrap
from ..models.base import module_of


def run_child(strategy: BaseStrategy, model, forget_loader, retain_loader, holdout_loader, *, inplace: bool,
              seed: Optional[int], progress: bool, trainer_kwargs: dict) -> UnlearningResult:
    """Run one constituent strategy; trainer options go only to loss-based strategies."""
    if isinstance(strategy, LossStrategy) or isinstance(strategy, _Composite):
        return strategy.unlearn(model, forget_loader, retain_loader, holdout_loader, inplace=inplace,
                                seed=seed, progress=progress, **trainer_kwargs)
    return strategy.unlearn(model, forget_loader, retain_loader, holdout_loader, inplace=inplace,
                            seed=seed, progress=progress)


@dataclass
class EnsembleConfig(BaseConfig):
    """``strategies``: registered names, in order; ``strategy_kwargs``: one dict of
    hyperparameters per strategy (optional)."""

    strategies: List[str] = field(default_factory=lambda: ["wga", "simnpo"])
    strategy_kwargs: List[Dict] = field(default_factory=list)

    def validate(self) -> None:
        if not self.strategies:
            raise ConfigError(f"{type(self).__name__}: expected at least one strategy name, got none.")
        for name in self.strategies:
            resolve("strategy", name)  # unknown names fail here, with suggestions
        if self.strategy_kwargs and len(self.strategy_kwargs) != len(self.strategies):
            raise ConfigError(f"{type(self).__name__}: expected one strategy_kwargs dict per strategy "
                              f"({len(self.strategies)}), got {len(self.strategy_kwargs)}.")


@dataclass
class SequentialConfig(EnsembleConfig):
    """Default: SSD's one-shot dampening, then WGA."""

    strategies: List[str] = field(default_factory=lambda: ["ssd", "wga"])


class _Composite(BaseStrategy):
    def children(self) -> List[BaseStrategy]:
        kws = self.config.strategy_kwargs or [{}] * len(self.config.strategies)
        return [build("strategy", n, **(kw or {})) for n, kw in zip(self.config.strategies, kws)]

    @property
    def needs_retain(self) -> bool:  # type: ignore[override]
        return any(c.needs_retain for c in self.children())


@register("strategy", "sequential", aliases=("sequential_ensemble",))
class SequentialUnlearning(_Composite):
    """Sequential ensemble: apply the strategies one after another, each starting from the
    previous one's output (the spec's "Ensemble Unlearning", sequential mode).

    A common pairing is a cheap one-shot edit followed by a loss-based method that
    repairs and finishes it (e.g. ``["ssd", "wga"]``, after Foster et al., AAAI 2024, who
    note SSD composes with fine-tuning). The result carries each stage's stop reason and timings.
    """

    config_class = SequentialConfig

    def unlearn(self, model, forget_loader, retain_loader=None, holdout_loader=None, *, inplace: bool = False,
                seed: Optional[int] = 0, progress: bool = True, **trainer_kwargs) -> UnlearningResult:
        work = model if inplace else copy.deepcopy(model)
        reasons, timings, history, steps = [], {}, {}, 0
        res = None
        for i, child in enumerate(self.children()):
            res = run_child(child, work, forget_loader, retain_loader, holdout_loader, inplace=True, seed=seed,
                            progress=progress, trainer_kwargs=trainer_kwargs)
            name = self.config.strategies[i]
            reasons.append(f"{name}: {res.stop_reason}")
            timings[f"{i}_{name}_s"] = res.timings.get("unlearn_s", 0.0)
            history[f"{i}_{name}"] = res.history
            steps += res.steps
        timings["unlearn_s"] = sum(timings.values())
        return UnlearningResult(model=module_of(work), history=history, timings=timings,
                                stop=Stop(StopKind.COMPOSITE, " | ".join(reasons)), steps=steps,
                                strategy=self.registered_name,
                                config={"strategy": self.registered_name, "params": self.config.to_dict()})


@register("strategy", "averaged", aliases=("averaged_ensemble", "ensemble"))
class AveragedUnlearning(_Composite):
    """Averaged ensemble: run every strategy from the original weights and average the
    resulting weights (a uniform "model soup", Wortsman et al., ICML 2022, over
    unlearned models; the spec's "Ensemble Unlearning", averaged mode).

    Runs that start from the same weights and move a short way stay in one basin, so
    their average is a model, not a blur; it trades each method's over- or under-forgetting
    against the others'. Buffers (e.g. BatchNorm statistics) are averaged too where they
    are floating point; integer buffers come from the first run.
    """

    config_class = EnsembleConfig

    def unlearn(self, model, forget_loader, retain_loader=None, holdout_loader=None, *, inplace: bool = False,
                seed: Optional[int] = 0, progress: bool = True, **trainer_kwargs) -> UnlearningResult:
        t0 = time.perf_counter()
        states, reasons, history, steps = [], [], {}, 0
        for i, child in enumerate(self.children()):
            res = run_child(child, model, forget_loader, retain_loader, holdout_loader, inplace=False, seed=seed,
                            progress=progress, trainer_kwargs=trainer_kwargs)
            states.append(res.model.state_dict())
            name = self.config.strategies[i]
            reasons.append(f"{name}: {res.stop_reason}")
            history[f"{i}_{name}"] = res.history
            steps += res.steps
        avg = {k: (torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype)
                   if v.is_floating_point() else v) for k, v in states[0].items()}
        out = module_of(model if inplace else copy.deepcopy(model))
        out.load_state_dict(avg)
        out.eval()
        return UnlearningResult(model=out, history=history, timings={"unlearn_s": time.perf_counter() - t0},
                                stop=Stop(StopKind.COMPOSITE, f"averaged {len(states)} runs: " + " | ".join(reasons)),
                                steps=steps, strategy=self.registered_name,
                                config={"strategy": self.registered_name, "params": self.config.to_dict()})


def salient_modules(adapter, forget_loader, n: int) -> List[str]:
    """Names of the ``n`` weight layers (modules with a weight matrix or kernel: Linear,
    Conv, embeddings) with the largest mean ``|∂L_f/∂θ|`` (the forget-loss gradient per
    weight, so large layers are not favoured by size). Normalisation layers are not
    candidates: their few scale parameters carry large per-weight gradients but almost no
    capacity (on a 2-layer GPT-2 the two LayerNorms they used to pick left the forget loss
    unchanged under negative gradient, 0.39 → 0.34)."""
    model = adapter.model
    model.zero_grad(set_to_none=True)
    was = model.training
    model.eval()
    try:
        for batch in forget_loader:
            adapter.loss(batch).backward()
        scores = {}
        for mname, mod in model.named_modules():
            ps = [p for p in mod.parameters(recurse=False) if p.requires_grad and p.grad is not None]
            if any(p.dim() >= 2 for p in ps):
                scores[mname] = float(sum(p.grad.abs().sum() for p in ps) / sum(p.numel() for p in ps))
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was)
    return sorted(scores, key=scores.get, reverse=True)[:n]


def train_only(model: torch.nn.Module, params) -> Callable[[], None]:
    """Freeze every parameter of ``model`` except ``params`` (those already frozen stay
    frozen); returns the callable that restores the original ``requires_grad`` flags."""
    keep = {id(p) for p in params}
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, flag in flags:
        p.requires_grad_(flag and id(p) in keep)

    def undo():
        for p, flag in flags:
            p.requires_grad_(flag)

    return undo


@dataclass
class RestrictedConfig(BaseConfig):
    """``base``: the strategy to restrict; ``base_kwargs``: its hyperparameters."""

    base: str = "negative_gradient"
    base_kwargs: Dict = field(default_factory=dict)

    def validate(self) -> None:
        resolve("strategy", self.base)


class _Restricted(BaseStrategy):
    """Runs ``config.base`` on a copy of the model with part of it held fixed by
    ``restrict`` (which returns a description and an undo callable)."""

    config_class = RestrictedConfig

    @property
    def needs_retain(self) -> bool:  # type: ignore[override]
        return build("strategy", self.config.base).needs_retain

    def restrict(self, adapter, base, forget_loader) -> Tuple[str, Callable[[], None]]:
        """Hold part of ``adapter.model`` (the run's copy) fixed for ``base``; returns a
        description and the undo callable."""
        raise NotImplementedError  # abstract

    def make_base(self) -> BaseStrategy:
        return build("strategy", self.config.base, **self.config.base_kwargs)

    def unlearn(self, model, forget_loader, retain_loader=None, holdout_loader=None, *, inplace: bool = False,
                seed: Optional[int] = 0, progress: bool = True, **trainer_kwargs) -> UnlearningResult:
        from ..utils.misc import seed_everything

        base = self.make_base()
        work = model if inplace else copy.deepcopy(model)
        if seed is not None:
            seed_everything(seed)  # restrict may draw random numbers (LoRA's initial A matrices)
        what, undo = self.restrict(wrap(work), base, forget_loader)
        try:
            res = run_child(base, work, forget_loader, retain_loader, holdout_loader, inplace=True, seed=seed,
                            progress=progress, trainer_kwargs=trainer_kwargs)
        finally:
            undo()
        res.model = module_of(work)
        res.stop.message = f"{self.config.base} {what}: {res.stop.message}"
        res.strategy = self.registered_name
        res.config = {"strategy": self.registered_name, "params": self.config.to_dict(),
                      "trainer": res.config.get("trainer")}
        return res


@dataclass
class LayerFreezingConfig(RestrictedConfig):
    """``base``: the strategy to restrict, ``"negative_gradient"``; ``base_kwargs``: its
    hyperparameters; ``layers``: module names (or name prefixes) allowed to change; when
    empty, the ``n_salient`` modules with the largest forget-gradient per weight, 2."""

    layers: List[str] = field(default_factory=list)
    n_salient: int = 2

    def validate(self) -> None:
        super().validate()
        self._check_positive("n_salient")


@register("strategy", "layer_freezing", aliases=("freeze",))
class LayerFreezing(_Restricted):
    """Restrict any strategy to chosen layers, or to the most forget-salient ones.

    Freezing all but a few layers is the "unlearning in a subset of parameters" family:
    Goel et al., "Towards Adversarial Evaluation of Machine Unlearning" (CF-k / EU-k:
    only the last k layers are fine-tuned or retrained), 2022, and the layer-saliency
    selection of SalUn (Fan et al., ICLR 2024) at module granularity. Parameters outside
    the chosen layers keep ``requires_grad=False`` during the run and are restored after.
    """

    config_class = LayerFreezingConfig

    def restrict(self, adapter, base, forget_loader):
        work = adapter.model
        names = list(self.config.layers) or salient_modules(adapter, forget_loader, self.config.n_salient)
        params = dict(work.named_parameters())
        chosen = [p for n, p in params.items() if any(n == layer or n.startswith(layer + ".") for layer in names)]
        if not chosen:
            raise ConfigError(f"layer_freezing: no parameter matches layers {names}. Expected module names "
                              f"such as {sorted({n.rsplit('.', 1)[0] for n in params})[:6]}.")
        return f"on layers {names}", train_only(work, chosen)


@dataclass
class MaskBasedConfig(RestrictedConfig):
    """``base``: the loss-based strategy whose updates are masked, ``"wga"``;
    ``base_kwargs``: its hyperparameters; ``sparsity``: fraction of weights allowed to
    change (the most forget-salient ones), 0.5."""

    base: str = "wga"
    sparsity: float = 0.5

    def validate(self) -> None:
        from .relabel import check_sparsity

        super().validate()
        check_sparsity(self)


@register("strategy", "mask_based", aliases=("saliency_mask", "masked"))
class MaskBased(_Restricted):
    """Weight-mask unlearning: any strategy, restricted to the weights most salient to the
    forget set.

    The weight-saliency mask of Fan et al., "SalUn", ICLR 2024 (``1(|∇_θ L(θ_o; D_f)| ≥ γ)``,
    a global quantile keeping ``sparsity`` of the weights), applied to another objective
    (the paper's ablation pairs it with gradient ascent and others): only masked weights
    receive gradient, so the rest of the network is untouched by construction.
    ``saliency_unlearning`` is this mask with the random-label objective.
    """

    config_class = MaskBasedConfig

    def restrict(self, adapter, base, forget_loader):
        from .relabel import saliency_mask

        work = adapter.model
        if not isinstance(base, LossStrategy):
            raise ConfigError(f"mask_based: expected a loss-based base strategy, got {self.config.base!r} "
                              "(a one-shot edit has no gradient to mask).")
        mask = saliency_mask(adapter, forget_loader, self.config.sparsity)
        hooks = [p.register_hook(lambda g, m=mask[n]: g * m) for n, p in work.named_parameters() if n in mask]
        kept = sum(float(m.sum()) for m in mask.values()) / max(1, sum(m.numel() for m in mask.values()))

        def undo():
            for h in hooks:
                h.remove()

        return f"on the {100 * kept:.0f}% most salient weights", undo


@dataclass
class LoRAConfig(RestrictedConfig):
    """``base``: the loss-based strategy trained through the adapters,
    ``"negative_gradient"``; ``base_kwargs``: its hyperparameters; ``lr``: the base
    strategy's learning rate unless ``base_kwargs`` sets one, 1e-2 (low-rank updates from
    a zero-initialised ``B`` need a larger step than full fine-tuning, as in Hu et al.);
    ``rank`` 8; ``alpha`` 16 (the update is scaled by ``alpha / rank``); ``dropout`` 0;
    ``target_modules``: module names to adapt, default every ``Linear`` / ``Conv`` layer
    (GPT-2's ``Conv1D`` included); ``merge``: fold the adapters into the weights and return
    a model of the original architecture (True), or keep the LoRA layers (False) so the
    adapters can be saved, inspected or removed."""

    lr: float = 1e-2
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: List[str] = field(default_factory=list)
    merge: bool = True

    def validate(self) -> None:
        from ..core.registry import get

        super().validate()
        if not issubclass(get("strategy", self.base), LossStrategy):
            raise ConfigError(f"lora_unlearning: expected a loss-based base strategy, got {self.base!r} "
                              "(a one-shot edit has no gradient to train adapters with).")
        self._check_positive("rank", "alpha", "lr")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"LoRAConfig: expected 0 <= dropout < 1, got {self.dropout}.")


def lora_targets(model: torch.nn.Module) -> List[str]:
    """Names of the layers LoRA can adapt by default: ``nn.Linear``, ``nn.Conv1d/2d/3d``
    and Hugging Face's ``Conv1D`` (GPT-2), excluding layers inside existing adapters and
    layers whose weight is tied to another module (a language model's output layer
    sharing the input embedding: merging an adapter there would also change the
    embedding), and frozen layers (a vision tower a user froze stays as it is)."""
    from collections import Counter

    kinds = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    owners = Counter(id(m.weight) for m in model.modules() if isinstance(getattr(m, "weight", None), torch.Tensor))
    return [n for n, m in model.named_modules()
            if n and (isinstance(m, kinds) or type(m).__name__ == "Conv1D") and "lora_" not in n
            and owners[id(m.weight)] == 1 and m.weight.requires_grad]


@register("strategy", "lora_unlearning", aliases=("lora",))
class LoRAUnlearning(_Restricted):
    """Unlearning through low-rank adapters: any loss-based strategy, but only LoRA
    matrices ``B A`` added to the chosen layers are trained (Hu et al., "LoRA: Low-Rank
    Adaptation of Large Language Models", ICLR 2022; applied to unlearning e.g. by Gao et
    al., "Large Language Model Unlearning via Embedding-Corrupted Prompts"/ "On Large
    Language Model Continual Unlearning" and Zhang et al.'s NPO experiments with LoRA).
    The base weights stay frozen, so the change is confined to a rank-``rank`` subspace
    per layer, cheap to store (the adapters alone) and reversible (drop the adapters).

    Adapters come from Hugging Face ``peft`` (``LoraModel``; install ``erasus[llm]``),
    which supports plain ``nn.Module`` classifiers as well as transformers. With
    ``merge=True`` (default) the result is the original architecture with the adapters
    folded in (``merge_and_unload``); with ``merge=False`` the LoRA layers stay in the
    returned model. Deviation: biases are frozen (peft's ``bias="none"``).
    """
    limits = ('forgetting one class of scikit-learn digits (MLP, seed 0), it stops with 12.7% of the class still '
              'recognised, with or without held-out data (rank-8 adapters on the last 3 layers); '
              'tests/test_first_hour.py measures it, and the run warns')

    config_class = LoRAConfig

    def make_base(self) -> BaseStrategy:
        return build("strategy", self.config.base, **{"lr": self.config.lr, **self.config.base_kwargs})

    def restrict(self, adapter, base, forget_loader):
        work = adapter.model
        try:
            from peft import LoraConfig as PeftLoraConfig
            from peft.tuners.lora import LoraModel
        except ImportError as e:
            raise ConfigError("lora_unlearning needs the peft package: pip install 'erasus[llm]' "
                              "(or pip install peft).") from e
        c = self.config
        targets = list(c.target_modules) or lora_targets(work)
        known = {n for n, _ in work.named_modules()}
        missing = [t for t in targets if t not in known]
        if not targets or missing:
            raise ConfigError(f"lora_unlearning: no adaptable layer named {missing or targets}; expected names "
                              f"such as {lora_targets(work)[:6]}.")
        flags = {n: p.requires_grad for n, p in work.named_parameters()}
        mods = dict(work.named_modules())
        conv1d = all(type(mods[t]).__name__ == "Conv1D" for t in targets)  # GPT-2 stores W transposed
        lora = LoraModel(work, PeftLoraConfig(r=c.rank, lora_alpha=c.alpha, lora_dropout=c.dropout,
                                              target_modules=targets, fan_in_fan_out=conv1d), "default")
        n_train = sum(p.numel() for p in work.parameters() if p.requires_grad)

        def undo():
            if c.merge:
                lora.merge_and_unload()
                for n, p in work.named_parameters():
                    p.requires_grad_(flags.get(n, True))

        return (f"through rank-{c.rank} LoRA adapters on {len(targets)} layers ({n_train:,} trainable parameters, "
                f"{'merged' if c.merge else 'kept'})"), undo
