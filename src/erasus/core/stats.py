"""Per-sample statistics of a model on a loader, shared by the trainer's stopping rules,
the metrics, the benchmark and the verifiers: one implementation of each measurement.

``split_stats`` gives per-sample loss, correctness and labels (and for classifiers the
logit margin LiRA uses, and optionally entropies); ``loss_auc`` is the loss-threshold
membership AUC.
"""
from __future__ import annotations

from typing import Dict

import numpy as np
import torch

from .exceptions import DataError


@torch.no_grad()
def split_stats(adapter, loader, with_entropy: bool = False) -> Dict[str, np.ndarray]:
    """Per-sample losses, correctness and labels of ``adapter``'s model on ``loader``
    (with ``with_entropy``, also the prediction entropy and modified entropy). For
    classifiers also ``phi``, the logit-scaled confidence ``z_y − logsumexp_{j≠y} z_j``
    computed in float64 from the logits: exact even where the float32 loss has rounded
    to 0 (confidently fitted training samples, the ones membership attacks care about).
    Batches an adapter scores as classification (:func:`classifies`: a classifier's, a CLIP
    model's labelled images over its class prompts) get the classifier's statistics."""
    model = adapter.model
    was = model.training
    model.eval()
    losses, correct, labels, entropy, m_entropy, phi = [], [], [], [], [], []
    classified = None
    try:
        for batch in loader:
            kind = classifies(adapter, batch)
            if classified is not None and kind != classified:
                raise DataError("Expected every batch of a loader to hold the same kind of data; this one mixes "
                                "labelled samples with others (e.g. labelled images and image-text pairs).")
            classified = kind
            if not kind:  # language models: loss and token accuracy per sample
                if hasattr(adapter, "loss_and_accuracy"):
                    loss, acc = adapter.loss_and_accuracy(batch)
                    correct.append(acc.cpu())
                else:
                    loss = adapter.per_sample_loss(batch)
                losses.append(loss.float().cpu())
                continue
            logits, y = adapter.logits_and_labels(batch)
            losses.append(adapter.per_sample_loss(batch, logits=logits).float().cpu())
            correct.append((logits.argmax(1) == y).cpu())
            labels.append(y.cpu())
            phi.append(logit_margin(logits, y).cpu())
            if with_entropy:
                e, me = _entropies(logits.float(), y)
                entropy.append(e.cpu())
                m_entropy.append(me.cpu())
    finally:
        model.train(was)
    cat = lambda xs: torch.cat(xs).numpy() if xs else np.zeros(0)
    if not (adapter.family == "classifier" if classified is None else classified):
        loss = cat(losses)
        acc = cat(correct).astype(np.float64) if correct else np.full(len(loss), np.nan)
        return {"loss": loss, "correct": acc, "label": np.zeros(len(loss), dtype=np.int64)}
    out = {"loss": cat(losses), "correct": cat(correct).astype(np.float64), "label": cat(labels), "phi": cat(phi)}
    if with_entropy:
        out["entropy"], out["m_entropy"] = cat(entropy), cat(m_entropy)
    return out


def classifies(adapter, batch) -> bool:
    """Whether ``adapter`` scores ``batch`` as classification, with logits and labels: every
    batch of a classifier, and those an adapter's ``classifies`` hook claims (CLIP: labelled
    images, zero-shot over its class prompts)."""
    hook = getattr(adapter, "classifies", None)
    return adapter.family == "classifier" or (hook is not None and bool(hook(batch)))


def logit_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``log p_y − log(1 − p_y) = z_y − logsumexp_{j≠y} z_j`` per sample, in float64."""
    z = logits.detach().double()
    onehot = torch.nn.functional.one_hot(y, z.shape[1]).bool()
    return z[onehot] - torch.logsumexp(z.masked_fill(onehot, float("-inf")), dim=1)


def _entropies(logits: torch.Tensor, y: torch.Tensor):
    """Prediction entropy and Song & Mittal's modified entropy
    ``-(1 - p_y) log p_y - Σ_{i≠y} p_i log(1 - p_i)`` per sample (both lower for members)."""
    logp = torch.log_softmax(logits, -1)
    p = logp.exp()
    entropy = -(p * logp).sum(1)
    log1m = torch.log1p(-p.clamp(max=1 - 1e-7))
    onehot = torch.nn.functional.one_hot(y, logits.shape[1]).bool()
    py, logpy = p[onehot], logp[onehot]
    m_entropy = -(1 - py) * logpy - (p * log1m).masked_fill(onehot, 0.0).sum(1)
    return entropy, m_entropy


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC AUC of scores ``pos`` (label 1) against ``neg`` (label 0), ties counted half: the
    Mann-Whitney statistic over ``len(pos) * len(neg)``, equal to scikit-learn's
    ``roc_auc_score`` (tested) without its input validation, which dominated bootstrap
    loops. NaN when either side is empty."""
    from scipy.stats import rankdata

    pos, neg = np.asarray(pos, dtype=np.float64).ravel(), np.asarray(neg, dtype=np.float64).ravel()
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    r = rankdata(np.r_[pos, neg])
    return float((r[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def loss_auc(member_losses: np.ndarray, nonmember_losses: np.ndarray) -> float:
    """AUC of the loss-threshold attack: P(member loss < non-member loss), ties half."""
    return auc(-np.asarray(member_losses, dtype=np.float64), -np.asarray(nonmember_losses, dtype=np.float64))


def best_threshold_accuracy(member_losses, nonmember_losses) -> float:
    """Balanced accuracy of the loss-threshold attack at its best threshold, either direction:
    ``0.5 + max_t |TPR(t) − FPR(t)| / 2`` over scikit-learn's ROC curve (the metric
    ``mia_accuracy``); NaN when either side is empty."""
    from sklearn.metrics import roc_curve

    m, n = np.asarray(member_losses, dtype=np.float64).ravel(), np.asarray(nonmember_losses, dtype=np.float64).ravel()
    if len(m) == 0 or len(n) == 0:
        return float("nan")
    fpr, tpr, _ = roc_curve(np.r_[np.ones(len(m)), np.zeros(len(n))], -np.r_[m, n])
    return float(0.5 + np.abs(tpr - fpr).max() / 2)
