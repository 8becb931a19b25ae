"""What a run gives back (:class:`UnlearningResult`) and the hooks a user can hang on the
training loop (:class:`Callback`)."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from .stopping import Stop, StopKind


class UnlearningResult:
    """What an unlearning run returns: the model, the coreset used, the history and timings,
    why it stopped (``stop``: a :class:`~erasus.core.stopping.Stop` with a ``kind``;
    ``stop_reason`` is its text) and ``config``, always
    ``{"strategy": name, "params": the strategy's settings, "trainer": the training loop's
    settings or None for a method without a loop}``."""

    def __init__(self, model: torch.nn.Module, coreset: Any = None, history: Optional[Dict[str, list]] = None,
                 timings: Optional[Dict[str, float]] = None, stop: Optional[Stop] = None, stop_reason: str = "",
                 best_step: Optional[int] = None, steps: int = 0, strategy: str = "",
                 config: Optional[Dict[str, Any]] = None, metrics: Optional[Dict[str, float]] = None):
        self.model, self.coreset = model, coreset
        self.history = history if history is not None else {}
        self.timings = timings if timings is not None else {}
        self.stop = stop if stop is not None else Stop(StopKind.EDIT, stop_reason)
        self.best_step, self.steps, self.strategy = best_step, steps, strategy
        self.config = dict(config) if config is not None else {}
        self.config.setdefault("strategy", strategy)
        self.config.setdefault("params", {})
        self.config.setdefault("trainer", None)
        self.metrics = metrics if metrics is not None else {}

    @property
    def stop_reason(self) -> str:
        """The stop reason as text (``str(result.stop)``)."""
        return str(self.stop)

    @stop_reason.setter
    def stop_reason(self, text: str) -> None:
        # a wrapper that rewrites the text (a composite, a strategy adding a remark) keeps the kind
        self.stop.message, self.stop.notes = text, []

    def __repr__(self) -> str:
        t = self.timings.get("total_s", self.timings.get("unlearn_s", 0.0))
        return (f"UnlearningResult(strategy={self.strategy!r}, steps={self.steps}, time={t:.2f}s, "
                f"stop_reason={self.stop_reason!r})")


class Callback:
    """Hooks called by the trainer. Override any of them.

    ``on_step_end`` and ``on_validation_end`` may stop the run: return a string (why) and the
    trainer stops there, ends as any stopping rule ends (with calibrated or monitored stopping
    the best checkpoint is restored) and writes ``"stopped by <Callback>: <why>"`` into
    ``result.stop_reason`` (``result.stop.kind`` is ``StopKind.CALLBACK``). Returning ``None``
    (the default) lets the run go on, so a stopping rule of one's own needs no change to the
    trainer (a :class:`~erasus.core.stopping.StoppingRule` can also keep checkpoints and change
    the learning rate)::

        class StopAtForgetAccuracy(Callback):
            def on_validation_end(self, trainer, module, step, metrics):
                if metrics["val_forget_acc"] < 0.1:
                    return f"forget accuracy {metrics['val_forget_acc']:.2f} < 0.1"
    """

    def on_fit_start(self, trainer, module) -> None: ...
    def on_step_end(self, trainer, module, step: int, loss: float) -> Optional[str]: ...
    def on_validation_end(self, trainer, module, step: int, metrics: Dict[str, float]) -> Optional[str]: ...
    def on_fit_end(self, trainer, module, result: UnlearningResult) -> None: ...


def callback_stop(cb: Callback, why) -> str:
    """A hook's answer as a stop message ("" to go on); anything but None or a string is an error."""
    if why is None:
        return ""
    if not isinstance(why, str):
        raise TypeError(f"{type(cb).__name__} returned {why!r} from a hook: expected None (go on) or a string "
                        "(why the run should stop).")
    return f"stopped by {type(cb).__name__}: {why}"
