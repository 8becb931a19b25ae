"""``ErasusUnlearner``: select → unlearn → verify in two calls."""
from __future__ import annotations

import copy
import time
from typing import Any, Dict, Optional, Sequence, Union

import torch
from torch import nn

from ..core.coreset import Coreset
from ..core.registry import build
from ..core.callbacks import UnlearningResult
from ..utils.data import check_nonempty


def load_model(model_name):
    """``(model, wrapper)`` for ``ErasusUnlearner(model_name=...)``: a Hub name or a local folder,
    read by its ``config.json`` (transformers). A CLIP checkpoint loads as a
    :class:`~erasus.models.CLIPWrapper` (its processor and tokenizer read folders of captioned
    images: :meth:`ErasusUnlearner.read_folder`); other families have their own unlearner that loads by name, and the error names it."""
    from pathlib import Path

    from ..core.exceptions import ConfigError

    if (Path(model_name) / "model_index.json").is_file():
        raise ConfigError(f"{model_name} is a diffusers pipeline: erase concepts with "
                          f"DiffusionUnlearner({str(model_name)!r}), which loads it.")
    try:
        from transformers import AutoConfig
    except ImportError as e:
        raise ConfigError("Loading a model by name needs transformers: pip install 'erasus[llm]'.") from e
    try:
        config = AutoConfig.from_pretrained(model_name)
    except (OSError, ValueError) as err:
        raise ConfigError(f"Could not read a model config at {model_name!r} (a local folder with config.json, or a "
                          f"Hugging Face Hub name): {err}") from err
    if config.model_type == "clip":
        from ..models import CLIPWrapper

        wrapper = CLIPWrapper(model_name)
        return wrapper.model, wrapper
    archs = list(getattr(config, "architectures", None) or [])
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        raise ConfigError(f"{model_name} is a causal language model: LLMUnlearner({str(model_name)!r}) loads it with "
                          "its tokenizer and unlearns question-answer data.")
    raise ConfigError(f"ErasusUnlearner(model_name=...) loads CLIP checkpoints; {model_name} is a "
                      f"{config.model_type!r} model ({', '.join(archs) or 'no architecture named'}). Load it yourself "
                      "and pass ErasusUnlearner(model), or use the family's unlearner (LLMUnlearner, DiffusionUnlearner, "
                      "AudioUnlearner; MultimodalUnlearner.from_model(model) picks one).")


def _already_on(model: nn.Module, device: torch.device) -> bool:
    """Whether the model's parameters are on ``device`` (``cuda`` without an index: any GPU)."""
    p = next(iter(model.parameters()), None)
    return p is None or (p.device.type == device.type and device.index in (None, p.device.index))


class ErasusUnlearner:
    """High-level API for any model an adapter supports.

    >>> unlearner = ErasusUnlearner(model, strategy="negative_gradient", selector="gradient_norm")
    >>> result = unlearner.fit(forget_loader, retain_loader, holdout_data=test_loader, prune_ratio=0.5)
    >>> unlearner.evaluate(forget_loader, retain_loader, test_data=test_loader)["mia_auc"]

    ``strategy``/``selector``: registered names (``erasus.list_registered("strategy")``)
    or instances; ``selector=None`` unlearns the whole forget set. The default strategy,
    WGA (weighted gradient ascent, Wang et al., ICLR 2025), is the one measured best at its
    defaults on every classification protocol we run, with held-out data and without
    (``benchmarks/results/classification.md``, ``demo.md``, ``bare_calls.md``; the README's
    "Default strategy" says by how much); NegGrad+ was the default before. The caller's model is
    never modified unless ``inplace=True``; the unlearned model is ``result.model`` (and
    ``unlearner.model``). ``device``: where the run happens; the caller's model stays where it is
    and a copy on that device is the original the run starts from and the checks compare with
    (``inplace=True`` moves the caller's model instead and changes it).

    ``model_name``: a Hub name or local folder to load instead of ``model`` (the specification's
    ``ErasusUnlearner(model_name="openai/clip-vit-base-patch32", ...)``; CLIP checkpoints, see
    :func:`load_model`). A model loaded so reads folder paths given as data: ``fit(forget_data=
    "nsfw_images/", ...)`` takes the folder's captioned images
    (:func:`erasus.data.folders.captioned_images`: ``metadata.jsonl`` with ``file_name`` and
    ``text``, or one folder per concept). For CLIP pairs ``*_accuracy`` is the share of images
    whose own caption ranks first among the captions of every split evaluated together.
    """

    def __init__(self, model: Optional[nn.Module] = None, strategy: Union[str, Any] = "wga",
                 selector: Union[str, Any, None] = None, device: Optional[str] = None,
                 strategy_kwargs: Optional[Dict[str, Any]] = None, selector_kwargs: Optional[Dict[str, Any]] = None,
                 inplace: bool = False, *, model_name: Optional[str] = None):
        from ..models import wrap

        self.loaded_ = None
        if model_name is not None:
            if model is not None:
                raise TypeError("Pass a model or a model_name to load, not both.")
            model, self.loaded_ = load_model(model_name)
        elif model is None:
            raise TypeError("Expected a model: ErasusUnlearner(model, ...) or ErasusUnlearner(model_name=<Hub name or "
                            "folder>).")
        if not isinstance(model, nn.Module):
            raise TypeError(f"Expected a torch.nn.Module, got {type(model).__name__}.")
        if device is not None:
            from ..utils.misc import resolve_device

            device = resolve_device(device)
            if inplace:
                model.to(device)
            elif not _already_on(model, device):
                # an untouched copy on the device: the run changes a copy of it in turn, so that the
                # checks and verify() compare with the original and a second fit() starts from it
                model = copy.deepcopy(model).to(device)
        self.original_model = model
        self.model = model
        self.adapter = wrap(model)
        self.strategy = build("strategy", strategy, **(strategy_kwargs or {}))
        self.selector = build("selector", selector, **(selector_kwargs or {})) if selector is not None else None
        self.inplace = inplace
        self.result_: Optional[UnlearningResult] = None
        self.holdout_data_ = None

    def fit(self, forget_data, retain_data=None, holdout_data=None, *, coreset: Optional[Coreset] = None,
            prune_ratio: Optional[float] = None, k: Optional[int] = None, epochs: Optional[float] = None,
            inplace: Optional[bool] = None, **trainer_kwargs) -> UnlearningResult:
        """Unlearn ``forget_data`` (optionally a coreset of it) and return the result.

        ``holdout_data``: data the model never trained on; enables calibrated stopping
        for loss-based strategies. ``coreset``: a precomputed :class:`Coreset` of
        ``forget_data``'s dataset; otherwise the selector (if any) picks ``k`` samples or
        a ``prune_ratio`` fraction. Other keyword arguments go to the trainer
        (``validate_every``, ``early_stopping_patience``, ``lr``, ``progress``, ...).
        With a coreset, the strategy trains on the coreset while validation and the stopping
        rule watch the whole ``forget_data`` (``forget_eval_loader``).
        """
        from ..data.unlearning_dataset import check_disjoint

        forget_data, retain_data, holdout_data = (self._read(d, what, shuffle=what != "holdout") for d, what in
                                                  ((forget_data, "forget"), (retain_data, "retain"),
                                                   (holdout_data, "holdout")))
        forget_loader = check_nonempty(forget_data, "forget")
        retain_loader = check_nonempty(retain_data, "retain") if retain_data is not None else None
        if retain_loader is not None:
            check_disjoint(forget_loader.dataset, retain_loader.dataset)
        t0 = time.perf_counter()
        select_s = 0.0
        if coreset is None and self.selector is not None:
            coreset = self.selector.select(self.adapter, forget_loader, k=k, prune_ratio=prune_ratio)
            select_s = time.perf_counter() - t0
        elif coreset is None and (k is not None or prune_ratio not in (None, 1.0)):
            raise ValueError("Expected a selector for k/prune_ratio: ErasusUnlearner(..., selector='random') "
                             "or pass coreset=...")
        self.holdout_data_ = holdout_data
        train_loader = forget_loader
        if coreset is not None:
            train_loader = coreset.to_loader(forget_loader)
            # the stopping rule watches the whole request: a coreset of hard (high-loss) samples
            # already looks unseen and would stop the run before the rest is forgotten
            trainer_kwargs.setdefault("forget_eval_loader", forget_loader)
        if epochs is not None:
            trainer_kwargs["epochs"] = epochs
        inplace = self.inplace if inplace is None else inplace
        # the unlearner's adapter carries settings the bare model lacks (a CLIP model's class prompts)
        result = self.strategy.unlearn(self.adapter.adapter_for(self.original_model), train_loader, retain_loader,
                                       holdout_data, inplace=inplace, **trainer_kwargs)
        result.coreset = coreset
        result.timings["select_s"] = select_s
        result.timings["total_s"] = time.perf_counter() - t0
        self.model = result.model
        self.result_ = result
        return result

    def read_folder(self, folder, what: str = "forget"):
        """The data set of a folder path given as data: the captioned images in it
        (:func:`erasus.data.folders.captioned_images`) through the processor and tokenizer of the
        CLIP checkpoint loaded with ``model_name``, as ``(pixel_values, input_ids)`` pairs."""
        from ..core.exceptions import DataError
        from ..data.folders import captioned_pairs

        if self.loaded_ is None:
            raise DataError(f"Got a path for the {what} data ({folder}): folders are read for CLIP models loaded with "
                            "ErasusUnlearner(model_name=...), whose processor and tokenizer turn captioned images "
                            "into pairs. For this model pass a DataLoader or a Dataset.")
        w = self.loaded_
        return captioned_pairs(folder, w.tokenizer, w.processor if w.processor is not None else w.image_processor)

    def _read(self, data, what: str, shuffle: bool = False):
        """``data``, or for a folder path :meth:`read_folder`'s pairs in a loader of 32 (shuffled
        with a fixed seed for training: contrastive batches of one concept would hold no other
        caption)."""
        import os

        if not isinstance(data, (str, os.PathLike)):
            return data
        from torch.utils.data import DataLoader

        return DataLoader(self.read_folder(data, what), batch_size=32, shuffle=shuffle,
                          generator=torch.Generator().manual_seed(0) if shuffle else None)

    def _evaluate_arguments(self, forget_data, retain_data, test_data, holdout_data, legacy, gold_model, metrics,
                            max_samples):
        """``evaluate``'s data (a ``Split`` unpacked; ``holdout_data`` defaults to ``fit``'s) and its
        keyword options (given by position in older releases), checked once for every family."""
        from ..data.splits import legacy_positional, unpack

        data = unpack(*(self._read(d, what) for d, what in ((forget_data, "forget"), (retain_data, "retain"),
                                                          (test_data, "test"), (holdout_data, "holdout"))), "evaluate")
        kw = legacy_positional("evaluate", legacy, ["gold_model", "metrics", "max_samples"],
                               {"gold_model": gold_model, "metrics": metrics, "max_samples": max_samples})
        if data[3] is None:
            data = (*data[:3], self.holdout_data_)
        return data, (kw["gold_model"], kw["metrics"], kw["max_samples"])

    def evaluate(self, forget_data, retain_data=None, test_data=None, holdout_data=None, *legacy, gold_model=None,
                 metrics: Optional[Sequence[str]] = None, max_samples: Optional[int] = None):
        """Measure the current model; returns a dict of values (a
        :class:`~erasus.metrics.suite.MetricResults`). Default metrics: accuracy, and the loss
        attack's AUC and best-threshold accuracy (``mia_auc``, ``mia_accuracy``: forget vs
        ``holdout_data`` — by default the held-out data given to ``fit`` — else ``test_data``);
        with ``test_data`` also ``mia_efficacy``; with ``gold_model``
        also the average gap to it. What cannot be measured with the data given is not made
        up: it is left out, a warning says so, and ``result.missing`` (and looking it up)
        gives the reason. Runs with its own random state."""
        import warnings

        from ..metrics import MetricSuite
        from ..metrics.suite import MetricResults
        from ..utils.misc import isolated_rng

        (forget_data, retain_data, test_data, holdout_data), (gold_model, metrics, max_samples) = \
            self._evaluate_arguments(forget_data, retain_data, test_data, holdout_data, legacy,
                                     gold_model, metrics, max_samples)
        missing: Dict[str, str] = {}
        nonmember = holdout_data is not None or test_data is not None
        if metrics is None:
            metrics = ["accuracy"]
            if nonmember:
                metrics += ["mia", "mia_accuracy"]
            else:
                missing["mia_auc"] = missing["mia_accuracy"] = (
                    "no holdout_data or test_data: membership inference compares the forget set with data the model "
                    "never trained on; pass holdout_data=...")
            if test_data is not None and retain_data is not None:
                metrics.append("mia_efficacy")
                if gold_model is not None:
                    metrics.append("gold_gap")
            else:
                missing["mia_efficacy"] = "needs retain_data and test_data (SalUn's SVC is fitted on both)"
            if missing:
                by_reason: Dict[str, list] = {}
                for k, v in missing.items():
                    by_reason.setdefault(v, []).append(k)
                warnings.warn("evaluate(): " + "; ".join(f"{' and '.join(ks)} not measured: {v}"
                                                         for v, ks in by_reason.items()))
        with isolated_rng(0):
            out = MetricSuite(metrics, max_samples=max_samples).run(
                self.model, forget_data, retain_data, test_data, holdout_data, gold_model=gold_model)
        out = MetricResults(out, missing=missing)
        if self.result_ is not None:
            self.result_.metrics.update(out)
        return out
