"""Strategy base classes: loss-based (trained by the trainer) and one-shot edits."""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..utils.data import check_nonempty
from ..utils.misc import ModelState, isolated_rng, seeded_loaders
from .base import Configurable, check_supported
from .config import BaseConfig
from .module import UnlearningModule
from .callbacks import UnlearningResult
from .stopping import Stop, StopKind
from .trainer import TrainerConfig, UnlearningTrainer


@dataclass
class LossStrategyConfig(BaseConfig):
    """Fields shared by loss-based strategies; their defaults feed :class:`TrainerConfig`.

    ``lr``, ``epochs`` (passes over the forget set; an upper bound when calibrated
    stopping is on), ``optimizer`` (adam / adamw / sgd), ``weight_decay``.
    """

    lr: float = 1e-3
    epochs: float = 5
    optimizer: str = "adam"
    weight_decay: float = 0.0

    def validate(self) -> None:
        self._check_positive("lr", "epochs")
        self._check_positive("weight_decay", allow_zero=True)
        self._check_choice("optimizer", ("adam", "adamw", "sgd"))


@dataclass
class ForgetRetainConfig(LossStrategyConfig):
    """Adds ``retain_weight``: weight of the retain cross-entropy in each step (0 disables it)."""

    retain_weight: float = 1.0

    def validate(self) -> None:
        super().validate()
        self._check_positive("retain_weight", allow_zero=True)


class BaseStrategy(Configurable):
    """Stage 2. ``unlearn(model, forget, retain, holdout)`` returns an :class:`UnlearningResult`.

    The caller's model is deep-copied unless ``inplace=True``.
    """

    supports: Tuple[str, ...] = ("*",)
    registered_name: str = ""
    needs_retain: bool = False
    #: where the method was measured to fall short at its defaults, whatever data it is given
    #: (appended to the class docstring; ``erasus list`` shows it; a run that falls short warns)
    limits: str = ""

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.__dict__.get("limits"):
            cls.__doc__ = (cls.__doc__ or "").rstrip() + f"\n\n    Measured limit at the defaults: {cls.limits}\n"

    def _prepare(self, model, inplace: bool):
        from ..models import wrap

        adapter = wrap(model)
        check_supported(self, adapter)
        if not inplace:
            adapter = adapter.with_model(copy.deepcopy(adapter.model))
        return adapter

    @staticmethod
    def _guarded(model, inplace: bool, run):
        """Run ``run()``; with ``inplace=True`` a failure puts the caller's model back as it was
        (weights, buffers and train/eval mode) before the exception propagates."""
        from ..models.base import module_of

        if not inplace:
            return run()
        model = module_of(model)
        saved = ModelState(model)
        try:
            return run()
        except BaseException as err:
            saved.restore(model)
            if hasattr(err, "add_note"):
                err.add_note("Erasus: the run failed, so the model given with inplace=True was restored as it was.")
            raise

    def unlearn(self, model, forget_loader, retain_loader=None, holdout_loader=None, *,
                inplace: bool = False, **trainer_kwargs) -> UnlearningResult:
        raise NotImplementedError  # abstract


class LossStrategy(UnlearningModule, BaseStrategy):
    """A strategy defined by its losses, run by :class:`UnlearningTrainer`."""

    config_class = LossStrategyConfig

    def stopping_policy(self, forget_loader, given: Dict[str, Any]) -> Dict[str, Any]:
        """The schedule, validation and stopping-rule settings (``TrainerConfig`` fields) this
        method was measured with, where they differ from the trainer's defaults. ``given``: the
        user's explicit settings, which win over these."""
        return {}

    def trainer_config(self, policy: Optional[Dict[str, Any]] = None, **overrides) -> TrainerConfig:
        names = {f.name for f in dataclasses.fields(TrainerConfig)}
        cfg = self.config.to_dict()
        base = {**{k: v for k, v in cfg.items() if k in names}, **(policy or {})}
        if "epochs" in cfg:
            base["max_epochs"] = cfg["epochs"]
        if "epochs" in overrides:
            overrides["max_epochs"] = overrides.pop("epochs")
        if "steps" in overrides:  # the specification's unlearn(..., steps=100): a step budget, no epoch bound
            if "max_steps" in overrides:
                raise ValueError("Pass steps or max_steps, not both (steps=N is max_steps=N with no epoch bound).")
            overrides["max_steps"] = overrides.pop("steps")
            overrides.setdefault("max_epochs", None)
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"Unknown trainer option(s) {unknown}. Expected a subset of {sorted(names)}.")
        return TrainerConfig(**{**base, **overrides})

    def unlearn(self, model, forget_loader, retain_loader=None, holdout_loader=None, *,
                inplace: bool = False, callbacks=(), forget_eval_loader=None, **trainer_kwargs) -> UnlearningResult:
        """``forget_eval_loader``: the data the stopping rule watches as "forget" (default
        ``forget_loader``); when ``forget_loader`` is a coreset, pass the whole forget request
        here so that the run stops when the request, not the coreset, looks unseen."""
        forget_loader = check_nonempty(forget_loader, "forget")
        if self.needs_retain and retain_loader is None:
            raise ValueError(f"{type(self).__name__} needs retain data: pass retain_loader.")
        trainer = UnlearningTrainer(self.trainer_config(self.stopping_policy(forget_loader, trainer_kwargs), **trainer_kwargs),
                                    callbacks=callbacks)

        def run():
            self.bind(self._prepare(model, inplace))
            try:
                res = trainer.fit(self, forget_loader, retain_loader, holdout_loader,
                                  strategy_name=self.registered_name or type(self).__name__,
                                  forget_eval_loader=forget_eval_loader)
                res.config["params"] = self.config.to_dict()
                return res
            finally:
                self.release()

        with isolated_rng(trainer.config.seed):  # the caller's random state is left as it was
            return self._guarded(model, inplace, run)

    def release(self) -> None:
        """Drop references to models built in ``setup`` (teachers, masks)."""
        self.adapter = None


class ForgetRetainStrategy(LossStrategy):
    """A forget objective (``forget_step``) plus ``retain_weight`` × the retain loss."""

    config_class = ForgetRetainConfig

    @property
    def uses_retain(self) -> bool:  # type: ignore[override]
        return self.config.retain_weight > 0

    def retain_step(self, batch, batch_idx):
        if self.config.retain_weight == 0:
            return None
        return self.config.retain_weight * self.adapter.loss(batch)


class OneShotStrategy(BaseStrategy):
    """A strategy that edits the weights once (``apply``), with no training loop."""

    def apply(self, adapter, forget_loader, retain_loader) -> str:
        """Edit ``adapter.model`` in place; return a one-line description of what was done."""
        raise NotImplementedError  # abstract

    def unlearn(self, model, forget_loader, retain_loader=None, holdout_loader=None, *,
                inplace: bool = False, seed: Optional[int] = 0, progress: bool = True, forget_eval_loader=None,
                guard: bool = True, retain_tolerance: float = 0.05, **unused) -> UnlearningResult:
        """Apply the edit. With retain data and ``guard`` (default), the edit is measured: when
        it costs more than ``retain_tolerance`` of retain accuracy (on up to 500 retain samples)
        it is undone, and the stop reason and a warning say so (a one-shot edit has no schedule
        to back off on: its strength is the strategy's hyperparameter). Without held-out data
        it must also be selective: an edit that does not lower forget accuracy by at least
        ``GUARD_SELECTIVITY`` times as much as retain accuracy (on up to 500 samples of each)
        moves away from the retrained model, or nowhere, and is undone."""
        # forget_eval_loader is accepted for a uniform call: a one-shot edit has no stopping rule to feed
        if unused:
            raise ValueError(f"{type(self).__name__} is a one-shot edit and takes no trainer options; got {sorted(unused)}.")
        forget_loader = check_nonempty(forget_loader, "forget")
        if self.needs_retain and retain_loader is None:
            raise ValueError(f"{type(self).__name__} needs retain data: pass retain_loader.")
        import warnings

        import torch

        from ..utils.data import is_class_forgetting, subsample_loader

        from .stats import split_stats
        from .stopping import GUARD_SELECTIVITY, is_selective, missed_class_note

        def acc(adapter, loader, seed):
            st = split_stats(adapter, subsample_loader(loader, 500, seed=seed))
            return float(st["correct"].mean()) if len(st["correct"]) and np.isfinite(st["correct"]).all() else None

        def class_miss(adapter):
            """Class forgetting (no forget label among the retain labels) whose class is still recognised."""
            if retain_loader is None or adapter.family != "classifier":
                return None
            f = split_stats(adapter, subsample_loader(forget_loader, 500, seed=1))
            r = split_stats(adapter, subsample_loader(retain_loader, 500, seed=2))
            f_acc = float(f["correct"].mean())
            return missed_class_note(f_acc) if is_class_forgetting(f["label"], r["label"]) and f_acc > 0.03 else None

        def run():
            adapter = self._prepare(model, inplace)
            # the guard measures accuracy: classifiers, and language models' answer tokens
            measurable = adapter.family == "classifier" or hasattr(adapter, "loss_and_accuracy")
            before = acc(adapter, retain_loader, 2) if guard and retain_loader is not None and measurable else None
            # without held-out data the edit must also be selective (see TrainerConfig's guard)
            bare = before is not None and holdout_loader is None
            f_before = acc(adapter, forget_loader, 1) if bare else None
            saved = ModelState(adapter.model) if before is not None else None
            self.generator = torch.Generator().manual_seed(seed) if seed is not None else torch.Generator()
            with seeded_loaders(seed, forget_loader, retain_loader):
                reason = self.apply(adapter, forget_loader, retain_loader)
            adapter.model.eval()
            if before is not None:
                after = acc(adapter, retain_loader, 2)
                cost = before - after if after is not None else 0.0
                undo = None
                if after is not None and cost > retain_tolerance:
                    undo = (f"it cost {100 * cost:.1f} points of retain accuracy (more than {100 * retain_tolerance:g})"
                            ", so the model was left as it was: lower the edit's strength, or pass guard=False to "
                            "keep it")
                elif bare and f_before is not None and after is not None:
                    f_after = acc(adapter, forget_loader, 1)
                    f_drop = f_before - f_after if f_after is not None else 0.0
                    if not is_selective(f_drop, max(cost, 0.0)):
                        undo = (f"without held-out data an edit is kept only when it lowers forget accuracy, by at "
                                f"least {GUARD_SELECTIVITY:g} times as much as retain accuracy, and this one lowered "
                                f"them by "
                                f"{100 * f_drop:.1f} and {100 * cost:.1f} points, so the model was left "
                                "as it was: pass holdout_data, or guard=False to keep it")
                if undo:
                    saved.restore(adapter.model)
                    adapter.model.eval()
                    reason = f"{reason}; undone: {undo}"
            miss = class_miss(adapter) if guard else None
            if miss:
                reason = f"{reason}; {miss}"
            if (before is not None and undo) or miss:
                warnings.warn(reason)
            return adapter, reason

        t0 = time.perf_counter()
        with isolated_rng(seed):
            adapter, reason = self._guarded(model, inplace, run)
        dt = time.perf_counter() - t0
        name = self.registered_name or type(self).__name__
        return UnlearningResult(model=adapter.model, stop=Stop(StopKind.EDIT, reason), steps=1, strategy=name,
                                config={"strategy": name, "params": self.config.to_dict()}, timings={"unlearn_s": dt})
