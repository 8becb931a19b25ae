"""Selective pruning of the units most specific to the forget set (Pochinkov & Schoots, 2024)."""
from __future__ import annotations

from collections.abc import Mapping
import math
from dataclasses import dataclass
from typing import Dict, List

import torch
from torch import nn

from ..core.config import BaseConfig
from ..core.exceptions import ConfigError
from ..core.registry import register
from ..core.strategy import OneShotStrategy
from ..utils.data import subsample_loader


def _prunable(model: nn.Module, head) -> List[nn.Module]:
    """Hidden Linear / Conv layers whose weights may change: frozen layers (``requires_grad``
    off, e.g. a backbone the user froze) are left alone, as every other strategy leaves them."""
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) and m is not head
            and m.weight.requires_grad]


#: names of the last layer of a transformer block's feed-forward network in Hugging Face
#: models: GPT-2 / GPT-Neo ``mlp.c_proj``, LLaMA / Mistral / Qwen / Gemma ``mlp.down_proj``, GPT-J
#: ``mlp.fc_out``, GPT-NeoX / BLOOM / Falcon ``mlp.dense_4h_to_h``, OPT / Phi ``fc2``, T5
#: ``DenseReluDense.wo``, BERT ``output.dense`` (not ``attention.output.dense``); and the last
#: layer of diffusers' ``FeedForward`` (``ff.net``) in a UNet's or DiT's transformer blocks
FF_OUT = {"c_proj", "down_proj", "fc_out", "dense_4h_to_h", "fc2", "wo"}
FF_PARENTS = {"mlp", "DenseReluDense", "feed_forward", "ffn"}


def _is_hf_conv1d(m: nn.Module) -> bool:
    """GPT-2's ``Conv1D``: a linear layer whose weight is stored (in, out)."""
    return type(m).__name__ == "Conv1D" and getattr(m, "weight", None) is not None and m.weight.dim() == 2


def feed_forward_outputs(model: nn.Module) -> List[nn.Module]:
    """The output projections of a transformer's feed-forward networks (see :data:`FF_OUT`),
    trainable ones only: the inputs of these layers are the feed-forward neurons."""
    out = []
    for name, m in model.named_modules():
        parts = name.split(".")
        if not (isinstance(m, nn.Linear) or _is_hf_conv1d(m)) or len(parts) < 2 or not m.weight.requires_grad:
            continue
        last, parent = parts[-1], parts[-2]
        grand = parts[-3] if len(parts) > 2 else ""
        if ((last in FF_OUT and (parent in FF_PARENTS or last == "fc2"))
                or (last == "dense" and parent == "output" and grand != "attention")
                or (parent == "net" and grand in ("ff", "ff_context") and last == str(len(model.get_submodule(
                    name.rsplit(".", 1)[0])) - 1))):
            out.append(m)
    return out


@torch.no_grad()
def unit_activation(adapter, layers: List[nn.Module], loader, at_input: bool = False) -> Dict[nn.Module, torch.Tensor]:
    """Mean absolute output of every unit (output feature or channel) of ``layers``; with
    ``at_input``, of every input feature instead (a transformer's feed-forward neurons, as the
    inputs of the feed-forward output projection), over the forward pass of the adapter's loss
    (both towers of a CLIP model). Positions that a batch's ``attention_mask`` marks as padding
    are left out."""
    sums = {m: None for m in layers}
    counts = {m: 0 for m in layers}
    current = {}

    def add(m, x):
        a = x.detach().abs().float()
        mask = current.get("mask")
        if a.dim() == 3 and mask is not None and tuple(a.shape[:2]) == tuple(mask.shape):
            a = a[mask]  # (attended tokens, features)
        channels_first = a.dim() > 2 and not at_input and not isinstance(m, nn.Linear)  # a conv's (B, C, ...)
        # units: a conv's channels; a Linear's output features, the last dimension also for
        # token sequences (B, T, F), as in a vision transformer
        a = a.transpose(0, 1).reshape(a.shape[1], -1) if channels_first else a.reshape(-1, a.shape[-1]).t()
        sums[m] = a.sum(1) if sums[m] is None else sums[m] + a.sum(1)
        counts[m] += a.shape[1]

    handles = [m.register_forward_pre_hook(lambda m, inp: add(m, inp[0])) if at_input
               else m.register_forward_hook(lambda m, _inp, out: add(m, out)) for m in layers]
    was = adapter.model.training
    adapter.model.eval()
    try:
        for batch in loader:
            am = batch.get("attention_mask") if isinstance(batch, Mapping) else None
            current["mask"] = am.to(adapter.device).bool() if isinstance(am, torch.Tensor) else None
            adapter.per_sample_loss(batch) if at_input else adapter.logits(batch)
    finally:
        for h in handles:
            h.remove()
        adapter.model.train(was)
    return {m: sums[m] / max(1, counts[m]) for m in layers if sums[m] is not None}


def _zero_units(model: nn.Module, layer: nn.Module, units: torch.Tensor) -> None:
    layer.weight[units] = 0
    if layer.bias is not None:
        layer.bias[units] = 0
    # a BatchNorm right after the layer would add its shift back: zero its affine terms too
    mods = list(model.modules())
    nxt = mods[mods.index(layer) + 1] if mods.index(layer) + 1 < len(mods) else None
    if isinstance(nxt, nn.modules.batchnorm._BatchNorm) and nxt.affine and nxt.num_features == layer.weight.shape[0]:
        nxt.weight[units] = 0
        nxt.bias[units] = 0


@dataclass
class NeuronPruningConfig(BaseConfig):
    """``fraction``: share of each layer's units pruned per round, 0.02; ``rounds``: scoring
    and pruning rounds (scores are recomputed after each), 6 (measured on Fashion-MNIST
    class forgetting: forget accuracy 90% after 4 rounds, 46% after 5, 2% after 6, at a
    cost of ~10 points of test accuracy: pruning without repair is a blunt tool); ``max_samples``: samples
    of each set used for the activation statistics, 1000; ``eps`` in the score ratio."""

    fraction: float = 0.02
    rounds: int = 6
    max_samples: int = 1000
    eps: float = 1e-6

    def validate(self) -> None:
        self._check_range("fraction", 0.0, 1.0)
        self._check_positive("rounds", "max_samples", "eps")


@register("strategy", "neuron_pruning", aliases=("selective_pruning",))
class NeuronPruning(OneShotStrategy):
    """Selective pruning: remove the units whose activity is most specific to the forget set.

    Pochinkov & Schoots, "Dissecting Language Models: Machine Unlearning via Selective
    Pruning", 2024. Each unit's importance on a dataset is its mean absolute activation;
    its score is ``I_forget / (I_retain + ε)``; in each round the top ``fraction`` of
    units (at least one) of every hidden layer (outputs of Linear / Conv layers, the output layer
    excluded) by score are pruned (their weights and bias set to zero, so the unit
    outputs 0), then scores are recomputed. Deviation: the activation is taken at the
    layer's output (before the nonlinearity), where the pruning acts, so it applies to any
    Linear/Conv network without knowing its activation functions.

    Language models (causal, encoder-decoder, masked, image-text) and CLIP get the paper's transformer
    procedure instead (:meth:`_prune_feed_forward`, as in the authors' code): feed-forward
    neurons only, scored over the attended tokens, the top ``fraction`` of all of them pruned
    per round. Measured on the 2-layer GPT-2 of ``tests/test_llm.py`` (512 neurons; TOFU
    forget NLL 0.39, retain 0.34): the defaults raise them to 0.65 and 0.43; 5% × 10 rounds to
    1.51 and 0.87. The paper reports this selectivity falls for small models trained without
    dropout, which these are.
    """
    limits = ('forgetting one class of scikit-learn digits (MLP, seed 0), it stops with 100% of the class still '
              'recognised, with or without held-out data (pruning cost 16.8 points of retain accuracy, so the guard '
              'undid it); tests/test_first_hour.py measures it, and the run warns')

    config_class = NeuronPruningConfig
    needs_retain = True

    def apply(self, adapter, forget_loader, retain_loader) -> str:
        c = self.config
        model = adapter.model
        f_loader = subsample_loader(forget_loader, c.max_samples, seed=0)
        r_loader = subsample_loader(retain_loader, c.max_samples, seed=0)
        if adapter.family != "classifier":  # transformers: language models, CLIP
            return self._prune_feed_forward(adapter, f_loader, r_loader)
        layers = _prunable(model, adapter.head)
        if not layers:
            return "one-shot: no trainable hidden Linear/Conv layer to prune (frozen layers are left alone)"
        pruned = {m: torch.zeros(m.weight.shape[0], dtype=torch.bool, device=m.weight.device) for m in layers}
        with torch.no_grad():
            for _ in range(c.rounds):
                a_f = unit_activation(adapter, layers, f_loader)
                a_r = unit_activation(adapter, layers, r_loader)
                for m in layers:
                    if m not in a_f:
                        continue
                    score = a_f[m] / (a_r[m] + c.eps)
                    score[pruned[m]] = -1.0  # already pruned
                    k = min(int(math.ceil(c.fraction * score.numel())), int((~pruned[m]).sum()))
                    if k == 0:
                        continue
                    units = torch.topk(score, k).indices
                    _zero_units(model, m, units)
                    pruned[m][units] = True
        n = sum(int(p.sum()) for p in pruned.values())
        total = sum(p.numel() for p in pruned.values())
        return f"one-shot: pruned {n} of {total} hidden units in {c.rounds} round(s)"

    @torch.no_grad()
    def _prune_feed_forward(self, adapter, f_loader, r_loader) -> str:
        """The paper's transformer procedure: the neurons are the feed-forward networks'
        hidden units (the inputs of each block's feed-forward output projection), their
        importance the mean absolute activation over the attended tokens, and each round
        prunes the top ``fraction`` of all of them, across layers (the authors' default prunes
        feed-forward neurons only, by this ``abs`` score). A neuron is removed by zeroing its
        column of the output projection, so its activation no longer reaches the residual
        stream whatever the activation function (a gated MLP included)."""
        c = self.config
        layers = feed_forward_outputs(adapter.model)
        if not layers:
            raise ConfigError(
                f"neuron_pruning: found no trainable feed-forward output projection in this {adapter.family} model "
                f"(layers named {sorted(FF_OUT)} under {sorted(FF_PARENTS)}, BERT's output.dense or diffusers' "
                "ff.net); pruning needs a transformer's feed-forward neurons. Use a training-based strategy (npo, "
                "wga, ...).")
        sizes = [m.weight.shape[0] if _is_hf_conv1d(m) else m.weight.shape[1] for m in layers]
        bounds = [0] + [int(x) for x in torch.tensor(sizes).cumsum(0)]
        pruned = torch.zeros(bounds[-1], dtype=torch.bool)
        for _ in range(c.rounds):
            a_f = unit_activation(adapter, layers, f_loader, at_input=True)
            a_r = unit_activation(adapter, layers, r_loader, at_input=True)
            score = torch.cat([(a_f[m] / (a_r[m] + c.eps)).cpu() for m in layers])
            score[pruned] = -math.inf
            k = min(int(math.ceil(c.fraction * score.numel())), int((~pruned).sum()))
            if k == 0:
                break
            chosen = torch.topk(score, k).indices
            pruned[chosen] = True
            for m, lo, hi in zip(layers, bounds[:-1], bounds[1:]):
                units = (chosen[(chosen >= lo) & (chosen < hi)] - lo).to(m.weight.device)
                if _is_hf_conv1d(m):
                    m.weight[units] = 0  # (in, out)
                else:
                    m.weight[:, units] = 0
        return (f"one-shot: pruned {int(pruned.sum())} of {pruned.numel()} feed-forward neurons in {len(layers)} "
                f"blocks, {c.fraction:.0%} of them per round over {c.rounds} round(s)")
