"""TOFU's metrics (Maini et al., "TOFU: A Task of Fictitious Unlearning for LLMs", 2024),
computed from per-answer log-probabilities and generations, so they are independent of
the model library.

Inputs are *length-normalised* log-probabilities: ``avg_logp = (1/|a|) Σ_t log p(a_t | q,
a_<t)`` over the answer tokens of a question ``q``.

* probability: ``exp(avg_logp)`` of the answer (forget / retain splits), or, on the real
  authors and world facts splits (TOFU's ``aggregate_eval_stat.py``), the correct answer's
  normalised probability divided by the sum over it and its perturbed options.
* ROUGE-L recall of the generated answer against the reference (rouge-score, stemming).
* truth ratio ``R = exp(mean_j avg_logp(perturbed_j) − avg_logp(base))``: how much likelier
  wrong answers are than the base answer, a paraphrase of the right one on the forget and
  retain splits and the answer itself on real authors and world facts (TOFU's
  ``base_answer_key``). Reported as
  ``mean(min(R, 1/R))`` on the forget split and ``mean(max(0, 1 − R))`` elsewhere.
* forget quality: the p-value of the two-sample Kolmogorov-Smirnov test (scipy) between
  the unlearned model's and the retain-only (gold) model's truth ratios on the forget
  split: high means the two cannot be told apart.
* model utility: the harmonic mean of probability, ROUGE-L and truth-ratio statistic on
  the retain, real-authors and world-facts splits.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..core.exceptions import DataError


def rouge_l(predictions: Sequence[str], references: Sequence[str], kind: str = "recall",
            stem: bool = True) -> np.ndarray:
    """ROUGE-L per pair (rouge-score): ``kind`` ``"recall"`` (TOFU's evaluation),
    ``"fmeasure"`` (MUSE's) or ``"precision"``; ``stem``: Porter stemming (TOFU stems, MUSE
    does not)."""
    try:
        from rouge_score import rouge_scorer
    except ImportError as e:
        raise ImportError("ROUGE needs the rouge-score package: pip install 'erasus[llm]'.") from e
    if len(predictions) != len(references):
        raise DataError(f"Expected as many predictions as references, got {len(predictions)} and {len(references)}.")
    if kind not in ("recall", "fmeasure", "precision"):
        raise DataError(f"Expected kind 'recall', 'fmeasure' or 'precision', got {kind!r}.")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stem)
    return np.array([getattr(scorer.score(r, p)["rougeL"], kind) for p, r in zip(predictions, references)])


def rouge_l_recall(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """ROUGE-L recall per pair, as TOFU's evaluation."""
    return rouge_l(predictions, references, "recall")


def answer_probability(avg_logp: np.ndarray) -> np.ndarray:
    """Length-normalised answer probability ``exp(avg_logp)``."""
    return np.exp(np.asarray(avg_logp, dtype=np.float64))


def option_probability(correct_avg_logp: np.ndarray, perturbed_avg_logp: np.ndarray) -> np.ndarray:
    """Normalised probability of the correct answer among it and its perturbed options
    (``perturbed_avg_logp``: questions × options)."""
    c = np.asarray(correct_avg_logp, dtype=np.float64)[:, None]
    allp = np.concatenate([c, np.atleast_2d(np.asarray(perturbed_avg_logp, dtype=np.float64))], 1)
    p = np.exp(allp - allp.max(1, keepdims=True))
    return p[:, 0] / p.sum(1)


def truth_ratio(paraphrased_avg_logp: np.ndarray, perturbed_avg_logp: np.ndarray) -> np.ndarray:
    """``R`` per question (see the module docstring); ``perturbed_avg_logp``: questions × options."""
    para = np.asarray(paraphrased_avg_logp, dtype=np.float64)
    pert = np.atleast_2d(np.asarray(perturbed_avg_logp, dtype=np.float64))
    if pert.shape[0] != para.shape[0]:
        raise DataError(f"Expected one row of perturbed log-probs per question, got {pert.shape[0]} rows for "
                        f"{para.shape[0]} questions.")
    return np.exp(pert.mean(1) - para)


def truth_ratio_stat(R: np.ndarray, forget: bool) -> float:
    """TOFU's reported statistic: ``mean(min(R, 1/R))`` on the forget split, else
    ``mean(max(0, 1 − R))``."""
    R = np.asarray(R, dtype=np.float64)
    return float(np.mean(np.minimum(R, 1.0 / R)) if forget else np.mean(np.maximum(0.0, 1.0 - R)))


def forget_quality(unlearned_truth_ratios: np.ndarray, gold_truth_ratios: np.ndarray) -> float:
    """p-value of the two-sample KS test between the unlearned model's and the retain-only
    model's truth ratios on the forget split (higher is better; 1 = indistinguishable)."""
    from scipy.stats import ks_2samp

    a, b = np.asarray(unlearned_truth_ratios), np.asarray(gold_truth_ratios)
    if len(a) == 0 or len(b) == 0:
        raise DataError("forget_quality needs truth ratios from both models.")
    return float(ks_2samp(a, b).pvalue)


def model_utility(values: Sequence[float]) -> float:
    """Harmonic mean of the utility measurements (0 if any is 0, as TOFU)."""
    v = np.asarray(list(values), dtype=np.float64)
    if len(v) == 0 or (v < 0).any():
        raise DataError(f"Expected non-negative utility values, got {v.tolist()}.")
    return 0.0 if (v == 0).any() else float(len(v) / np.sum(1.0 / v))
