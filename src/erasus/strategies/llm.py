"""Language-model unlearning methods: IdkNLL, IdkDPO, UNDIAL, RMU, task-vector negation and the
inference-time activation steering and DExperts.

They complete the open-unlearning family next to ``gradient_ascent``, ``grad_diff``
(``negative_gradient``), ``npo``, ``simnpo`` and ``wga``, which are written on the
adapter's per-sample likelihood and serve classifiers and language models alike.
IdkNLL / IdkDPO need forget batches that carry a refusal answer for every question
(:class:`~erasus.models.QACollator` with ``alt_answers=load_idk()``).
"""
from __future__ import annotations

from collections.abc import Mapping
import copy
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from ..core.config import BaseConfig
from ..core.exceptions import ConfigError, DataError
from ..core.module import UnlearningModule, frozen_copy
from ..core.registry import register
from ..core.strategy import (
    ForgetRetainConfig,
    ForgetRetainStrategy,
    LossStrategyConfig,
    OneShotStrategy,
)
from ..core.trainer import UnlearningTrainer
from ..models.batching import INDEX
from ..models.causal_lm import TOKEN_FAMILIES
from .preference import NPO, NPOConfig


def alt_view(batch, who: str) -> dict:
    """The alternative-answer encoding of a forget batch (``alt_*`` keys of QACollator)."""
    if not isinstance(batch, Mapping) or "alt_input_ids" not in batch:
        raise DataError(f"{who} needs forget batches with an alternative (refusal) answer per question: build the "
                        "forget loader with QACollator(tokenizer, alt_answers=erasus.data.datasets.tofu.load_idk()).")
    view = {"input_ids": batch["alt_input_ids"], "attention_mask": batch["alt_attention_mask"],
            "labels": batch["alt_labels"]}
    if INDEX in batch:
        view[INDEX] = batch[INDEX]
    return view


@dataclass
class IdkConfig(ForgetRetainConfig):
    """``lr`` 1e-3 (Adam), at most ``epochs`` = 10 passes over the forget set;
    ``retain_weight`` 1 (the retain NLL, as in TOFU's IDK baseline)."""

    lr: float = 1e-3
    epochs: float = 10


@register("strategy", "idk", aliases=("idk_nll", "idknll", "i_dont_know"))
class IdkNLL(ForgetRetainStrategy):
    """"I don't know" fine-tuning: train the model to answer each forget question with a
    refusal instead of the fact (the IDK baseline of Maini et al., "TOFU: A Task of
    Fictitious Unlearning for LLMs", 2024), plus the retain NLL. The forget answers'
    likelihood falls as the refusal takes their place, without an unbounded ascent term."""

    config_class = IdkConfig
    supports = ("causal_lm",)

    def forget_step(self, batch, batch_idx):
        return self.adapter.loss(alt_view(batch, "idk"))


@dataclass
class DPOConfig(NPOConfig):
    """``beta`` (β) 0.1 (TOFU's IdkDPO); ``lr`` 1e-3 (Adam), at most ``epochs`` = 10;
    ``retain_weight`` 1 (the same fields and defaults as NPO's)."""


@register("strategy", "dpo", aliases=("idk_dpo", "idkdpo"))
class IdkDPO(NPO):
    """Direct Preference Optimization (Rafailov et al., NeurIPS 2023) with the refusal as the
    preferred answer ``y_w`` and the forget answer as the rejected one ``y_l`` (the IdkDPO
    variant of Maini et al., TOFU, 2024; also Zhang et al. 2024's DPO baseline)::

        L = −log σ(β[(log π_θ(y_w|x) − log π_ref(y_w|x)) − (log π_θ(y_l|x) − log π_ref(y_l|x))])

    with the original model as the frozen reference and sequence log-likelihoods, plus the
    retain NLL. The reference's log-likelihoods of both answers are computed once, before the
    first step (``reference``, as NPO's: :class:`~erasus.strategies.preference.CachedReference`).
    """

    config_class = DPOConfig
    supports = ("causal_lm",)
    reference_views = (lambda b: alt_view(b, "dpo"), lambda b: b)

    def forget_step(self, batch, batch_idx):
        win = alt_view(batch, "dpo")
        ref_w, ref_l = (-x for x in self.reference_losses(batch))
        lw, ll = -self.adapter.sequence_nll(win), -self.adapter.sequence_nll(batch)
        margin = (lw - ref_w) - (ll - ref_l)
        return -F.logsigmoid(self.config.beta * margin).mean()


@dataclass
class UndialConfig(ForgetRetainConfig):
    """``strength`` (γ), how far the true token's logit is lowered in the teacher, 10
    (open-unlearning's default; the paper sweeps 3-30); ``lr`` 1e-3 (Adam), at most
    ``epochs`` = 10; ``retain_weight`` 0 (the paper trains on the forget set only)."""

    strength: float = 10.0
    lr: float = 1e-3
    epochs: float = 10
    retain_weight: float = 0.0

    def validate(self) -> None:
        super().validate()
        self._check_positive("strength")


@register("strategy", "undial")
class Undial(ForgetRetainStrategy):
    """UNDIAL: self-distillation with adjusted logits (Dong et al., "UNDIAL: Self-Distillation
    with Adjusted Logits for Robust Unlearning in Large Language Models", NAACL 2025).

    The frozen original is the teacher; at every scored position its logit of the true
    token is lowered by ``strength`` (``z' = z − γ·onehot(y)``) and the model is trained
    with cross-entropy towards ``softmax(z')``: the forget token loses probability mass in
    proportion to the teacher's confidence while the rest of the distribution is kept, a
    bounded target where gradient ascent's is not. Works for classifiers too (one
    "position" per sample)."""
    limits = ('forgetting one class of scikit-learn digits (MLP, seed 0), it stops with 35.5% of the class still '
              'recognised, with or without held-out data (it backtracks on retain accuracy); '
              'tests/test_first_hour.py measures it, and the run warns')

    config_class = UndialConfig
    supports = ("classifier",) + TOKEN_FAMILIES

    def setup(self, forget_loader, retain_loader):
        self.teacher = self.frozen_reference()

    def forget_step(self, batch, batch_idx):
        z, y = self.adapter.scored_logits(batch)  # one row per scored token, or per sample
        with torch.no_grad():
            zt, _ = self.teacher.scored_logits(batch)
            target = torch.softmax(zt.float() - self.config.strength * F.one_hot(y, zt.shape[-1]).float(), -1)
        return -(target * torch.log_softmax(z.float(), -1)).sum(-1).mean()

    def release(self) -> None:
        self.teacher = None
        super().release()


def transformer_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The list of transformer blocks of a Hugging Face causal LM (GPT-2 ``transformer.h``,
    LLaMA / Mistral ``model.layers``, ...): the ``ModuleList`` whose length is the config's
    number of layers."""
    cfg = getattr(model, "config", None)
    n = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None)
    for mod in model.modules():
        if isinstance(mod, torch.nn.ModuleList) and (n is None or len(mod) == n) and len(mod) > 0:
            return mod
    raise ConfigError(f"Could not find the transformer blocks of {type(model).__name__} (a ModuleList of "
                      f"{n} layers).")


def block_index(model: torch.nn.Module, layer: Optional[int], default: int, who: str) -> int:
    """``layer`` (or ``default``) checked against the model's number of transformer blocks."""
    n = len(transformer_blocks(model))
    layer = default if layer is None else layer
    if not 0 <= layer < n:
        raise ConfigError(f"{who}: layer {layer} does not exist; the model has {n} blocks.")
    return layer


@dataclass
class RMUConfig(LossStrategyConfig):
    """``layer``: the block whose output is steered, default ``n_layers // 4`` (the paper
    uses 7 of 32); ``update_layers``: how many blocks up to ``layer`` are trained (their MLP
    weights only), 3 (ℓ−2..ℓ, as in the paper); ``steering_coeff`` (c): the norm of the
    random target vector, default ``None`` = ``steering_scale`` × the mean norm of the
    layer's activations on the forget set (the paper's c = 6.5 for Zephyr-7B does not
    transfer across models); ``steering_scale`` 4; ``alpha``: weight of the retain
    activation-matching loss, 10; ``lr`` 1e-2 (Adam); at most ``epochs`` = 10. The paper's
    values (α = 1200, lr 5e-5 over ~250 batches) are for a 7B model; these defaults were
    measured on the small from-scratch TOFU models this project can run (a 2-layer GPT-2:
    α 10 / lr 1e-2 raised the forget NLL 0.39 → 2.58 with retain 0.34 → 0.52; α 100 /
    lr 1e-3 left it at 0.42)."""

    layer: Optional[int] = None
    update_layers: int = 3
    steering_coeff: Optional[float] = None
    steering_scale: float = 4.0
    alpha: float = 10.0
    lr: float = 1e-2
    epochs: float = 10

    def validate(self) -> None:
        super().validate()
        self._check_positive("update_layers", "steering_scale", "alpha", "steering_coeff")
        self._check_positive("layer", allow_zero=True)


@register("strategy", "rmu", aliases=("representation_misdirection",))
class RMU(ForgetRetainStrategy):
    """Representation Misdirection for Unlearning (Li et al., "The WMDP Benchmark: Measuring
    and Reducing Malicious Use With Unlearning", ICML 2024).

    At block ``ℓ``, forget-token activations are pushed to a fixed random direction of norm
    ``c`` (``‖h_ℓ(x_f) − c·u‖²``, ``u`` uniform in [0,1)^d then normalised) while retain
    activations are held to the frozen model's (``α‖h_ℓ(x_r) − h_ℓ^frozen(x_r)‖²``); only the
    MLP weights of blocks ℓ−2..ℓ are trained. Scrambling the representation there makes the
    later layers unable to use the forget knowledge. Losses are mean squared errors over
    tokens and dimensions, as in the authors' code. Deviation: the default ``c`` is scaled to
    the model's own activation norm (see :class:`RMUConfig`).
    """

    config_class = RMUConfig
    supports = ("causal_lm",)

    def setup(self, forget_loader, retain_loader):
        blocks = transformer_blocks(self.model)
        c = self.config
        self.layer = block_index(self.model, c.layer, len(blocks) // 4, "rmu")
        self.frozen = self.frozen_reference()
        train = {id(p) for i in range(max(0, self.layer - c.update_layers + 1), self.layer + 1)
                 for name, mod in blocks[i].named_children() if "mlp" in name.lower() or "ffn" in name.lower()
                 for p in mod.parameters()}
        if not train:
            raise ConfigError("rmu: found no MLP module (a child named '*mlp*' or '*ffn*') in the updated blocks.")
        self._flags = {id(p): p.requires_grad for p in self.model.parameters()}
        for p in self.model.parameters():
            p.requires_grad_(p.requires_grad and id(p) in train)
        g = torch.Generator().manual_seed(0)
        hidden = self._hidden(self.adapter, next(iter(forget_loader)))
        u = torch.rand(hidden.shape[-1], generator=g)
        coeff = c.steering_coeff
        if coeff is None:
            with torch.no_grad():
                norms = [self._hidden(self.frozen, b).norm(dim=-1).mean() for b, _ in zip(forget_loader, range(4))]
            coeff = c.steering_scale * float(torch.stack(norms).mean())
        self.target = (coeff * u / u.norm()).to(hidden.device)
        self.coeff = coeff

    def _hidden(self, adapter, batch):
        return adapter.block_output(batch, self.layer)

    def forget_step(self, batch, batch_idx):
        h = self._hidden(self.adapter, batch)
        return F.mse_loss(h.float(), self.target.expand_as(h).float())

    def retain_step(self, batch, batch_idx):
        h = self._hidden(self.adapter, batch)
        with torch.no_grad():
            h0 = self._hidden(self.frozen, batch)
        return self.config.alpha * F.mse_loss(h.float(), h0.float())

    @property
    def uses_retain(self) -> bool:  # type: ignore[override]
        return True

    def release(self) -> None:
        if self.adapter is not None and getattr(self, "_flags", None):
            for p in self.model.parameters():
                p.requires_grad_(self._flags.get(id(p), p.requires_grad))
        self.frozen = None
        self._flags = None
        super().release()


@dataclass
class TaskVectorConfig(LossStrategyConfig):
    """``lr`` 1e-3 (Adam) and ``epochs`` 5: the fine-tuning on the forget set that builds the
    task vector; ``scale`` (λ) 1.0: how much of the vector is subtracted."""

    lr: float = 1e-3
    epochs: float = 5
    scale: float = 1.0

    def validate(self) -> None:
        super().validate()
        self._check_positive("scale")


class _ForgetDescent(UnlearningModule):
    """Plain fine-tuning on the forget set (the task whose vector is negated)."""

    uses_retain = False

    def forget_step(self, batch, batch_idx):
        return self.adapter.loss(batch)


def forget_finetuned(adapter, loader, c, who: str):
    """A copy of ``adapter.model`` fine-tuned on ``loader`` (``c.lr``, ``c.epochs``,
    ``c.optimizer``, ``c.weight_decay``), as the trainer's result: the model that knows the
    forget data more strongly (task vectors' ``θ_ft``, DExperts' anti-expert)."""
    module = _ForgetDescent().bind(adapter.with_model(copy.deepcopy(adapter.model)))
    trainer = UnlearningTrainer(lr=c.lr, max_epochs=c.epochs, min_steps=0, optimizer=c.optimizer,
                                weight_decay=c.weight_decay, stopping="none", progress=False)
    return trainer.fit(module, loader, None, None, strategy_name=f"{who} fine-tuning")


@register("strategy", "task_vector", aliases=("task_arithmetic", "task_negation"))
class TaskVector(OneShotStrategy):
    """Task-vector negation (Ilharco et al., "Editing Models with Task Arithmetic", ICLR
    2023): fine-tune a copy of the model further on the forget set, take the task vector
    ``τ = θ_ft − θ_0`` (what learning the forget data more strongly changes) and subtract
    it, ``θ = θ_0 − λτ``. One fine-tuning run and one weight edit; no retain data. Applies
    to any model family (the fine-tuning uses the adapter's loss)."""
    limits = ('forgetting one class of scikit-learn digits (MLP, seed 0), it stops with 15.5% of the class still '
              'recognised, with or without held-out data; tests/test_first_hour.py measures it, and the run warns')

    config_class = TaskVectorConfig

    def apply(self, adapter, forget_loader, retain_loader) -> str:
        c = self.config
        res = forget_finetuned(adapter, forget_loader, c, "task_vector")
        with torch.no_grad():
            for p0, p1 in zip(adapter.model.parameters(), res.model.parameters()):
                if p0.requires_grad:
                    p0.sub_(c.scale * (p1 - p0))
        return f"subtracted {c.scale:g} x the task vector of {res.steps} fine-tuning steps on the forget set"


@dataclass
class SteeringConfig(BaseConfig):
    """``layer``: the first block whose output is edited, default ``n_layers // 2``; ``scale``
    (α): 1 removes the projection on the forget direction, 2 (default) reflects it to the
    other side (steering away rather than only ablating; measured on a 2-layer GPT-2 trained
    on TOFU: α = 1 raised the forget NLL by 0.09, α = 2 by 0.59 with retain +0.06, α = 4 by
    1.98 with retain +0.34); ``max_batches``: forget / retain batches used to estimate the
    direction, 16. Nothing is trained."""

    layer: Optional[int] = None
    scale: float = 2.0
    max_batches: int = 16

    def validate(self) -> None:
        self._check_positive("scale", "max_batches")
        self._check_positive("layer", allow_zero=True)


@register("strategy", "activation_steering", aliases=("directional_ablation", "steering"))
class ActivationSteering(OneShotStrategy):
    """Inference-time unlearning by directional ablation of the residual stream: no weight
    changes. The direction ``d`` is the difference of mean activations over forget-answer
    tokens and retain-answer tokens at block ``ℓ`` (a difference-in-means "reading vector",
    Zou et al., "Representation Engineering", 2023; Turner et al., "Activation Addition",
    2023); forward hooks then remove ``α·(h·d̂)d̂`` from the output of every block from ``ℓ``
    on, as the directional ablation of Arditi et al., "Refusal in Language Models Is Mediated
    by a Single Direction", NeurIPS 2024. The edit lives in the hooks of the returned model
    (``model.erasus_hooks``); the weights are the original's, so saving the weights alone
    does not keep it (``LLMUnlearner.save_pretrained`` refuses)."""

    config_class = SteeringConfig
    supports = ("causal_lm",)
    needs_retain = True

    @torch.no_grad()
    def _mean(self, adapter, loader, layer):
        total, count = None, 0
        for b, _ in zip(loader, range(self.config.max_batches)):
            h = adapter.block_output(b, layer, answer_only=True).double()
            total = h.sum(0) if total is None else total + h.sum(0)
            count += h.shape[0]
        return total / max(count, 1)

    def apply(self, adapter, forget_loader, retain_loader) -> str:
        blocks = transformer_blocks(adapter.model)
        layer = block_index(adapter.model, self.config.layer, len(blocks) // 2, "activation_steering")
        d = self._mean(adapter, forget_loader, layer) - self._mean(adapter, retain_loader, layer)
        u = (d / d.norm().clamp_min(1e-12)).float()
        alpha = self.config.scale

        def hook(_mod, _inp, out):
            h = out[0] if isinstance(out, tuple) else out
            h = h - alpha * (h @ u.to(h.dtype)).unsqueeze(-1) * u.to(h.dtype)
            return (h,) + tuple(out[1:]) if isinstance(out, tuple) else h

        adapter.model.erasus_hooks = [blk.register_forward_hook(hook) for blk in blocks[layer:]]
        return (f"ablating the forget direction (|d| = {float(d.norm()):.3g}) from blocks {layer}..{len(blocks) - 1} "
                f"at inference; weights unchanged")


@dataclass
class DExpertsConfig(TaskVectorConfig):
    """``lr`` 1e-3 (Adam) and ``epochs`` 5: the fine-tuning of the anti-expert on the forget
    set; ``alpha`` (α) 1.0: the weight of the expert / anti-expert logit difference
    (measured on a 2-layer GPT-2 trained on 5 TOFU authors, forgetting one: α = 0.5 raised
    the forget answers' NLL by 0.24 and the retain answers' by 0.02, α = 1 by 0.63 / 0.08,
    α = 2 by 1.87 / 0.32, α = 4 by 5.6 / 1.4 with garbled answers)."""

    alpha: float = 1.0

    def validate(self) -> None:
        super().validate()
        self._check_positive("alpha")


@register("strategy", "dexperts", aliases=("decoding_time_experts", "anti_expert"))
class DExperts(OneShotStrategy):
    """Decoding-time unlearning with an anti-expert (Liu et al., "DExperts: Decoding-Time
    Controlled Text Generation with Experts and Anti-Experts", ACL 2021): the next-token
    logits become ``z_base + α (z_expert − z_anti)``. The anti-expert is a copy of the model
    fine-tuned further on the forget set (it knows the forget data best); the expert is the
    model itself, so the logits are ``(1 + α) z_base − α z_anti``: tokens that the forget
    data made likely are pushed down, the rest is left to the base model. No weight of the
    model changes.

    The anti-expert lives in the returned model (``model.erasus_anti_expert``, frozen, in
    eval mode) and a forward hook combines the two models' logits for every forward pass
    (scoring and generation alike); the returned model generates without a key/value cache
    (both models see the whole sequence at each step), and holds twice the weights.
    ``LLMUnlearner.save_pretrained`` refuses it, as the edit is not in the weights. Causal
    language models only."""

    config_class = DExpertsConfig
    supports = ("causal_lm",)

    def apply(self, adapter, forget_loader, retain_loader) -> str:
        c = self.config
        res = forget_finetuned(adapter, forget_loader, c, "dexperts anti-expert")
        anti = frozen_copy(res.model)
        model = adapter.model
        alpha = c.alpha
        inputs = ("input_ids", "attention_mask", "position_ids", "token_type_ids")

        def hook(_mod, args, kwargs, out):
            if kwargs.get("past_key_values") is not None and kwargs["past_key_values"].get_seq_length() > 0:
                raise ConfigError("dexperts needs every forward pass on the whole sequence: generate with "
                                  "use_cache=False (the returned model's generation config already says so).")
            feed = {k: kwargs[k] for k in inputs if kwargs.get(k) is not None}
            if args:
                feed["input_ids"] = args[0]
            with torch.no_grad():
                z_anti = anti(**feed, use_cache=False).logits
            out.logits = (1 + alpha) * out.logits - alpha * z_anti.to(out.logits.dtype)
            return out

        model.erasus_anti_expert = anti
        model.config.use_cache = False
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.use_cache = False
        model.erasus_hooks = [model.register_forward_hook(hook, with_kwargs=True)]
        return (f"decoding with (1 + {alpha:g}) x the model's logits - {alpha:g} x those of an anti-expert fine-tuned "
                f"for {res.steps} steps on the forget set; weights unchanged")
