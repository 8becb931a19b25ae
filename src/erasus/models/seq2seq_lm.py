"""Encoder-decoder (``AutoModelForSeq2SeqLM``: T5, BART, ...) and masked language models
(``AutoModelForMaskedLM``: BERT, RoBERTa, ...).

Both score target tokens given by ``labels`` (``-100`` where a position is not scored), as
Hugging Face trains them: a seq2seq batch is ``input_ids`` / ``attention_mask`` for the
encoder and ``labels`` for the decoder (the model shifts them into its decoder inputs);
a masked-LM batch has ``labels`` only at the masked positions. ``per_sample_loss`` is
the mean NLL of a sample's scored tokens and ``sequence_nll`` their sum, so every
likelihood-based strategy (gradient ascent, NegGrad+, NPO, SimNPO, WGA, ...) and the
loss-based metrics apply unchanged. :class:`Seq2SeqCollator` builds seq2seq batches
from question/answer records; :class:`MaskingCollator` masks answer tokens for a masked LM.
"""
from __future__ import annotations

from collections.abc import Mapping

import random
from typing import Any, Dict, List, Optional

import torch

from ..exceptions import DataError
from .causal_lm import IGNORE, TokenLMAdapter, hf_lm_kind, pad_rows


def is_seq2seq_lm(model) -> bool:
    """A Hugging Face encoder-decoder LM (or a PEFT wrapper of one)."""
    return hf_lm_kind(model) == "seq2seq_lm"


def is_masked_lm(model) -> bool:
    """A Hugging Face masked LM (``*ForMaskedLM``, or a PEFT wrapper of one)."""
    return hf_lm_kind(model) == "masked_lm"


class Seq2SeqLMAdapter(TokenLMAdapter):
    """Encoder-decoder LMs: the decoder's NLL of the target (``labels``) given the source."""

    family = "seq2seq_lm"
    collator = "erasus.models.Seq2SeqCollator"

    def _forward(self, b):
        return self.model(input_ids=b["input_ids"], attention_mask=b.get("attention_mask"), labels=b["labels"])

    @torch.no_grad()
    def features(self, batch: Any) -> torch.Tensor:
        """Mean of the encoder's last hidden state over the attended source tokens."""
        b = self.to_device(batch)
        enc = self.model.get_encoder()(input_ids=b["input_ids"], attention_mask=b.get("attention_mask"))
        h = enc.last_hidden_state.float()
        m = b.get("attention_mask", torch.ones_like(b["input_ids"])).unsqueeze(-1).float()
        return (h * m).sum(1) / m.sum(1)


def is_speech_seq2seq(model) -> bool:
    """A Hugging Face speech-to-text encoder-decoder (Whisper, Speech2Text: its encoder reads
    ``input_features`` or ``input_values`` instead of token ids)."""
    base = getattr(model, "get_base_model", lambda: model)()
    return is_seq2seq_lm(model) and getattr(base, "main_input_name", "") in ("input_features", "input_values")


class SpeechSeq2SeqAdapter(Seq2SeqLMAdapter):
    """Speech-to-text encoder-decoders (``WhisperForConditionalGeneration``): the decoder's NLL
    of the transcript (``labels``) given the audio (``input_features``, Whisper's log-mel
    spectrogram, or ``input_values``). A batch is a dict with that input and ``labels``; every
    likelihood-based strategy and metric applies as for text seq2seq models."""

    def __init__(self, model, **kwargs):
        super().__init__(model, **kwargs)
        base = getattr(model, "get_base_model", lambda: model)()
        self.input_key = getattr(base, "main_input_name", "input_features")

    def with_model(self, model) -> "SpeechSeq2SeqAdapter":
        return SpeechSeq2SeqAdapter(model)

    def to_device(self, batch: Any) -> Dict[str, torch.Tensor]:
        if not isinstance(batch, Mapping) or self.input_key not in batch or "labels" not in batch:
            raise DataError(f"Expected a speech-to-text batch: a dict with {self.input_key} and labels (the "
                            f"transcript's token ids, -100 where not scored); got "
                            f"{sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__}.")
        d = self.device
        return {k: v.to(d) for k, v in batch.items() if isinstance(v, torch.Tensor)}

    def batch_size(self, batch: Any) -> int:
        return int(batch["labels"].shape[0])

    def _forward(self, b):
        return self.model(**{self.input_key: b[self.input_key]}, labels=b["labels"])

    @torch.no_grad()
    def features(self, batch: Any) -> torch.Tensor:
        """Mean of the encoder's last hidden state over time."""
        b = self.to_device(batch)
        return self.model.get_encoder()(b[self.input_key]).last_hidden_state.float().mean(1)


class MaskedLMAdapter(TokenLMAdapter):
    """Masked LMs: the NLL of the original tokens at the masked positions."""

    family = "masked_lm"
    collator = "erasus.models.MaskingCollator"


class Seq2SeqCollator:
    """Question/answer records as seq2seq batches: the question (formatted by ``template``)
    is the source, the answer the target (``labels``, padded with -100)."""

    def __init__(self, tokenizer, max_length: int = 128, template: str = "question: {question}",
                 answer_key: str = "answer"):
        self.tok, self.max_length, self.template, self.answer_key = tokenizer, max_length, template, answer_key
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def __call__(self, records: List[dict]) -> Dict[str, Any]:
        src = [self.tok(self.template.format(question=r["question"]))["input_ids"][: self.max_length] for r in records]
        tgt = [self.tok(r[self.answer_key])["input_ids"][: self.max_length] for r in records]
        ids, att = pad_rows(src, self.pad_id)
        labels, _ = pad_rows(tgt, IGNORE)
        return {"input_ids": ids, "attention_mask": att, "labels": labels, "text": [r[self.answer_key] for r in records]}


class MaskingCollator:
    """Question/answer records as masked-LM batches: ``"question answer"`` with a fraction
    ``mask_prob`` of the answer's tokens (at least one) replaced by the mask token and
    scored; the question is never masked, so the loss measures what the model recalls of
    the answer given the question. ``seed`` fixes the masks (the same record gets the same
    mask every time, so losses are comparable across evaluations and unlearning targets a
    fixed set of tokens); ``seed=None`` draws new masks on every call (for training)."""

    def __init__(self, tokenizer, max_length: int = 128, mask_prob: float = 0.3, seed: Optional[int] = 0,
                 answer_key: str = "answer"):
        if tokenizer.mask_token_id is None:
            raise DataError("MaskingCollator needs a tokenizer with a mask token (BERT-style).")
        if not 0.0 < mask_prob <= 1.0:
            raise DataError(f"Expected 0 < mask_prob <= 1, got {mask_prob}.")
        self.tok, self.max_length, self.mask_prob, self.seed, self.answer_key = (tokenizer, max_length, mask_prob,
                                                                                  seed, answer_key)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._rng = random.Random()

    @property
    def pretokenize(self) -> bool:
        """Whether batches may be encoded once and reused (fixed masks: ``seed`` given)."""
        return self.seed is not None

    def __call__(self, records: List[dict]) -> Dict[str, Any]:
        rows, labs = [], []
        for r in records:
            q = self.tok(r["question"])["input_ids"]
            a = self.tok(r[self.answer_key], add_special_tokens=False)["input_ids"]
            ids = (q + a)[: self.max_length]
            pos = list(range(len(q), len(ids)))
            if not pos:
                raise DataError(f"No answer token left within max_length={self.max_length} for {r['question']!r}.")
            rng = (self._rng if self.seed is None
                   else random.Random(f"{self.seed}:{r['question']}:{r[self.answer_key]}"))
            chosen = set(rng.sample(pos, max(1, round(self.mask_prob * len(pos)))))
            lab = [ids[i] if i in chosen else IGNORE for i in range(len(ids))]
            rows.append([self.tok.mask_token_id if i in chosen else t for i, t in enumerate(ids)])
            labs.append(lab)
        ids, att = pad_rows(rows, self.pad_id)
        labels, _ = pad_rows(labs, IGNORE)
        labels[att == 0] = IGNORE
        return {"input_ids": ids, "attention_mask": att, "labels": labels, "text": [r[self.answer_key] for r in records]}
