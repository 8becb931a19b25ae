"""Zero-shot accuracy and image-text retrieval for CLIP-style models (``erasus.models.clip``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import torch

from ..core.base import BaseMetric
from ..core.config import BaseConfig
from ..core.exceptions import ConfigError, DataError
from ..core.registry import register
from ..utils.data import check_nonempty
from .context import EvalContext, context_of


@dataclass
class RetrievalConfig(BaseConfig):
    """``ks``: the recall cut-offs, default (1, 5, 10)."""

    ks: Tuple[int, ...] = (1, 5, 10)

    def validate(self) -> None:
        if not self.ks or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in self.ks):
            raise ConfigError(f"RetrievalConfig.ks: expected positive integers, got {self.ks!r}.")


@torch.no_grad()
def zero_shot_accuracy(adapter, loader) -> float:
    """Share of ``(pixel_values, labels)`` samples whose best-scoring class prompt is their label
    (the adapter's ``class_prompts``; Radford et al., ICML 2021, zero-shot transfer)."""
    hits = n = 0
    for batch in loader:
        logits, labels = adapter.logits_and_labels(batch)
        hits += int((logits.argmax(1) == labels).sum())
        n += len(labels)
    if not n:
        raise DataError("Expected labelled images for zero-shot accuracy, got an empty loader.")
    return hits / n


@torch.no_grad()
def retrieval_recall(adapter, loader, ks: Sequence[int] = (1, 5, 10), emb=None) -> Dict[str, float]:
    """Recall@k for image→text and text→image retrieval over every pair of ``loader`` (the
    specification's §6.2.2): for each image, whether one of its ``k`` most similar texts is its
    own caption (any text with the same token ids counts, as with COCO's five captions per
    image); likewise for each text. Keys ``"i2t@k"`` and ``"t2i@k"``. ``emb``: the loader's
    ``adapter.split_embeddings`` when already computed."""
    emb = adapter.split_embeddings(loader) if emb is None else emb
    if emb is None:
        raise DataError("Expected image-text pairs (pixel_values, input_ids) for retrieval.")
    img, txt, keys = emb
    index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    cap = torch.tensor([index[k] for k in keys], device=txt.device)
    sim = img @ txt.T
    same = cap[:, None] == cap[None, :]  # pair i's caption equals text j
    out = {}
    for k in ks:
        k_eff = min(k, sim.shape[1])
        top_t = sim.topk(k_eff, dim=1).indices  # texts for each image
        out[f"i2t@{k}"] = float(same.gather(1, top_t).any(1).float().mean())
        top_i = sim.T.topk(k_eff, dim=1).indices  # images for each text
        out[f"t2i@{k}"] = float(same.T.gather(1, top_i).any(1).float().mean())
    return out


@register("metric", "retrieval", aliases=("retrieval_recall",))
class RetrievalMetric(BaseMetric):
    """Image-text retrieval recall@k (:func:`retrieval_recall`, the specification's §6.2.2) of a
    CLIP-style model on each split of image-text pairs: ``forget_i2t@1``, ``retain_t2i@5``, ...
    On a model directly, as the specification's example calls it::

        RetrievalMetric().compute(unlearned_model, retain_loader)   # {"i2t@1": ..., "t2i@10": ...}

    (``unlearned_model``: a model, an adapter or an ``UnlearningResult``). Reference: the
    retrained model's values; on the retain and test pairs higher is better."""

    config_class = RetrievalConfig
    supports = ("clip",)
    higher_is_better = {f"{s}_{d}@{k}": (None if s == "forget" else True)
                        for s in ("forget", "retain", "test") for d in ("i2t", "t2i") for k in (1, 5, 10)}
    reference = {k: "gold" for k in higher_is_better}

    def compute(self, ctx, loader=None):
        ks = tuple(self.config.ks)
        if not isinstance(ctx, EvalContext):
            if loader is None:
                raise DataError("Expected RetrievalMetric().compute(model, loader of image-text pairs).")
            return retrieval_recall(context_of(ctx).adapter, check_nonempty(loader, "retrieval"), ks)
        return {f"{split}_{k}": v for split in ("forget", "retain", "test") if ctx.has(split)
                for k, v in retrieval_recall(ctx.adapter, ctx.loaders[split], ks, ctx.embeddings(split)).items()}


@torch.no_grad()
def image_features(adapter, loader):
    """``(features, labels)``: the vision tower's pooled output (before the projection into the
    joint space) for labelled images."""
    xs, ys = [], []
    for batch in loader:
        x, _, _, y = adapter.to_device(batch)
        if y is None:
            raise DataError("Expected labelled images (pixel_values, labels) for a probe.")
        xs.append(adapter.model.vision_model(pixel_values=x).pooler_output.float().cpu())
        ys.append(y.cpu())
    return torch.cat(xs).numpy(), torch.cat(ys).numpy()


def probe_accuracy(adapter, train_loader, test_loader, classes: Sequence[int] = (), C: float = 1.0, seed: int = 0):
    """A linear probe (scikit-learn logistic regression) fitted on the image features of
    ``train_loader`` and scored on ``test_loader``'s, restricted to ``classes`` when given:
    whether a class is still *in the features*. A projection that only hides a class from
    zero-shot scores leaves the probe as accurate as before; a model retrained without the
    class shows what features that never learned it give (Kornblith-style probing; the
    linear-evaluation protocol of Radford et al., ICML 2021)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    xtr, ytr = image_features(adapter, train_loader)
    xte, yte = image_features(adapter, test_loader)
    scaler = StandardScaler().fit(xtr)
    clf = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(scaler.transform(xtr), ytr)
    pred = clf.predict(scaler.transform(xte))
    keep = np.isin(yte, list(classes)) if len(classes) else np.ones_like(yte, dtype=bool)
    if not keep.any():
        raise DataError(f"No test sample of classes {list(classes)} for the probe.")
    return float((pred[keep] == yte[keep]).mean())
