"""Judged concept erasure for text-to-image models: erasure, retention, attacks, against the
original and the retrained model.

A judge (any callable from images in ``[-1, 1]`` to class logits: a classifier trained on
real images, a CLIP zero-shot head, a detector) says which concept a generated image shows.

* erasure: the share of images generated for the erased concept's prompt that the judge
  does **not** assign to it (the "unlearning accuracy" of ESD, UCE and SalUn's evaluations);
* retention: the share of images generated for each other concept that the judge assigns
  to that concept (their "preservation" accuracy);
* the same erasure after each attack of :mod:`erasus.models.diffusion_attacks`.

:func:`erasure_report` measures all of it for the erased model and, with the same seeds and
attack images, for the original model (the concept present: erasure ≈ 0) and the model
retrained without the concept (the gold standard). A method *survives* an attack when its
erasure after the attack is within ``tolerance`` of the retrained model's; it is *broken*
when the attack brings the concept back further than it does from a model that never saw it.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import torch

from ..core.exceptions import ConfigError, DataError
from ..models.diffusion import (SELF_JUDGE_DISTINCT, SELF_JUDGE_KEPT, SelfJudge, TextToImage, conditioning_direction,
                               drawn_and_noised, image_features, share_left)
from ..models.diffusion_attacks import concept_inversion, judge_labels, prompt_attack, relearning_attack
from ..utils.misc import isolated_rng

ATTACKS = ("prompt_attack", "concept_inversion", "relearning")
#: above this ``concept_left``, ``DiffusionUnlearner.erase`` warns that the concept is probably still there
CONCEPT_LEFT_WARN = 0.5
#: :func:`self_judged` compares a prompt only where at least this share of the original's own
#: images of it land on it (below, the original's images of it are not told apart from the others')
DISTINCT = SELF_JUDGE_DISTINCT
#: ``DiffusionUnlearner.erase`` warns that the concept is probably still drawn when the share of its
#: images self-judged as the original's images of it is at least this fraction of the original's
DRAWN_WARN = 0.5
#: ... and that a preserved prompt was damaged when its share fell below this fraction of the original's
KEPT_WARN = SELF_JUDGE_KEPT


@torch.no_grad()
def judged_share(model: TextToImage, judge: Callable, prompt: str, label: int, n: int = 32, seed: int = 0,
                 guidance_scale: float = 5.0, steps: int = 25, batch: int = 100) -> float:
    """Share of ``n`` images generated for ``prompt`` (seeded) that the judge assigns to ``label``."""
    hits = 0
    for start in range(0, n, batch):
        k = min(batch, n - start)
        imgs = model.generate([prompt] * k, seed=seed * 100003 + start, guidance_scale=guidance_scale, steps=steps)
        hits += int((judge_labels(judge, imgs) == label).sum())
    return hits / n


@torch.no_grad()
def concept_left(model: TextToImage, original: TextToImage, concept: str, anchor: str = "", n: int = 16,
                 steps: int = 20, seed: int = 0) -> float:
    """How much of the concept's conditioning the model keeps, without a judge: the share of the
    original's concept direction ``d* = ε*(x_t, c, t) − ε*(x_t, a, t)`` (concept ``c`` against
    ``anchor`` ``a``) left in the model's own ``d = ε_θ(x_t, c, t) − ε_θ(x_t, a, t)``,

        concept_left = Σ ⟨d, d*⟩ / Σ ‖d*‖²

    over ``n`` images of the concept drawn by the original (``steps`` sampling steps), noised at
    timesteps drawn uniformly from the schedule (the same draws, from ``seed``, for every model).
    1: the prompt conditions the model as before (an unchanged model gives exactly 1); 0: the
    prompt acts as the anchor; below 0: the model is guided away from the concept (ESD's target
    gives −η). An Erasus check, not a metric from the literature: it says whether a run moved
    the weights that carry the concept at all (the papers' step sizes are for Stable Diffusion
    and may leave a smaller model unchanged); whether the concept is gone from the images is the
    judge's call (:func:`erasure_report`). Inference-time methods (SLD) change no weights and
    keep 1."""
    with isolated_rng(seed):
        x_t, t, ps = drawn_and_noised(original, [concept], n, steps, torch.Generator().manual_seed(seed))
    ref = conditioning_direction(original, x_t, t, ps, anchor)
    return share_left(conditioning_direction(model, x_t, t, ps, anchor), ref, concept, anchor)


@torch.no_grad()
def self_judged(model: TextToImage, original: TextToImage, prompts: Sequence[str], n: int = 16,
                reference: int = 32, seed: int = 0, guidance_scale: float = 5.0, steps: int = 25,
                features: Optional[Callable] = None, unscored: Sequence[str] = ()) -> Dict[str, Dict[str, float]]:
    """Which prompt's images each prompt's images still look like, judged by the original's own
    generations when no judge is at hand: ``{prompt: {"original": share, "model": share}}``.

    The original draws ``reference`` images of every prompt and of each ``unscored`` one (e.g. the
    anchor an erased concept is mapped to, "" for the unconditional images: without it, images
    that show none of ``prompts`` land on whichever is nearest; seed ``seed``); each of ``n``
    images drawn for a prompt (seed ``seed + 1``, the same noise for both models, all prompts in
    one batch) is assigned to
    the prompt of its nearest reference image (Euclidean, on ``features(images)`` or the pixels).
    ``share`` is how many land on their own prompt: the original's is the baseline (an unchanged
    model gives exactly the same), a preserved prompt whose share fell far below it now draws
    something else, and an erased concept whose share stayed near it is probably still drawn.

    A nearest-neighbour version of the comparison ESD (Gandikota et al., ICCV 2023, §5.1) and UCE
    (Gandikota et al., WACV 2024, §5) make for the concepts an edit must keep: their LPIPS
    between the original's and the edited model's images from the same seeds. That pairing
    flags an edit that keeps a concept in another of its modes (on 8×8 grayscale stripes UCE kept
    vertical stripes, judged 0.78 → 0.81, at a paired pixel shift of 1.7 of the images' spread,
    as large as destroyed ones give), which a nearest neighbour among all of the original's
    modes does not. In pixel space it is a crude judge for large images; pass ``features``
    (e.g. a CLIP image encoder) there. :func:`erasure_report` with a real judge is the evidence."""
    judge = SelfJudge(original, prompts, n, reference, seed, guidance_scale, steps, features, unscored)
    return {p: {"original": o, "model": s} for (p, o), s in zip(judge.baseline.items(), judge.shares(model).values())}


@dataclass
class ErasureReport:
    """Rows ``{"unlearned" | "original" | "retrained": {"erasure", "retention", "per_concept",
    <attack>: erasure after it}}``, a verdict per attack (``"survives"``, ``"broken"`` or
    ``"not compared"``), the overall ``verdict`` (PASS, FAIL or INCONCLUSIVE) and the reasons."""

    concept: str
    rows: Dict[str, Dict[str, object]]
    attacks: Dict[str, str]
    verdict: str
    reasons: List[str] = field(default_factory=list)
    found: Dict[str, List[str]] = field(default_factory=dict)

    def to_markdown(self) -> str:
        names = [a for a in ATTACKS if any(a in r for r in self.rows.values())]
        head = "| model | erasure (%) | retention (%) | " + " | ".join(f"after {a} (%)" for a in names) + " |"
        lines = [f"Erasure of {self.concept!r}: **{self.verdict}**", "", head,
                 "|" + "---|" * (3 + len(names))]
        for who, r in self.rows.items():
            cells = [f"{100 * r[a]:.1f}" if a in r else "-" for a in names]
            lines.append(f"| {who} | {100 * r['erasure']:.1f} | {100 * r['retention']:.1f} | " + " | ".join(cells) + " |")
        lines += [""] + [f"- {a}: {v}" for a, v in self.attacks.items()] + [f"- {x}" for x in self.reasons]
        return "\n".join(lines) + "\n"


def _measure(model, judge, concept, label, others, n, seed, guidance, steps):
    per = {p: judged_share(model, judge, p, c, n, seed + i + 1, guidance, steps) for i, (p, c) in enumerate(others.items())}
    return {"erasure": 1 - judged_share(model, judge, concept, label, n, seed, guidance, steps),
            "retention": sum(per.values()) / len(per) if per else float("nan"), "per_concept": per}


def _attack(name, model, judge, concept, label, images, n, seed, guidance, steps, kw):
    common = dict(guidance_scale=guidance, sample_steps=steps, seed=seed)
    if name == "prompt_attack":
        k = kw.pop("n_targets", 8)
        return prompt_attack(model, judge, concept, label, images[:k], **common, **kw)
    if name == "concept_inversion":
        return concept_inversion(model, judge, label, images, n_images=n, **common, **kw)
    return relearning_attack(model, judge, concept, label, images, n_images=n, **common, **kw)


def erasure_report(model: TextToImage, judge: Callable, concept: str, label: int, others: Mapping[str, int],
                   *, original: Optional[TextToImage] = None, gold_model: Optional[TextToImage] = None,
                   attack_images: Optional[torch.Tensor] = None, attacks: Sequence[str] = ATTACKS,
                   attack_kwargs: Optional[Mapping[str, dict]] = None, n_images: int = 32,
                   guidance_scale: float = 5.0, steps: int = 25, seed: int = 0, tolerance: float = 0.1,
                   retention_drop: float = 0.05, progress: bool = False) -> ErasureReport:
    """Erasure, retention and the erasure left after each attack, for ``model`` and, measured
    the same way, the ``original`` and the retrained ``gold_model`` (both optional).

    ``concept``/``label``: the erased concept's prompt and the judge's class for it;
    ``others``: ``{prompt: judge class}`` of concepts that must survive. ``attack_images``:
    images of the concept for the attacks (real ones, or by default ``n_images`` generated by
    ``original``; with neither, the attacks cannot run and the report says so).
    ``attack_kwargs``: per-attack settings (``{"relearning": {"steps": 100}}``).

    Verdict: PASS when the erasure is within ``tolerance`` of the retrained model's (or ≥ 1 −
    ``tolerance`` without one), retention within ``retention_drop`` of the original's, and no
    attack broken; FAIL when one of these fails; INCONCLUSIVE when there is no retrained model
    to compare the attacks with (an attack's result alone cannot tell a hidden concept from
    one relearned from scratch). Runs under its own random state (the caller's is restored)."""
    if not isinstance(others, Mapping) or not others:
        raise DataError("Expected others as a non-empty {prompt: judge class} mapping of concepts to keep.")
    if concept in others:
        raise DataError(f"The erased concept {concept!r} is also among the concepts to keep.")
    unknown = sorted(set(attacks) - set(ATTACKS))
    if unknown:
        raise ConfigError(f"Unknown attack(s) {unknown}; expected some of {list(ATTACKS)}.")
    if not 0 <= tolerance < 1 or n_images < 1:
        raise ConfigError(f"Expected tolerance in [0, 1) and n_images >= 1, got {tolerance!r}, {n_images!r}.")
    models = {"unlearned": model, "original": original, "retrained": gold_model}
    models = {k: m for k, m in models.items() if m is not None}
    from tqdm.auto import tqdm

    with isolated_rng(seed):
        if attack_images is None and original is not None and attacks:
            attack_images = original.generate([concept] * n_images, seed=seed + 7919, guidance_scale=guidance_scale,
                                              steps=steps)
        rows, found, reasons = {}, {}, []
        bar = tqdm(total=len(models) * (1 + (len(attacks) if attack_images is not None else 0)), desc="erasure report",
                   disable=not progress, leave=False)
        for who, m in models.items():
            rows[who] = _measure(m, judge, concept, label, others, n_images, seed, guidance_scale, steps)
            bar.update(1)
            if attack_images is None:
                continue
            for a in attacks:
                res = _attack(a, m, judge, concept, label, attack_images, n_images, seed, guidance_scale, steps,
                              dict((attack_kwargs or {}).get(a, {})))
                rows[who][a] = res.erasure
                found.setdefault(who, []).extend(res.found[:3])
                bar.update(1)
        bar.close()
    if attacks and attack_images is None:
        reasons.append("no attack ran: pass attack_images (images of the concept) or the original model")
    return _judge(concept, rows, attacks if attack_images is not None else (), tolerance, retention_drop, reasons, found)


def _judge(concept, rows, attacks, tolerance, retention_drop, reasons, found) -> ErasureReport:
    me, gold, orig = rows["unlearned"], rows.get("retrained"), rows.get("original")
    verdicts, fail = {}, False
    target = gold["erasure"] - tolerance if gold else 1 - tolerance
    if me["erasure"] < target:
        fail = True
        reasons.append(f"erasure {me['erasure']:.2f} below {target:.2f} "
                       f"({'the retrained model' if gold else 'no retrained model'}: {gold['erasure'] if gold else 1:.2f} − "
                       f"tolerance {tolerance})")
    if orig is not None and me["retention"] < orig["retention"] - retention_drop:
        fail = True
        reasons.append(f"retention {me['retention']:.2f} more than {retention_drop} below the original's "
                       f"{orig['retention']:.2f}")
    for a in attacks:
        if gold is None:
            verdicts[a] = f"erasure {me[a]:.2f} after the attack; not compared (no retrained model)"
        elif me[a] < gold[a] - tolerance:
            verdicts[a] = f"broken: erasure {me[a]:.2f} after the attack vs the retrained model's {gold[a]:.2f}"
            fail = True
        else:
            verdicts[a] = f"survives: erasure {me[a]:.2f} after the attack vs the retrained model's {gold[a]:.2f}"
    if fail:
        verdict = "FAIL"
    elif gold is None and attacks:
        verdict = "INCONCLUSIVE"
        reasons.append("without a retrained model the attacks cannot tell a hidden concept from one relearned "
                       "from scratch: pass gold_model")
    else:
        verdict = "PASS"
    return ErasureReport(concept, rows, verdicts, verdict, reasons, found)


class _Precomputed(torch.nn.Module):
    """torchmetrics' feature-extractor slot for features the caller computed."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, x):
        return x


def _torchmetrics_image():
    try:
        from torchmetrics.image import fid, kid
    except ImportError as e:  # pragma: no cover - an install without the extra
        raise ConfigError("FID and KID need torchmetrics: pip install 'erasus[diffusion]'.") from e
    return fid, kid


def kid(real: torch.Tensor, fake: torch.Tensor, features: Optional[Callable] = None, subset_size: int = 50,
        subsets: int = 100, seed: int = 0):
    """Kernel Inception Distance (Bińkowski et al., ICLR 2018) through torchmetrics: the unbiased
    MMD² with a cubic polynomial kernel between the features of ``real`` and ``fake``, averaged
    over ``subsets`` random subsets of ``subset_size``; returns ``(mean, std)``. ``features``: the
    extractor (images → features; Inception's pool features where a user has them, a judge's
    penultimate layer otherwise); without it ``real`` and ``fake`` are features already.
    ``seed``: the subsets' draw (torchmetrics draws them from torch's global generator; here it
    is seeded and the caller's generator state restored, so the same inputs give the same KID)."""
    _, kid_mod = _torchmetrics_image()
    r, f = image_features(real, features), image_features(fake, features)
    n = min(len(r), len(f))
    if n < 2:
        raise DataError(f"KID needs at least 2 samples on each side, got {len(r)} and {len(f)}.")
    with warnings.catch_warnings():  # its note that it keeps every feature in memory
        warnings.simplefilter("ignore", UserWarning)
        m = kid_mod.KernelInceptionDistance(feature=_Precomputed(r.shape[1]), subsets=subsets,
                                            subset_size=min(subset_size, n))
    m.update(r, real=True)
    m.update(f, real=False)
    with isolated_rng(seed):
        mean, std = m.compute()
    return float(mean), float(std)


def fid(real: torch.Tensor, fake: torch.Tensor, features: Optional[Callable] = None) -> float:
    """Fréchet Inception Distance (Heusel et al., NeurIPS 2017) through torchmetrics between the
    features of ``real`` and ``fake`` (``features`` as in :func:`kid`). Biased for small
    samples: compare models at the same sample size."""
    fid_mod, _ = _torchmetrics_image()
    r, f = image_features(real, features), image_features(fake, features)
    if min(len(r), len(f)) < 2:
        raise DataError(f"FID needs at least 2 samples on each side, got {len(r)} and {len(f)}.")
    m = fid_mod.FrechetInceptionDistance(feature=_Precomputed(r.shape[1]))
    m.update(r, real=True)
    m.update(f, real=False)
    return float(m.compute())
