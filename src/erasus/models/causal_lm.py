"""Causal language models (Hugging Face ``AutoModelForCausalLM``: GPT-2, LLaMA, Mistral, …,
and ``PeftModel`` wrappers of them) with answer-only labels.

A batch is a dict with ``input_ids``, ``attention_mask`` and ``labels`` (``-100`` where a
token is not scored: the prompt and the padding), as :class:`QACollator` builds it from
question/answer records. ``per_sample_loss`` is the mean negative log-likelihood of each
sample's answer tokens (length-normalised, as TOFU and SimNPO use it);
``sequence_nll`` is its sum (the sequence log-likelihood of NPO / DPO).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..exceptions import ConfigError, DataError
from .base import ModelAdapter
from .batching import INDEX

IGNORE = -100
#: the question/answer prompt of TOFU's evaluation, used for training and generation alike
PROMPT_TEMPLATE = "Question: {question}\nAnswer:"


def hf_lm_kind(model: nn.Module) -> str:
    """``"causal_lm"``, ``"seq2seq_lm"``, ``"masked_lm"`` or ``""`` for a Hugging Face model
    (or a PEFT wrapper of one), recognised without importing transformers: by its config
    and class name (``*ForCausalLM`` / ``*LMHeadModel`` with an output embedding,
    encoder-decoder ``*ForConditionalGeneration`` / ``*Seq2SeqLM``, ``*ForMaskedLM``)."""
    base = getattr(model, "get_base_model", lambda: model)()
    cfg = getattr(base, "config", None)
    if cfg is None:
        return ""
    name = type(base).__name__
    if getattr(cfg, "is_encoder_decoder", False):
        return "seq2seq_lm" if name.endswith(("ForConditionalGeneration", "Seq2SeqLM")) else ""
    if hasattr(base, "get_output_embeddings") and name.endswith(("ForCausalLM", "LMHeadModel")):
        return "causal_lm"
    return "masked_lm" if name.endswith("ForMaskedLM") else ""


def is_causal_lm(model: nn.Module) -> bool:
    """A Hugging Face causal LM (or a PEFT wrapper of one)."""
    return hf_lm_kind(model) == "causal_lm"


def encode_prompt(tokenizer, text: str) -> List[int]:
    """Token ids of ``text`` with the special tokens the tokenizer puts *before* a text by
    default (the BOS of LLaMA- and Mistral-style tokenizers; nothing for GPT-2), and none it
    would put after it: how TOFU's and MUSE's reference code encode prompts
    (``add_special_tokens=True``) without an EOS closing the prompt."""
    plain = tokenizer(text, add_special_tokens=False)["input_ids"]
    full = tokenizer(text, add_special_tokens=True)["input_ids"]
    if len(full) >= len(plain) and full[len(full) - len(plain):] == plain:
        return list(full[: len(full) - len(plain)]) + list(plain)
    if full[: len(plain)] == plain:  # the specials come after the text only (e.g. an EOS): drop them
        return list(plain)
    return list(full)


def pad_rows(rows: Sequence[Sequence[int]], value: int):
    """Right-pad token lists into a ``(len(rows), longest)`` long tensor filled with
    ``value``, and the matching attention mask (1 on real tokens)."""
    n = max(len(r) for r in rows)
    out = torch.full((len(rows), n), value, dtype=torch.long)
    att = torch.zeros((len(rows), n), dtype=torch.long)
    for k, r in enumerate(rows):
        out[k, :len(r)] = torch.as_tensor(list(r), dtype=torch.long)
        att[k, :len(r)] = 1
    return out, att


#: the families whose adapters are :class:`TokenLMAdapter`\ s (scored tokens, answer-only labels)
TOKEN_FAMILIES = ("causal_lm", "seq2seq_lm", "masked_lm", "vision_lm")


class TokenLMAdapter(ModelAdapter):
    """Shared scoring of language models whose batches carry ``labels`` (``-100`` where a
    token is not scored): per-token NLL of the scored tokens, its per-sample mean
    (``per_sample_loss``) and sum (``sequence_nll``), and token accuracy. Subclasses give
    the forward pass and how logits line up with labels (causal LMs predict the next token)."""

    no_scored_tokens = "A sample in the batch has no scored tokens (every label is -100)."
    collator = "a collator of erasus.models"

    def to_device(self, batch: Any) -> Dict[str, torch.Tensor]:
        if not isinstance(batch, Mapping) or "input_ids" not in batch or "labels" not in batch:
            raise DataError(f"Expected a {self.family} batch: a dict with input_ids, attention_mask and labels (-100 "
                            f"on tokens that are not scored), e.g. from {self.collator}; got {type(batch).__name__}.")
        d = self.device
        return {k: v.to(d) for k, v in batch.items() if isinstance(v, torch.Tensor)}

    def batch_size(self, batch: Any) -> int:
        return int(batch["input_ids"].shape[0])

    def _forward(self, b):
        return self.model(input_ids=b["input_ids"], attention_mask=b.get("attention_mask"))

    def _aligned(self, logits: torch.Tensor, labels: torch.Tensor):
        return logits, labels

    def logits(self, batch: Any) -> torch.Tensor:
        return self._forward(self.to_device(batch)).logits

    @torch.no_grad()
    def features(self, batch: Any) -> torch.Tensor:
        """Mean of the last hidden state over the attended tokens."""
        b = self.to_device(batch)
        out = self.model(input_ids=b["input_ids"], attention_mask=b.get("attention_mask"), output_hidden_states=True)
        h = out.hidden_states[-1].float()
        m = b.get("attention_mask", torch.ones_like(b["input_ids"])).unsqueeze(-1).float()
        return (h * m).sum(1) / m.sum(1)

    def _aligned_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return self._aligned(labels.unsqueeze(-1), labels)[1]

    def scored_hidden(self, b) -> Optional[tuple]:
        """``(hidden states aligned with the labels, output layer)`` when this model's logits
        are its output layer applied to its backbone's last hidden state (so they can be
        computed at the scored positions only); ``None`` where they cannot be (see
        :class:`CausalLMAdapter`)."""
        return None

    def scored_rows(self, b: Dict[str, torch.Tensor]):
        """``(rows, project, targets, mask)`` for a batch already on the device: ``project(rows)``
        are the logits at the scored positions only (labels ≠ −100, aligned as :meth:`_aligned`
        aligns them, in row-major order), ``targets`` their tokens and ``mask`` the aligned
        scored mask. Where :meth:`scored_hidden` allows it the rows are hidden states and
        ``project`` the output layer, so prompt and padding tokens never reach the vocabulary;
        otherwise the full forward's logits are taken at the scored positions (``project`` is
        the identity). Projecting in chunks (:func:`chunk_rows`) bounds the memory."""
        labels = self._aligned_labels(b["labels"])
        mask = labels != IGNORE
        got = self.scored_hidden(b)
        if got is not None:
            h, head = got
            return h[mask], head, labels[mask], mask
        return self._aligned(self._forward(b).logits, b["labels"])[0][mask], nn.Identity(), labels[mask], mask

    def scored_logits(self, batch: Any):
        """``(logits, targets)`` at the scored positions only, one row per scored token (see
        :meth:`scored_rows`): what a token-level loss that needs the whole next-token
        distribution (distillation, UNDIAL) is computed on."""
        rows, project, targets, _ = self.scored_rows(self.to_device(batch))
        return project(rows), targets

    def distillation_logits(self, batch: Any) -> torch.Tensor:
        return self.scored_logits(batch)[0]

    def token_nll(self, batch: Any, logits: Optional[torch.Tensor] = None):
        """Per-token NLL of the scored tokens and their mask, aligned with the labels.
        ``logits``: the model's full logits, or one row per scored token (:meth:`scored_logits`)."""
        nll, mask, _ = self._token_scores(batch, logits, predictions=False)
        return nll, mask

    def _token_scores(self, batch: Any, logits: Optional[torch.Tensor], predictions: bool):
        """Per-token NLL (0 where not scored), the scored mask and, with ``predictions``,
        whether each scored token is the top prediction. Without ``logits``, and where the
        model allows it (:meth:`scored_hidden`), the vocabulary projection is computed only at
        the scored positions, in chunks (:func:`scored_cross_entropy`): prompt and padding
        tokens never get logits."""
        raw = batch.get("labels") if isinstance(batch, Mapping) else None
        b = self.to_device(batch)
        # the mask from the labels as given (on the host for loader batches: no device sync)
        host_labels = self._aligned_labels(raw if isinstance(raw, torch.Tensor) else b["labels"])
        host_mask = host_labels != IGNORE
        if not (isinstance(batch, Mapping) and INDEX in batch) and not bool(host_mask.any(1).all()):
            raise DataError(self.no_scored_tokens)  # batches of TokenizedRecords were checked when encoded
        mask = host_mask.to(self.device, non_blocking=True)
        labels = self._aligned_labels(b["labels"])
        if logits is None:
            got = self.scored_hidden(b)
            if got is not None:
                h, head = got
                idx = host_mask.reshape(-1).nonzero().squeeze(1).to(self.device, non_blocking=True)
                hs = h.reshape(-1, h.shape[-1]).index_select(0, idx)
                nll_s, hit_s = scored_cross_entropy(head, hs, labels.reshape(-1).index_select(0, idx), predictions)
                nll = torch.zeros(mask.numel(), dtype=nll_s.dtype, device=nll_s.device).index_copy(0, idx, nll_s)
                hit = (torch.zeros(mask.numel(), dtype=torch.bool, device=nll_s.device).index_copy(0, idx, hit_s)
                       .view(mask.shape) if predictions else None)
                return nll.view(mask.shape), mask, hit
            logits = self._forward(b).logits
        if logits.dim() == 2:  # one row per scored token, as scored_logits gives them
            lg, t = logits.float(), labels[mask]
            nll_s = F.cross_entropy(lg, t, reduction="none")
            nll = torch.zeros(mask.shape, dtype=nll_s.dtype, device=nll_s.device).masked_scatter(mask, nll_s)
            hit = torch.zeros_like(mask).masked_scatter(mask, lg.argmax(-1) == t) if predictions else None
            return nll, mask, hit
        lg, labels = self._aligned(logits, b["labels"])
        lg = lg.float()
        nll = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), labels.clamp_min(0).reshape(-1),
                              reduction="none").view(labels.shape)
        hit = ((lg.argmax(-1) == labels) & mask) if predictions else None
        return nll * mask, mask, hit

    def per_sample_loss(self, batch: Any, logits: Optional[torch.Tensor] = None) -> torch.Tensor:
        nll, mask = self.token_nll(batch, logits)
        return nll.sum(1) / mask.sum(1)

    def sequence_nll(self, batch: Any, logits: Optional[torch.Tensor] = None) -> torch.Tensor:
        nll, _ = self.token_nll(batch, logits)
        return nll.sum(1)

    def loss_and_accuracy(self, batch: Any):
        """Per-sample mean NLL and token accuracy (the fraction of scored tokens that are the
        model's top prediction under teacher forcing): a language model's counterpart of a
        classifier's correctness, used by calibrated stopping."""
        nll, mask, hit = self._token_scores(batch, None, predictions=True)
        n = mask.sum(1)
        return nll.sum(1) / n, hit.sum(1).double() / n


#: elements of one chunk of scored logits (chunks × vocabulary); larger requests are chunked
#: and, when training, recomputed in the backward pass instead of stored
CHUNK_ELEMENTS = 1 << 26


def chunk_rows(vocab: int) -> int:
    """How many scored positions go through an output layer of ``vocab`` outputs at once
    (at most :data:`CHUNK_ELEMENTS` logits)."""
    return max(1, CHUNK_ELEMENTS // max(1, int(vocab)))


def _chunk_ce(head, hs, targets):
    return F.cross_entropy(head(hs).float(), targets, reduction="none")


def scored_cross_entropy(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, predictions: bool = False):
    """Cross-entropy of ``targets`` under ``head(hidden)`` (``hidden``: one row per scored
    token), and with ``predictions`` whether each target is the arg-max. At most
    :data:`CHUNK_ELEMENTS` logits exist at a time: longer inputs go in chunks, each
    recomputed in the backward pass (activation checkpointing) when gradients are needed, so
    the memory for logits stays one chunk's whatever the batch."""
    n = hidden.shape[0]
    step = chunk_rows(getattr(head, "out_features", None) or head.weight.shape[0])
    if n <= step:
        lg = head(hidden)
        nll = F.cross_entropy(lg.float(), targets, reduction="none")
        return nll, ((lg.argmax(-1) == targets) if predictions else None)
    from torch.utils.checkpoint import checkpoint

    grad = torch.is_grad_enabled() and hidden.requires_grad
    nll, hit = [], []
    for i in range(0, n, step):
        h, t = hidden[i:i + step], targets[i:i + step]
        if predictions:
            with torch.no_grad():
                hit.append(head(h).argmax(-1) == t)
        nll.append(checkpoint(_chunk_ce, head, h, t, use_reentrant=False) if grad else _chunk_ce(head, h, t))
    return torch.cat(nll), (torch.cat(hit) if predictions else None)


class CausalLMAdapter(TokenLMAdapter):
    family = "causal_lm"
    no_scored_tokens = ("A sample in the batch has no scored (answer) tokens: check max_length, or that the answer is "
                        "not empty.")

    collator = "erasus.models.causal_lm.QACollator"

    def _aligned(self, logits: torch.Tensor, labels: torch.Tensor):
        return logits[:, :-1], labels[:, 1:]  # position t predicts token t + 1

    #: architectures whose logits are exactly ``output_layer(backbone(x).last_hidden_state)``
    #: (no soft-capping, logit scaling or extra terms), for which scores are computed at the
    #: answer tokens only; any other model gets full logits
    PLAIN_HEADS = frozenset({"gpt2", "gpt_neo", "gptj", "gpt_neox", "llama", "mistral", "mixtral", "qwen2",
                             "qwen2_moe", "qwen3", "qwen3_moe", "phi", "phi3", "opt", "olmo", "olmo2", "gemma",
                             "stablelm", "starcoder2", "bloom", "falcon", "smollm3"})

    def scored_hidden(self, b):
        """For the architectures in :data:`PLAIN_HEADS` and models without forward hooks of
        their own (inference-time methods such as DExperts hook the whole model): the
        backbone's last hidden state shifted to line up with the labels, and the output layer."""
        top = self.model
        base = getattr(top, "get_base_model", lambda: top)()
        cfg = getattr(base, "config", None)
        if getattr(cfg, "model_type", None) not in self.PLAIN_HEADS or getattr(base, "base_model", base) is base:
            return None
        head = base.get_output_embeddings()
        if head is None or not hasattr(head, "weight") or any(
                m._forward_hooks or m._forward_pre_hooks for m in {top, base}):
            return None
        out = base.base_model(input_ids=b["input_ids"], attention_mask=b.get("attention_mask"))
        return out[0][:, :-1], head

    def block_output(self, batch: Any, layer: int, answer_only: bool = False) -> torch.Tensor:
        """Output of transformer block ``layer`` (0-based) at every attended token, or only at
        the answer tokens, as a (tokens, hidden) matrix; gradients flow unless disabled."""
        b = self.to_device(batch)
        out = self.model(input_ids=b["input_ids"], attention_mask=b.get("attention_mask"), output_hidden_states=True)
        m = (b["labels"] != IGNORE) if answer_only else b.get("attention_mask", torch.ones_like(b["input_ids"])).bool()
        return out.hidden_states[layer + 1][m]  # hidden_states[0] is the embedding output


def is_vision_lm(model) -> bool:
    """A Hugging Face image-text-to-text model (LLaVA, BLIP-2, and the like: a decoder-only
    ``*ForConditionalGeneration`` whose config has a vision and a text part), or a PEFT wrapper."""
    base = getattr(model, "get_base_model", lambda: model)()
    cfg = getattr(base, "config", None)
    return (cfg is not None and not getattr(cfg, "is_encoder_decoder", False)
            and getattr(cfg, "vision_config", None) is not None and getattr(cfg, "text_config", None) is not None
            and type(base).__name__.endswith("ForConditionalGeneration"))


class VisionLMAdapter(CausalLMAdapter):
    """Image-text-to-text models (``LlavaForConditionalGeneration``, ``Blip2ForConditionalGeneration``):
    the NLL of the answer tokens given the image (``pixel_values``) and the question. A batch
    is a causal-LM batch (``input_ids`` with the model's image tokens where its processor puts
    them, ``attention_mask``, answer-only ``labels``) plus ``pixel_values``; models that
    prepend query tokens to the text (BLIP-2) are aligned on the last ``labels`` positions, as
    their own loss does. Every likelihood-based strategy applies (family ``"vision_lm"``)."""

    family = "vision_lm"

    def to_device(self, batch: Any) -> Dict[str, torch.Tensor]:
        if not isinstance(batch, Mapping) or "pixel_values" not in batch:
            raise DataError("Expected an image-text batch: a dict with pixel_values, input_ids, attention_mask and "
                            f"labels; got {sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__}.")
        return super().to_device(batch)

    def _forward(self, b):
        return self.model(input_ids=b["input_ids"], attention_mask=b.get("attention_mask"),
                          pixel_values=b["pixel_values"])

    def _aligned(self, logits: torch.Tensor, labels: torch.Tensor):
        if logits.shape[1] > labels.shape[1]:  # query tokens before the text (BLIP-2)
            logits = logits[:, -labels.shape[1]:]
        return super()._aligned(logits, labels)

    def scored_hidden(self, b):
        return None  # the image enters through the full model's forward

    def block_output(self, batch: Any, layer: int, answer_only: bool = False) -> torch.Tensor:
        raise DataError("Layer-level methods are not supported for image-text models yet: use a likelihood-based "
                        "strategy (npo, negative_gradient, wga, ...).")

    def language_parameters(self):
        """``(name, parameter)`` of the language side: the language model and its output layer."""
        return [(n, p) for n, p in self.model.named_parameters() if "language_model" in n or "lm_head" in n]


class QACollator:
    """Tokenises question/answer records into causal-LM batches with answer-only labels.

    ``template`` formats the prompt from the question (the answer follows it), led by the
    tokenizer's BOS where it adds one (:func:`encode_prompt`, as TOFU's reference encoding);
    the EOS token ends the answer; sequences are right-padded and truncated to ``max_length``
    (the prompt is kept whole when it can be). ``answer_key`` picks which answer field to
    train on (e.g. ``"paraphrased_answer"``); ``answers`` overrides every answer (e.g. an
    "I don't know" refusal) when given as a list, cycled by index. Batches also carry the
    answer strings under ``"text"`` (for text-level metrics such as the zlib attack).
    ``alt_answers`` (e.g. :func:`erasus.data.datasets.tofu.load_idk`) adds a second,
    aligned encoding of every question with an alternative answer under ``alt_input_ids``,
    ``alt_attention_mask`` and ``alt_labels``: the targets of the IdkNLL / IdkDPO strategies.
    """

    def __init__(self, tokenizer, max_length: int = 128, template: str = PROMPT_TEMPLATE,
                 answer_key: str = "answer", answers: Optional[Sequence[str]] = None,
                 alt_answers: Optional[Sequence[str]] = None):
        self.tok, self.max_length, self.template = tokenizer, max_length, template
        self.answer_key, self.answers = answer_key, list(answers) if answers else None
        self.alt_answers = list(alt_answers) if alt_answers else None
        self._j = 0
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_id is None:
            raise DataError("The tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token first.")
        self._i = 0

    def encode(self, question: str, answer: str):
        p = encode_prompt(self.tok, self.template.format(question=question))
        a = self.tok(" " + answer, add_special_tokens=False)["input_ids"]
        if self.tok.eos_token_id is not None:
            a = a + [self.tok.eos_token_id]
        ids = (p + a)[: self.max_length]
        labels = ([IGNORE] * len(p) + a)[: self.max_length]
        return ids, labels

    def __call__(self, records: List[dict]) -> Dict[str, torch.Tensor]:
        rows, texts = [], []
        for r in records:
            if self.answers is not None:
                ans = self.answers[self._i % len(self.answers)]
                self._i += 1
            else:
                ans = r[self.answer_key]
            rows.append(self.encode(r["question"], ans))
            texts.append(ans)
        ids, att, labels = self._pad(rows)
        out = {"input_ids": ids, "attention_mask": att, "labels": labels, "text": texts}
        if self.alt_answers is not None:
            alt = []
            for r in records:
                alt.append(self.encode(r["question"], self.alt_answers[self._j % len(self.alt_answers)]))
                self._j += 1
            out["alt_input_ids"], out["alt_attention_mask"], out["alt_labels"] = self._pad(alt)
        return out

    def _pad(self, rows):
        ids, att = pad_rows([i for i, _ in rows], self.pad_id)
        labels, _ = pad_rows([lab for _, lab in rows], IGNORE)
        return ids, att, labels


class TextCollator:
    """Plain texts as causal-LM batches with every token scored (MUSE's corpora and PrivLeak
    texts), encoded as MUSE and the Min-K% authors do: the tokenizer's BOS first where it
    adds one, no EOS, every token after the first scored; ``max_length``: truncate to that
    many tokens (``None``, the default, keeps whole texts as the reference code does);
    right-padded; the text rides along under ``"text"`` for the zlib attack."""

    def __init__(self, tokenizer, max_length: Optional[int] = None):
        self.tok, self.max_length = tokenizer, max_length
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def __call__(self, texts: List[str]) -> Dict:
        ids = [encode_prompt(self.tok, t)[: self.max_length] for t in texts]
        if any(len(i) < 2 for i in ids):
            raise DataError("Every text needs at least two tokens (one to predict from, one to score).")
        x, att = pad_rows(ids, self.pad_id)
        labels = x.masked_fill(att == 0, -100)
        return {"input_ids": x, "attention_mask": att, "labels": labels, "text": list(texts)}


def context_length(model: nn.Module, tokenizer=None, default: int = 1024) -> int:
    """The longest sequence ``model`` takes: its config's ``max_position_embeddings`` /
    ``n_positions``, else the tokenizer's ``model_max_length`` when it is a real bound, else
    ``default``."""
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        n = getattr(cfg, key, None)
        if isinstance(n, int) and n > 0:
            return n
    n = getattr(tokenizer, "model_max_length", None)
    return int(n) if isinstance(n, int) and 0 < n < 1_000_000 else default


def records_loader(data, tokenizer, max_length: int, batch_size: int = 16, shuffle: bool = False, seed: int = 0,
                   what: str = "data"):
    """A loader of causal-LM batches for data given as records, or ``None`` when ``data`` is not
    records (a ``DataLoader``, a data set of batches, tensors): question/answer dicts (TOFU's
    records, a Hugging Face ``datasets.Dataset`` with ``question`` and ``answer`` columns) through
    :class:`QACollator` (the answers scored), plain texts (strings, or dicts with only a
    ``text`` field) through :class:`TextCollator` (every token scored), each tokenised once
    (:func:`qa_loader`). A text longer than ``max_length`` tokens is an error: cutting it would
    leave the rest of it unlearned."""
    from torch.utils.data import DataLoader

    if data is None or isinstance(data, (DataLoader, str, bytes, os.PathLike)) or torch.is_tensor(data):
        return None
    try:
        n, first = len(data), data[0]
    except (TypeError, KeyError, IndexError):
        return None
    if n == 0:
        return None
    if isinstance(first, Mapping) and "question" in first and "answer" in first:
        kind = "qa"
    elif isinstance(first, str) or (isinstance(first, Mapping) and set(first) == {"text"}):
        kind = "text"
    else:
        return None
    if tokenizer is None:
        raise DataError(f"The {what} data are {'question/answer records' if kind == 'qa' else 'texts'}: give the "
                        "unlearner the tokenizer to encode them (LLMUnlearner(model, tokenizer=...)), or pass a "
                        "DataLoader of encoded batches (erasus.models.causal_lm.qa_loader).")
    if kind == "qa":
        return qa_loader(data, QACollator(tokenizer, max_length=max_length), batch_size=batch_size, seed=seed,
                         shuffle=shuffle)
    texts = [t if isinstance(t, str) else t["text"] for t in data]
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise DataError(f"Expected every {what} text to be a string, got {type(t).__name__} at position {i}.")
        n_tok = len(encode_prompt(tokenizer, t))
        if n_tok > max_length:
            raise DataError(f"{what.capitalize()} text {i} has {n_tok} tokens, more than the model's {max_length}: "
                            "split long texts (e.g. into paragraphs, or erasus.models.causal_lm.chunk_text) so that "
                            "every token is unlearned.")
    return qa_loader(texts, TextCollator(tokenizer), batch_size=batch_size, seed=seed, shuffle=shuffle)


def word_tokenizer(texts: Sequence[str], min_count: int = 1, mask_token: bool = False, bos: bool = False):
    """A word-level ``PreTrainedTokenizerFast`` built from ``texts`` (words and punctuation,
    lower-cased; ``<pad>``, ``<unk>``, ``<eos>``, and ``<mask>`` with ``mask_token=True`` for
    masked LMs), for language models trained from scratch where no pretrained tokenizer can
    be downloaded (tests, ``benchmarks/tofu.py``). ``bos=True`` adds a ``<bos>`` token that the
    tokenizer puts before every text by default, as LLaMA's does."""
    from collections import Counter

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Whitespace()
    norm = normalizers.Lowercase()
    counts = Counter(w for t in texts for w, _ in pre.pre_tokenize_str(norm.normalize_str(t)))
    vocab = {"<pad>": 0, "<unk>": 1, "<eos>": 2, **({"<mask>": 3} if mask_token else {})}
    if bos:
        vocab["<bos>"] = len(vocab)
    for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if c >= min_count:
            vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer, tok.pre_tokenizer = norm, pre
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                           special_tokens=[("<bos>", vocab["<bos>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>",
                                   **({"mask_token": "<mask>"} if mask_token else {}),
                                   **({"bos_token": "<bos>"} if bos else {}))


def gpt2_lm(tokenizer, n_layer: int = 2, n_embd: int = 64, n_head: int = 2, n_positions: int = 256, seed: int = 0,
            dropout: float = 0.0):
    """A freshly initialised GPT-2 (``transformers.GPT2LMHeadModel``) sized for ``tokenizer``,
    for models trained from scratch here (tests and ``benchmarks/tofu.py``); ``dropout`` 0 by
    default (memorisation is the point, and runs stay deterministic)."""
    import transformers

    cfg = transformers.GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                                  n_head=n_head, bos_token_id=tokenizer.eos_token_id,
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                  resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(cfg)


def tofu_texts(request) -> List[str]:
    """Every text of a TOFU request (questions, answers, paraphrases, perturbations), for
    building a word-level vocabulary that covers the evaluation."""
    out = ["Question: Answer:"]
    for ds in (request.forget, request.retain, request.holdout, request.forget_eval, request.retain_eval):
        for r in ds.records:
            out += [r["question"], r["answer"], r.get("paraphrased_answer", ""), *r.get("perturbed_answer", [])]
    return out


def chunk_text(text: str, tokenizer, length: int) -> List[List[int]]:
    """Split a text into consecutive ``length``-token chunks (chunks of one token, which
    have nothing to predict, are dropped); MUSE trains and unlearns on such chunks."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [ids[i:i + length] for i in range(0, len(ids), length) if len(ids[i:i + length]) > 1]


class LengthGroupedBatchSampler(torch.utils.data.Sampler):
    """Batches of similar length, in a random order each epoch: indices are shuffled, cut
    into groups of ``group`` batches, sorted by ``lengths`` within each group and split into
    batches, and the batches shuffled (the "group by length" of Hugging Face's Trainer).
    Padding to the longest sequence of a batch then wastes little: on TOFU's 4,000 QA pairs
    (word tokens, batches of 32) an epoch holds 203k tokens instead of 318k, of which 198k
    are real.
    Pass as ``DataLoader(records, batch_sampler=..., collate_fn=QACollator(...))``."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, group: int = 50):
        if batch_size < 1 or group < 1:
            raise ValueError(f"Expected batch_size >= 1 and group >= 1, got {batch_size} and {group}.")
        self.lengths, self.batch_size, self.group = list(lengths), batch_size, group
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        span = self.batch_size * self.group
        batches = []
        for i in range(0, len(order), span):
            chunk = sorted(order[i:i + span], key=lambda j: self.lengths[j])
            batches += [chunk[k:k + self.batch_size] for k in range(0, len(chunk), self.batch_size)]
        for b in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[b]


def qa_loader(records: Sequence[dict], collator: "QACollator", batch_size: Optional[int] = None, seed: int = 0,
              shuffle: bool = True, group_by_length: bool = True, max_tokens: Optional[int] = None,
              buckets: int = 6):
    """A ``DataLoader`` over question/answer records, tokenised once.

    The records are encoded by ``collator`` once, here (:class:`~erasus.models.batching.TokenizedRecords`),
    and batches are only padded, to one of up to ``buckets`` lengths (quantiles of the
    records' lengths, multiples of 8: :func:`~erasus.models.batching.bucket_edges`). When
    shuffling with ``group_by_length`` (default), batches hold samples of one bucket
    (:class:`~erasus.models.batching.BucketBatchSampler`): ``batch_size`` sequences, or about
    ``max_tokens`` padded tokens each (a token budget: many short sequences or few long
    ones); an epoch then has at most ``buckets + 1`` batch shapes, so kernels and compiled
    graphs are reused. Batches carry each sample's ``index`` in the records. A collator that
    must run on every call (``pretokenize = False``, e.g. ``MaskingCollator(seed=None)``,
    which draws new masks each time) is called per batch instead, on length-grouped batches."""
    from torch.utils.data import DataLoader

    from .batching import BucketBatchSampler, PadCollator, TokenizedRecords, bucket_edges

    if batch_size is None and max_tokens is None:
        raise ValueError("Expected batch_size (sequences per batch) or max_tokens (padded tokens per batch).")
    if not getattr(collator, "pretokenize", True):
        if batch_size is None:
            raise ValueError(f"{type(collator).__name__} encodes every batch anew: give batch_size, not max_tokens.")
        records = list(getattr(records, "records", records))
        if not shuffle:
            return DataLoader(records, batch_size=batch_size, shuffle=False, collate_fn=collator)
        if not group_by_length:
            return DataLoader(list(records), batch_size=batch_size, shuffle=True, collate_fn=collator,
                              generator=torch.Generator().manual_seed(seed))
        lengths = [int(collator([r])["attention_mask"].sum()) for r in records]
        return DataLoader(list(records), batch_sampler=LengthGroupedBatchSampler(lengths, batch_size, seed),
                          collate_fn=collator)
    data = TokenizedRecords(getattr(records, "records", records), collator)
    if len(data) == 0:
        raise DataError("No records to load: expected at least one question/answer record.")
    edges = bucket_edges(data.lengths, buckets)
    pad = PadCollator(data.pad_id, edges)
    if shuffle and group_by_length:
        sampler = BucketBatchSampler(data.lengths, edges, batch_size=None if max_tokens else batch_size,
                                     max_tokens=max_tokens, seed=seed)
        return DataLoader(data, batch_sampler=sampler, collate_fn=pad)
    n = batch_size or max(1, max_tokens // edges[-1])
    return DataLoader(data, batch_size=n, shuffle=shuffle, collate_fn=pad,
                      generator=torch.Generator().manual_seed(seed) if shuffle else None)


def load_causal_lm(name_or_path, tokenizer=None, **kwargs):
    """``AutoModelForCausalLM.from_pretrained`` (weights via safetensors where the checkpoint
    has them) and its tokenizer; a clear error when ``transformers`` is missing."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise ConfigError("Loading a language model needs transformers: pip install 'erasus[llm]'.") from e
    model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    if tokenizer is None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        except (OSError, ValueError):
            tokenizer = None  # a weights-only folder: the caller tokenises
    return model, tokenizer
