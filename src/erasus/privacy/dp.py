"""DP-SGD training (Abadi et al., CCS 2016) with Opacus and its RDP accountant."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ..core.exceptions import ConfigError


@dataclass
class DPTrainingResult:
    """The trained model (a plain ``nn.Module``, Opacus wrappers removed), the ε spent at
    ``delta`` according to Opacus' accountant, and the noise multiplier used."""

    model: nn.Module
    epsilon: float
    delta: float
    noise_multiplier: float
    epochs: int
    max_grad_norm: float


def train_dp(model: nn.Module, loader, target_epsilon: float = 3.0, delta: Optional[float] = None,
             epochs: int = 10, lr: float = 0.5, max_grad_norm: float = 1.0, seed: int = 0,
             inplace: bool = False) -> DPTrainingResult:
    """Train ``model`` with DP-SGD (per-sample clipping to ``max_grad_norm``, Gaussian noise,
    Poisson sampling) to (``target_epsilon``, ``delta``)-DP with Opacus'
    ``make_private_with_epsilon``; ``delta`` defaults to 1 / (10 n). Cross-entropy on
    ``(x, y)`` batches, SGD at ``lr``. The accountant's ε is returned with the model.

    Needs ``pip install opacus`` (the ``privacy`` extra). Models with BatchNorm must be
    converted first (``opacus.validators.ModuleValidator.fix``); an error says so.
    """
    try:
        from opacus import PrivacyEngine
        from opacus.validators import ModuleValidator
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError("train_dp needs Opacus: pip install 'erasus[privacy]' (or pip install opacus).") from err
    from ..models import wrap
    from ..utils.misc import seed_everything

    if target_epsilon <= 0:
        raise ConfigError(f"Expected target_epsilon > 0, got {target_epsilon}.")
    n = len(loader.dataset)
    delta = 1.0 / (10 * n) if delta is None else delta
    if not 0 < delta < 1:
        raise ConfigError(f"Expected delta in (0, 1), got {delta}.")
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise ConfigError(f"The model cannot be trained with DP-SGD as it is: {errors[0]}. Convert it with "
                          "opacus.validators.ModuleValidator.fix(model) (e.g. BatchNorm -> GroupNorm).")
    seed_everything(seed)
    work = copy.deepcopy(model)  # Opacus attaches hooks: they never touch the caller's object
    work.train()
    opt = torch.optim.SGD(work.parameters(), lr=lr)
    engine = PrivacyEngine(accountant="rdp")
    dp_model, dp_opt, dp_loader = engine.make_private_with_epsilon(
        module=work, optimizer=opt, data_loader=loader, target_epsilon=target_epsilon, target_delta=delta,
        epochs=epochs, max_grad_norm=max_grad_norm)
    adapter = wrap(dp_model)
    for _ in range(epochs):
        for batch in dp_loader:
            if len(adapter.split(batch)[1]) == 0:  # Poisson sampling can draw an empty batch
                continue
            dp_opt.zero_grad(set_to_none=True)
            adapter.loss(batch).backward()
            dp_opt.step()
    eps = float(engine.get_epsilon(delta))
    trained = dp_model._module if hasattr(dp_model, "_module") else dp_model
    state = {k: v.detach().clone() for k, v in trained.state_dict().items()}
    out = model if inplace else copy.deepcopy(model)  # a clean module, free of Opacus' hooks
    out.load_state_dict(state)
    out.eval()
    return DPTrainingResult(out, eps, delta, float(dp_opt.noise_multiplier), epochs, max_grad_norm)
