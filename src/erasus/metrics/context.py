"""``EvalContext``: the model under test, its data splits, and cached per-sample statistics."""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch

from ..core.exceptions import DataError, UnsupportedModelError
from ..core.stats import split_stats
from ..utils.data import infer_forget_mode, subsample_loader

SPLITS = ("forget", "retain", "test", "holdout")


class EvalContext:
    """Holds an adapter, up to four loaders and optionally a gold (retrained) adapter.

    ``stats(split)`` returns per-sample ``loss``, ``correct``, ``label``, ``confidence``
    (the probability of the true label) and, for classifiers, ``entropy`` and ``m_entropy``,
    computed once per split and model. Each split is evaluated on at most ``max_samples``
    samples (a fixed-seed subsample).

    ``stats("nonmember")`` is the data membership attacks compare the forget set with:
    the held-out split (else the test split), restricted to the forgotten classes when the
    request forgets whole classes (``forget_mode``, inferred from the labels by default:
    :func:`erasus.utils.data.infer_forget_mode`). A model retrained without a class treats
    the forget samples like held-out samples *of that class*; compared with held-out samples
    of every class, even the retrained model would look like a member detector.

    ``resampled(idx)`` is a view whose statistics are those rows (``idx``: split name ->
    indices) of this context's, for bootstrapping metrics computed from statistics alone.
    """

    def __init__(self, adapter, forget=None, retain=None, test=None, holdout=None, gold=None,
                 max_samples: Optional[int] = None, forget_mode: str = "auto"):
        if "diffusion" in (getattr(adapter, "family", None), getattr(gold, "family", None)):
            raise UnsupportedModelError(
                "Per-sample losses and accuracies do not judge a text-to-image model (its loss is a noise prediction "
                "at a random timestep; its samples have no labels). Judge the erasure with DiffusionUnlearner.verify("
                "judge, label, others, gold_model=...) or erasus.metrics.diffusion.erasure_report(model, judge, "
                "concept, label, others, original=..., gold_model=...): erasure, retention and attacks, against a "
                "model retrained without the concept.")
        self.adapter = adapter
        self.gold = gold
        self.max_samples = max_samples
        self.forget_mode = forget_mode
        self.loaders = {}
        for i, (name, data) in enumerate(zip(SPLITS, (forget, retain, test, holdout))):
            if data is not None:
                self.loaders[name] = subsample_loader(data, max_samples, seed=100 + i)
        self._cache: Dict[tuple, Dict[str, np.ndarray]] = {}
        self._mode: Optional[tuple] = None
        self._idx: Optional[Dict[str, np.ndarray]] = None

    def has(self, split: str) -> bool:
        if split == "nonmember":
            return self.has("holdout") or self.has("test")
        return split in self.loaders

    def require(self, who: str, *splits: str) -> None:
        missing = [s for s in splits if not self.has(s)]
        if missing:
            names = [("holdout" if s == "nonmember" else s) for s in missing]
            raise DataError(f"{who} needs the {', '.join(names)} split(s); pass "
                            + ", ".join(f"{s}_loader" for s in names) + ".")

    def _cached(self, key: tuple, compute) -> Dict[str, np.ndarray]:
        """``compute(adapter, loader)`` for ``key = (split, gold, ...)``, once per key."""
        if key not in self._cache:
            split, gold = key[0], key[1]
            adapter = self.gold if gold else self.adapter
            if adapter is None:
                raise DataError("This metric needs a gold (retrained) model: pass gold_model=...")
            self.require("this metric", split)
            self._cache[key] = compute(adapter, self.loaders[split])
        return self._cache[key]

    # ------------------------------------------------------------------------------------
    def mode(self) -> tuple:
        """``(forget_mode, reason, forgotten classes)`` of this request."""
        if self._mode is None:
            labels = lambda s: self._raw_stats(s, False)["label"] if self.has(s) else None  # noqa: E731
            self.require("evaluation", "forget")
            f = labels("forget")
            ref = [x for x in (labels("holdout"), labels("test")) if x is not None]
            mode, why = infer_forget_mode(f, labels("retain"), np.concatenate(ref) if ref else None,
                                          self.forget_mode)
            self._mode = (mode, why, tuple(np.unique(f).tolist()) if mode == "class" else ())
        return self._mode

    def _raw_stats(self, split: str, gold: bool) -> Dict[str, np.ndarray]:
        def compute(adapter, loader):
            emb = self.embeddings(split, gold)
            if emb is not None:
                # statistics that depend on the whole split (CLIP pairs: a pair's own score, its
                # caption ranked among every split's captions), from each split embedded once
                others = [self.embeddings(k, gold) for k in self.loaders if k != split]
                s = adapter.stats_from_embeddings(emb, [e for e in others if e is not None])
            else:
                s = split_stats(adapter, loader, with_entropy=True)  # entropies where it classifies
            s["confidence"] = np.exp(-s["loss"])
            return s

        return self._cached((split, gold), compute)

    def embeddings(self, split: str, gold: bool = False):
        """The adapter's ``split_embeddings`` of ``split``, computed once (CLIP: the normalised
        image and text embeddings of every pair, and each caption's token ids); ``None`` for
        adapters without that hook and for labelled samples."""
        def compute(adapter, loader):
            hook = getattr(adapter, "split_embeddings", None)
            return None if hook is None else _in_eval(adapter, lambda: hook(loader))

        return self._cached((split, gold, "emb"), compute)

    def nonmember_rows(self) -> np.ndarray:
        """Rows of the held-out (else test) split that ``stats("nonmember")`` holds."""
        src = self.nonmember_split()
        labels = self._raw_stats(src, False)["label"]
        mode, _, classes = self.mode()
        if mode != "class":
            return np.arange(len(labels))
        rows = np.nonzero(np.isin(labels, classes))[0]
        if len(rows) == 0:
            raise DataError(f"Class forgetting: the {src} split holds no sample of the forgotten classes {classes}, so "
                            "membership cannot be judged against unseen samples of them. Pass held-out samples of "
                            "those classes (e.g. UnlearningDataset(..., holdout=...) with every class).")
        return rows

    def stats(self, split: str, gold: bool = False) -> Dict[str, np.ndarray]:
        if split == "nonmember":
            rows = self.nonmember_rows()
            full = self._raw_stats(self.nonmember_split(), gold)
            out = {k: v[rows] for k, v in full.items()}
        else:
            out = self._raw_stats(split, gold)
        if self._idx is not None and split in self._idx:
            out = {k: v[self._idx[split]] for k, v in out.items()}
        return out

    def lm_stats(self, split: str, gold: bool = False, k: float = 0.4) -> Dict[str, np.ndarray]:
        """Per-sample language-model statistics (:func:`erasus.metrics.llm.lm_token_stats`)."""
        from .llm import lm_token_stats

        src = self.nonmember_split() if split == "nonmember" else split
        out = self._cached((src, gold, "lm", k), lambda adapter, loader: lm_token_stats(adapter, loader, k=k))
        if self._idx is not None and split in self._idx:
            out = {key: v[self._idx[split]] for key, v in out.items()}
        return out

    def nonmember_split(self) -> str:
        """Held-out data for membership tests: ``holdout`` if given, else ``test``."""
        if self.has("holdout"):
            return "holdout"
        self.require("membership inference", "test")
        return "test"

    def sizes(self, splits) -> Dict[str, int]:
        """Sample counts of ``splits`` (``nonmember`` after the class restriction)."""
        return {s: len(self.nonmember_rows()) if s == "nonmember" else len(self._raw_stats(s, False)["loss"])
                for s in splits if self.has(s)}

    def resampled(self, idx: Dict[str, np.ndarray]) -> "EvalContext":
        """A view of this context whose statistics are the rows ``idx[split]`` (others whole)."""
        view = EvalContext.__new__(EvalContext)
        view.__dict__.update(self.__dict__)
        view._idx = {k: np.asarray(v) for k, v in idx.items()}
        return view

    def for_gold(self) -> "EvalContext":
        """The same splits, evaluated on the gold model (sharing the gold cache)."""
        ctx = EvalContext.__new__(EvalContext)
        ctx.__dict__.update(self.__dict__)
        ctx.adapter, ctx.gold = self.gold, None
        ctx._cache = {(k[0], False) + tuple(k[2:]): v for k, v in self._cache.items() if k[1]}
        ctx._mode = self.mode() if self.adapter is not None and self.has("forget") else None
        return ctx


@torch.no_grad()
def _in_eval(adapter, fn):
    model = adapter.model
    was = model.training
    model.eval()
    try:
        return fn()
    finally:
        model.train(was)


def context_of(model, **loaders) -> EvalContext:
    """An :class:`EvalContext` for a metric called on a model directly, as the specification's
    examples do (``MIAMetric().compute(model, forget_loader, test_loader)``): ``model`` is a
    model, an adapter or an :class:`~erasus.core.callbacks.UnlearningResult` (its model);
    ``loaders``: ``forget``, ``retain``, ``test``, ``holdout`` (``None`` ones are left out)."""
    from ..core.callbacks import UnlearningResult
    from ..models import wrap

    if isinstance(model, UnlearningResult):
        model = model.model
    return EvalContext(wrap(model), **loaders)
