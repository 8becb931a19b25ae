"""``UnlearningTrainer``: the one training loop every loss-based strategy shares.

It owns the optimiser and schedule, forget/retain interleaving, gradient clipping, mixed
precision, validation, best-checkpoint restore, the divergence guard, callbacks, the progress
bar and the history. When to stop, which checkpoint to keep and when to change the learning
rate is its stopping rule's call (``stopping=``: :mod:`erasus.core.stopping`, whose docstring
describes the calibrated rule, the default); the loop obeys the rule's
:class:`~erasus.core.stopping.Decision`. A strategy only defines its loss
(:class:`~erasus.core.module.UnlearningModule`).
"""
from __future__ import annotations

import math
import time
import warnings
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch

from ..utils.data import check_nonempty, cycle, subsample_loader
from ..utils.misc import adam_options, seed_everything, seeded_loaders, snapshot
from .callbacks import Callback, UnlearningResult, callback_stop
from .config import TrainerConfig  # noqa: F401  (re-exported)
from .distributed import average_gradients, distributed_context, shard_batch
from .exceptions import DataError, DivergenceError
from .stats import loss_auc, split_stats  # noqa: F401  (re-exported: measuring lives in core.stats)
from .stopping import (GUARD_SELECTIVITY, Decision, RunContext, Stop, StopKind, StoppingRule,  # noqa: F401
                       is_selective, missed_class_note, resolve_rule)


class _Run:
    """One run of the loop: the module, its optimiser and schedule, the stopping rule, the
    history and the best checkpoint. The rule decides; this obeys."""

    def __init__(self, trainer: "UnlearningTrainer", module, rule: StoppingRule, val: Dict[str, Any], total: int):
        self.trainer, self.module, self.rule, self.val, self.total = trainer, module, rule, val, total
        self.c = trainer.config
        self.model, self.adapter = module.model, module.adapter
        self.history: Dict[str, list] = rule.ctx.history
        self.best_state = snapshot(self.model)
        self.callback_stop = ""
        got = list(module.trainable_parameters())
        # parameters, or groups {"params": [...], "lr_factor": f} that train at f × the rate
        self.groups = got if got and isinstance(got[0], dict) else None
        self.params = [p for g in got for p in g["params"]] if self.groups else got
        if not self.params:
            raise RuntimeError(f"{type(module).__name__}: the model has no trainable parameters.")
        self.opt = trainer._optimizer(self.groups or self.params)
        self.sched = trainer._scheduler(self.opt, total)

    def validate(self, step: int) -> Dict[str, float]:
        """Per-sample statistics on every validation split, the rule's own numbers, the history
        and the callbacks' say."""
        stats = {k: split_stats(self.adapter, v) for k, v in self.val.items()} if self.rule.measures_splits else {}
        if step == 0:  # the data as given: NaN / inf inputs show up as non-finite losses
            for k, st in stats.items():
                bad = int((~np.isfinite(st["loss"])).sum())
                if bad:
                    raise DataError(f"The {k} data give a non-finite loss on {bad} of {len(st['loss'])} samples "
                                    "before any unlearning: expected finite inputs; check them for NaN or inf values.")
        m: Dict[str, float] = {"step": step}
        for k, s in stats.items():
            m[f"val_{k}_loss"] = float(s["loss"].mean())
            m[f"val_{k}_acc"] = float(s["correct"].mean())
        self.rule.measure(step, stats, m)
        self.history["eval"].append(m)
        for cb in self.trainer.callbacks:
            self.callback_stop = self.callback_stop or callback_stop(
                cb, cb.on_validation_end(self.trainer, self.module, step, m))
        return m

    def checkpoint(self, step: int) -> Optional[Stop]:
        """Validate, ask the rule and obey its decision (keep, restore, change the rate)."""
        d: Decision = self.rule.decide(step, self.validate(step))
        if d.improved:
            self.best_state = snapshot(self.model)
        if d.restore:
            self.model.load_state_dict(self.best_state)
        if d.lr_scale is not None:  # a fresh optimiser at the new step size
            self.opt = self.trainer._optimizer(self.groups or self.params)
            for group in self.opt.param_groups:
                group["lr"] = self.c.lr * d.lr_scale * group.get("lr_factor", 1.0)
            self.sched = self.trainer._scheduler(self.opt, max(1, self.total - step))
        return d.stop

    def step(self, pairs, step: int, name: str, dist, world: int) -> Optional[torch.Tensor]:
        """One optimiser step over ``pairs`` of (forget, retain) batches (more than one with
        gradient accumulation: their losses are averaged); the detached loss (on the device:
        not read back here), or None when the module had nothing to train on. A non-finite loss
        at the first step restores the model and raises (that step's loss is read at once)."""
        self.opt.zero_grad(set_to_none=True)
        total, k = None, len(pairs)
        for fb, rb in pairs:
            with self.trainer._autocast(self.adapter.device):
                loss = self.module.training_step(fb, rb, step)
            if loss is None:
                continue
            if dist is not None:  # the global loss: the mean of the processes' losses
                reduced = loss.detach().clone()
                dist.all_reduce(reduced)
                loss_value = reduced / world
            else:
                loss_value = loss.detach()
            if step == 0 and not torch.isfinite(loss_value).all():
                self.model.load_state_dict(self.best_state)
                raise DivergenceError(
                    f"{name}: the loss is {loss.item()} at the first step. Expected a finite loss: check the data "
                    "for NaN/inf values and lower the learning rate. The model was left as it was.")
            (loss / k if k > 1 else loss).backward()
            total = loss_value / k if total is None else total + loss_value / k
        if total is None:
            return None
        if dist is not None:
            average_gradients(self.params, dist, world)
        if self.c.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.c.grad_clip)
        self.opt.step()
        if self.sched is not None:
            self.sched.step()
        return total

    def flush(self, pending: list, bar) -> Optional[Stop]:
        """Read the pending steps' losses back (one host synchronisation), record them and
        hand them to the callbacks; a non-finite one restores the best checkpoint and stops."""
        if not pending:
            return None
        values = torch.stack([v.float().reshape(()) for _, v in pending]).cpu().tolist()
        steps = [s for s, _ in pending]
        pending.clear()
        for step, lv in zip(steps, values):  # step: the 0-based index of the step
            if not math.isfinite(lv):
                self.model.load_state_dict(self.best_state)
                self.good_steps = step
                stop = Stop(StopKind.DIVERGED, f"diverged: non-finite loss at step {step}; restored the checkpoint "
                            f"from step {getattr(self.rule, 'best_step', 0)}")
                warnings.warn(str(stop))
                return stop
            step += 1
            self.history["step"].append(step)
            self.history["loss"].append(lv)
            for cb in self.trainer.callbacks:
                self.callback_stop = self.callback_stop or callback_stop(
                    cb, cb.on_step_end(self.trainer, self.module, step, lv))
        bar.set_postfix(loss=f"{values[-1]:.3f}")
        return None

    def loop(self, plan, eval_every: int, bar, name: str) -> tuple:
        """Train until the rule, a callback or the budget stops; ``(steps, stop or None)``.
        Losses are read back every ``log_every`` steps (every step for callbacks that watch
        steps) and before each validation."""
        step, stop = 0, None
        if self.rule.evaluates:
            stop = self.checkpoint(0)
        if stop is None and self.callback_stop:
            stop = Stop(StopKind.CALLBACK, f"{self.callback_stop} at step 0")
        dist, rank, world = distributed_context()
        watched = [getattr(type(cb), "on_step_end", None) for cb in self.trainer.callbacks]
        every = 1 if any(f is not None and f is not Callback.on_step_end for f in watched) else self.c.log_every
        pending: list = []
        while stop is None and step < self.total:
            pairs = []
            for _ in range(self.c.accumulate):
                epoch, fb, rb = next(plan)
                if dist is not None:  # data parallel: each process takes its share of the batch
                    fb, rb = shard_batch(fb, rank, world), shard_batch(rb, rank, world)
                pairs.append((fb, rb))
            lv = self.step(pairs, step, name, dist, world)
            if lv is not None:
                pending.append((step, lv))
            step += 1
            bar.update(1)
            validating = self.rule.evaluates and (step % eval_every == 0 or step == self.total)
            if step % every == 0 or validating or step == self.total:
                stop = self.flush(pending, bar)
                if stop is not None:
                    break
            if validating:
                stop = self.checkpoint(step)
            if stop is None and self.callback_stop:
                stop = Stop(StopKind.CALLBACK, f"{self.callback_stop} at step {step}")
        if stop is None or stop.kind is not StopKind.DIVERGED:
            stop = self.flush(pending, bar) or stop
        if stop is not None and stop.kind is StopKind.DIVERGED:
            step = self.good_steps  # the steps before the first non-finite loss
        return step, stop


def compile_forward(adapter) -> torch.nn.Module:
    """Compile, in place and for the run, the module whose forward the loop calls most: a
    language model's backbone (its output layer runs on the answer tokens only, outside),
    else the model. Returns that module."""
    model = adapter.model
    base = getattr(model, "get_base_model", lambda: model)()
    target = getattr(base, "base_model", base) if hasattr(adapter, "scored_hidden") else model
    target.compile(dynamic=False)
    return target


class UnlearningTrainer:
    """Runs an :class:`UnlearningModule` on forget (and retain) data. See the module docstring."""

    def __init__(self, config: Optional[TrainerConfig] = None, callbacks: Sequence[Callback] = (), **kwargs):
        if config is not None and kwargs:
            raise ValueError("Expected either config= or keyword arguments for UnlearningTrainer, got both.")
        self.config = config if config is not None else TrainerConfig(**kwargs)
        self.callbacks = list(callbacks)

    # ------------------------------------------------------------------------------------
    def _optimizer(self, params):
        """The optimiser over ``params``: tensors, or groups ``{"params", "lr_factor"}`` (each at
        ``lr_factor`` × the rate; the factor stays in the group for later rate changes)."""
        c = self.config
        if params and isinstance(params[0], dict):
            params = [{**g, "params": list(g["params"]), "lr": c.lr * g.get("lr_factor", 1.0)} for g in params]
        if c.optimizer == "sgd":
            return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        cls = torch.optim.AdamW if c.optimizer == "adamw" else torch.optim.Adam
        return cls(params, lr=c.lr, weight_decay=c.weight_decay, **adam_options(params))

    def _scheduler(self, opt, total: int):
        c = self.config
        if c.scheduler == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total))
        if c.scheduler == "linear":
            return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / max(1, total)))
        return None

    def _autocast(self, device: torch.device):
        p = self.config.precision
        if device.type == "cuda" and p in ("auto", "bf16", "fp16"):
            dtype = torch.float16 if p == "fp16" else torch.bfloat16
            return torch.autocast("cuda", dtype=dtype)
        return torch.autocast("cpu", enabled=False)

    def _plan(self, module, forget_loader, retain_loader):
        """Yield (epoch, forget_batch, retain_batch) per optimiser step, forever."""
        schedule = self.config.schedule or module.schedule
        retain_iter = cycle(retain_loader) if retain_loader is not None else None
        epoch = 0
        while True:
            if schedule == "interleaved":
                for fb in forget_loader:
                    yield epoch, fb, (next(retain_iter) if retain_iter is not None else None)
            else:
                if module.use_forget_phase(epoch):
                    for fb in forget_loader:
                        yield epoch, fb, None
                if retain_iter is not None:
                    n_r = self.config.retain_steps_per_epoch or len(retain_loader)
                    for _ in range(n_r):
                        yield epoch, None, next(retain_iter)
            epoch += 1

    def _steps_per_epoch(self, module, forget_loader, retain_loader) -> int:
        schedule = self.config.schedule or module.schedule
        if schedule == "interleaved" or retain_loader is None:
            return len(forget_loader)
        return len(forget_loader) + (self.config.retain_steps_per_epoch or len(retain_loader))

    # ------------------------------------------------------------------------------------
    def fit(self, module, forget_loader, retain_loader=None, holdout_loader=None,
            strategy_name: str = "", forget_eval_loader=None) -> UnlearningResult:
        """Run ``module`` in place on its bound model and return an :class:`UnlearningResult`.

        ``forget_eval_loader``: what validation and the stopping rule measure as the forget
        set (default: ``forget_loader``). With a coreset, this is the whole forget request.

        With a seed, the loaders' own shuffling generators are seeded for the run and
        restored after it, so the run does not depend on the loaders' earlier use."""
        with seeded_loaders(self.config.seed, forget_loader, retain_loader):
            return self._fit(module, forget_loader, retain_loader, holdout_loader, strategy_name, forget_eval_loader)

    def _budget(self, steps_per_epoch: int) -> int:
        c = self.config
        total = (max(int(math.ceil(c.max_epochs * steps_per_epoch)), c.min_steps) if c.max_epochs is not None
                 else c.max_steps)
        return min(total, c.max_steps) if c.max_steps is not None else total

    def _validation_sets(self, forget_loader, forget_eval_loader, val_retain, holdout_loader) -> Dict[str, Any]:
        n = self.config.val_max_samples
        val_forget = check_nonempty(forget_eval_loader, "forget") if forget_eval_loader is not None else forget_loader
        val = {"forget": subsample_loader(val_forget, n, seed=1)}
        if val_retain is not None:
            val["retain"] = subsample_loader(val_retain, n, seed=2)
        if holdout_loader is not None:
            val["holdout"] = subsample_loader(holdout_loader, n, seed=3)
        return val

    def _fit(self, module, forget_loader, retain_loader, holdout_loader, strategy_name,
             forget_eval_loader=None) -> UnlearningResult:
        from tqdm.auto import tqdm

        c = self.config
        if module.adapter is None:
            raise RuntimeError("Expected a module bound to a model: UnlearningModule(model) or module.bind(adapter).")
        forget_loader = check_nonempty(forget_loader, "forget")
        val_retain = check_nonempty(retain_loader, "retain") if retain_loader is not None else None
        if module.uses_retain and retain_loader is None:
            warnings.warn(f"{type(module).__name__} uses retain data but none was given: running without it.")
        # retain data is always used for validation; for training only if the method uses it
        retain_loader = val_retain if module.uses_retain else None
        seed_everything(c.seed)
        module.generator = torch.Generator().manual_seed(c.seed) if c.seed is not None else torch.Generator()
        rule, note = resolve_rule(c, module.adapter, holdout_loader is not None, val_retain is not None)
        # optimiser steps per epoch: batches per epoch / batches per step
        spe = max(1, -(-self._steps_per_epoch(module, forget_loader, retain_loader) // c.accumulate))
        total = self._budget(spe)
        val = self._validation_sets(forget_loader, forget_eval_loader, val_retain, holdout_loader)
        history: Dict[str, list] = {"step": [], "loss": [], "eval": [], "backoffs": []}
        rule.start(RunContext(config=c, adapter=module.adapter, val=val, total=total, history=history, note=note))
        eval_every = c.eval_every_steps or rule.eval_every(
            spe, sum(len(v.dataset) for v in val.values()), getattr(forget_loader, "batch_size", None) or 1)

        t0 = time.perf_counter()
        module.setup(forget_loader, retain_loader)
        compiled = compile_forward(module.adapter) if c.compile else None
        setup_s = time.perf_counter() - t0
        run = _Run(self, module, rule, val, total)
        for cb in self.callbacks:
            cb.on_fit_start(self, module)
        name = strategy_name or type(module).__name__
        run.model.train()
        bar = tqdm(total=total, desc=name, disable=not c.progress, leave=False, dynamic_ncols=True)
        t_loop = time.perf_counter()
        try:
            step, stop = run.loop(self._plan(module, forget_loader, retain_loader), eval_every, bar, name)
        finally:
            bar.close()
            if compiled is not None:
                compiled._compiled_call_impl = None  # the model goes back uncompiled
        loop_s = time.perf_counter() - t_loop
        if rule.restores_best and (stop is None or stop.kind is not StopKind.DIVERGED):
            run.model.load_state_dict(run.best_state)
        stop = rule.finish(step, stop)
        run.model.eval()
        result = UnlearningResult(
            model=run.model, history=history, stop=stop,
            best_step=rule.best_step if rule.restores_best else step, steps=step, strategy=strategy_name,
            config={"strategy": strategy_name, "trainer": c.to_dict()},
            timings={"setup_s": setup_s, "loop_s": loop_s, "unlearn_s": setup_s + loop_s},
        )
        for cb in self.callbacks:
            cb.on_fit_end(self, module, result)
        return result
