"""Plain supervised training, used to build original and gold (retrained) models."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..utils.misc import adam_options, seed_everything


def train_classifier(model: nn.Module, loader, epochs: int = 10, lr: float = 1e-3, weight_decay: float = 0.0,
                     seed: Optional[int] = 0, progress: bool = False, desc: str = "train",
                     cosine: bool = True, recorder=None, dynamics=None) -> nn.Module:
    """Train ``model`` in place with Adam (cosine-annealed learning rate unless ``cosine=False``)
    and cross-entropy on ``(x, y)`` batches; returns it. ``recorder``: an
    :class:`~erasus.strategies.amnesiac.AmnesiacRecorder` (batches must then carry their
    dataset indices, e.g. from an ``IndexedDataset``); it is closed at the end. ``dynamics``: a
    :class:`~erasus.selectors.dynamics.TrainingDynamicsRecorder`, updated with every batch's
    per-sample correctness and loss (batches must carry indices too). On a CUDA device the
    forward runs under bf16 autocast."""
    from tqdm.auto import tqdm

    from . import wrap

    seed_everything(seed)
    adapter = wrap(model)
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **adam_options(params))
    # bf16 autocast where the model sits on a CUDA device (as the unlearning trainer's "auto")
    cast = (torch.autocast("cuda", dtype=torch.bfloat16) if adapter.device.type == "cuda"
            else torch.autocast("cpu", enabled=False))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(loader)) if cosine else None
    model.train()
    bar = tqdm(total=epochs * len(loader), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for _ in range(epochs):
        for batch in loader:
            if recorder is not None:
                recorder.before_step()
            with cast:
                if dynamics is None:
                    loss = adapter.loss(batch)
                else:
                    logits, y = adapter.logits_and_labels(batch)
                    per = adapter.per_sample_loss(batch, logits=logits)
                    loss = per.mean()
            if dynamics is not None:
                dynamics.update(batch[-1], (logits.argmax(1) == y).cpu().numpy(), per.detach().cpu().numpy())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if recorder is not None:
                recorder.after_step(batch)
            if sched is not None:
                sched.step()
            bar.update(1)
    bar.close()
    if recorder is not None:
        recorder.close()
    model.eval()
    return model


def train_steps(loss_of_batch, params, loader, steps: int, lr: float, desc: str = "train",
                progress: bool = False) -> None:
    """``steps`` AdamW steps of ``loss_of_batch(batch)`` over ``params``, cycling through
    ``loader`` (the generative models trained here from scratch: text-to-image, CLIP)."""
    from tqdm.auto import tqdm

    opt = torch.optim.AdamW(params, lr=lr, **adam_options(params))
    step = 0
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False)
    while step < steps:
        for batch in loader:
            loss = loss_of_batch(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.update(1)
            if step >= steps:
                break
    bar.close()
