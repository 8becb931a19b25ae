"""``LLMUnlearner``: the select → unlearn → verify pipeline for Hugging Face causal LMs."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

from torch import nn

from ..core.exceptions import ConfigError, UnsupportedModelError
from ..models.causal_lm import load_causal_lm  # noqa: F401  (its home is erasus.models.causal_lm)
from .erasus_unlearner import ErasusUnlearner
from .saving import SavesPretrained, _version

LM_METRICS = ("lm_mia", "memorization")


class LLMUnlearner(SavesPretrained, ErasusUnlearner):
    """Unlearning for causal language models (GPT-2, LLaMA, Mistral, ... through
    ``transformers``' ``AutoModelForCausalLM``).

    >>> llm = LLMUnlearner("path/to/finetuned", strategy="npo", lora={"rank": 8})
    >>> result = llm.fit(forget_loader, retain_loader)          # QACollator batches
    >>> llm.fit(forget_records, retain_records)   # or question/answer dicts, or texts (tokenizer known)
    >>> llm.evaluate(forget_loader, retain_loader, holdout_data=holdout_loader)
    >>> llm.save_pretrained("unlearned/")                        # weights + model card

    ``model``: a loaded model, or a local path / Hub name given to
    ``AutoModelForCausalLM.from_pretrained`` (and ``AutoTokenizer`` when ``tokenizer`` is
    not given). Batches are dicts with ``input_ids``, ``attention_mask`` and ``labels``
    (answer tokens only; :class:`~erasus.models.QACollator` builds them); with a tokenizer,
    question/answer records and plain texts are encoded here (:meth:`_read`). ``lora``: train
    only LoRA adapters (``True`` or a dict of :class:`~erasus.strategies.composite.LoRAConfig`
    fields, e.g. ``{"rank": 8, "merge": False}``) with ``strategy`` as the objective.
    Default strategy: ``npo`` (Zhang et al. 2024), the method with the best utility /
    forgetting trade-off in the TOFU and MUSE studies. Loss-based strategies run their
    fixed schedule on language models unless a ``monitor`` rule is requested.
    """

    def __init__(self, model: Union[nn.Module, str, os.PathLike], strategy: Union[str, Any] = "npo",
                 selector: Union[str, Any, None] = None, tokenizer: Any = None, device: Optional[str] = None,
                 strategy_kwargs: Optional[Dict[str, Any]] = None, selector_kwargs: Optional[Dict[str, Any]] = None,
                 lora: Union[bool, Dict[str, Any], None] = None, inplace: bool = False, **load_kwargs):
        from ..models.causal_lm import is_causal_lm

        if isinstance(model, (str, os.PathLike)):
            model, tokenizer = load_causal_lm(model, tokenizer, **load_kwargs)
            inplace = True  # we loaded it: nobody else holds this object
        if not is_causal_lm(model):
            raise UnsupportedModelError(
                f"LLMUnlearner expects a Hugging Face causal LM (…ForCausalLM / …LMHeadModel), got "
                f"{type(model).__name__}; use ErasusUnlearner for classifiers.")
        self.tokenizer = tokenizer
        self.lora, strategy, strategy_kwargs = through_lora(lora, strategy, strategy_kwargs)
        super().__init__(model, strategy=strategy, selector=selector, device=device,
                         strategy_kwargs=strategy_kwargs, selector_kwargs=selector_kwargs, inplace=inplace)
        self.forget_size_: Optional[int] = None

    def fit(self, forget_data, retain_data=None, holdout_data=None, **kwargs):
        res = super().fit(forget_data, retain_data, holdout_data, **kwargs)
        try:
            self.forget_size_ = len(getattr(forget_data, "dataset", forget_data))
        except TypeError:
            self.forget_size_ = None
        return res

    #: sequences per batch when the data are given as records or texts (build a loader with
    #: erasus.models.causal_lm.qa_loader for another size, or a token budget)
    records_batch_size = 16

    def _read(self, data, what: str, shuffle: bool = False):
        """Records and texts given as data become loaders here, encoded once with the unlearner's
        tokenizer (:func:`erasus.models.causal_lm.records_loader`): question/answer dicts (TOFU's
        records, a ``datasets.Dataset``) with the answers scored, plain texts with every token
        scored; loaders and data sets of batches pass through."""
        from ..models.causal_lm import context_length, records_loader

        loader = records_loader(data, self.tokenizer, context_length(self.original_model, self.tokenizer),
                                batch_size=self.records_batch_size, shuffle=shuffle, what=what)
        return loader if loader is not None else super()._read(data, what, shuffle)

    def evaluate(self, forget_data, retain_data=None, test_data=None, holdout_data=None, *legacy, gold_model=None,
                 metrics: Optional[Sequence[str]] = None, max_samples: Optional[int] = None) -> Dict[str, float]:
        """Default metrics for language models: membership AUCs (LOSS, zlib, Min-K%,
        Min-K%++; forget vs ``holdout_data``), exact memorisation and extraction strength,
        and MUSE's PrivLeak when ``gold_model`` is given (by keyword)."""
        (forget_data, retain_data, test_data, holdout_data), (gold_model, metrics, max_samples) = \
            self._evaluate_arguments(forget_data, retain_data, test_data, holdout_data, legacy,
                                     gold_model, metrics, max_samples)
        if metrics is None:
            metrics = (["lm_mia"] if holdout_data is not None or test_data is not None else []) + ["memorization"]
            if gold_model is not None and (holdout_data is not None or test_data is not None):
                metrics.append("privleak")
        return super().evaluate(forget_data, retain_data, test_data, holdout_data, gold_model=gold_model,
                                metrics=metrics, max_samples=max_samples)

    def merge_adapters(self):
        """For a ``peft.PeftModel`` (adapters trained, base frozen): fold the adapters into the
        base weights (``merge_and_unload``) and return the plain model, which becomes
        ``self.model``. A model without adapters is returned unchanged."""
        if hasattr(self.model, "merge_and_unload"):
            self.model = self.model.merge_and_unload()
            if self.result_ is not None:
                self.result_.model = self.model
        return self.model

    def model_card(self) -> str:
        """A Markdown model card: the method, its configuration, the forget request and the
        metrics measured so far."""
        r = self.result_
        if r is None:
            raise ConfigError("Nothing to describe yet: call fit() first.")
        cfg = getattr(self.strategy, "config", None)
        params = cfg.to_dict() if cfg is not None and hasattr(cfg, "to_dict") else {}
        lines = ["---", "tags: [erasus, machine-unlearning]", "---", "", "# Unlearned model", "",
                 f"Produced with Erasus {_version()} on {time.strftime('%Y-%m-%d')}.", "",
                 f"- method: `{r.strategy}`" + (f" (objective `{params.get('base')}` through LoRA adapters)"
                                                 if "base" in params and r.strategy == "lora_unlearning" else ""),
                 f"- forget set: {self.forget_size_ if self.forget_size_ is not None else 'unknown'} samples"
                 + (f" (coreset of {len(r.coreset)})" if r.coreset is not None else ""),
                 f"- steps: {r.steps}; stopped: {r.stop_reason}",
                 f"- time: {r.timings.get('total_s', r.timings.get('unlearn_s', 0.0)):.1f} s", "",
                 "## Strategy configuration", "", "```json", json.dumps(params, indent=1, default=str), "```", "",
                 "## Training", "", "```json", json.dumps(r.config.get("trainer"), indent=1, default=str), "```", ""]
        if r.metrics:
            lines += ["## Metrics", "", "| metric | value |", "|---|---|"]
            lines += [f"| {k} | {v:.4g} |" for k, v in sorted(r.metrics.items())]
        return "\n".join(lines) + "\n"

    @property
    def save_with(self) -> tuple:  # type: ignore[override]
        return (self.tokenizer,) if self.tokenizer is not None else ()

    def save_pretrained(self, path: Union[str, os.PathLike], overwrite: bool = False) -> Path:
        """Save the unlearned model (``save_pretrained``, safetensors), the tokenizer if known,
        and ``README.md`` (the model card) into ``path``, atomically
        (:func:`erasus.utils.io.replace_dir`): everything is written to a temporary folder
        beside it and moved into place at the end, and with ``overwrite=True`` the target
        holds the old or the new model at every moment. An existing non-empty ``path`` is
        never overwritten unless ``overwrite=True``."""
        if getattr(self.model, "erasus_hooks", None):
            raise ConfigError("This model's unlearning lives in forward hooks (an inference-time method such as "
                              "activation_steering); its weights are the original's, so save_pretrained would not "
                              "keep it. Keep the model object, or use a weight-editing strategy.")
        return super().save_pretrained(path, overwrite=overwrite)


def through_lora(lora, strategy, strategy_kwargs):
    """``(lora settings or None, strategy, strategy_kwargs)``: with ``lora`` (True or LoRA
    settings) the named strategy becomes the objective of ``lora_unlearning``."""
    lora = None if lora is None or lora is False else ({} if lora is True else dict(lora))
    if lora is None:
        return None, strategy, strategy_kwargs
    if not isinstance(strategy, str):
        raise ConfigError("lora=... needs the strategy by name (it becomes the adapters' objective).")
    return lora, "lora_unlearning", {**lora, "base": strategy, "base_kwargs": dict(strategy_kwargs or {})}


