"""Align-then-Unlearn: unlearning in a semantic embedding space (Spohn, Girrbach, Bader &
Akata, "Align-then-Unlearn: Embedding Alignment for LLM Unlearning", ICML 2025 workshop
on machine unlearning for generative AI, arXiv:2506.13181)."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.exceptions import ConfigError
from ..core.module import frozen_copy
from ..core.registry import register
from ..core.strategy import ForgetRetainConfig, ForgetRetainStrategy
from ..utils.data import cycle
from .llm import block_index, transformer_blocks


@dataclass
class EmbeddingAlignmentConfig(ForgetRetainConfig):
    """``layer``: the block whose output feeds the embedding predictor, default the block at
    90% of the depth (the authors hook layer 29 of Phi-3-mini's 32); ``window`` (k): how many
    future tokens one predicted embedding stands for, 8; ``predictor_dim``: width of the
    predictor (a linear map, one causal transformer layer, a linear map), 128;
    ``align_steps``: alignment pre-training steps of the predictor before any unlearning,
    200; ``predictor_lr`` 1e-3 (Adam, as the authors'); ``thresholds``: the decreasing
    similarity margins τ of the unlearning stages, (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2)
    (the authors' schedule, thinned); ``stage_steps``: unlearning steps per margin, 4;
    ``realign_steps``: predictor re-alignment steps between stages, 20; ``lr`` 3e-3 (Adam;
    the authors use SGD 3e-4 on a 3.8B model; on the tiny test model 1e-3 raised the forget
    NLL by 0.35 in 20 steps, 3e-3 by 1.37 with the retain NLL unchanged), at most ``epochs``
    = 10; ``retain_weight`` 1 (a deviation, see the class docstring)."""

    layer: Optional[int] = None
    window: int = 8
    predictor_dim: int = 128
    align_steps: int = 200
    predictor_lr: float = 1e-3
    thresholds: Tuple[float, ...] = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2)
    stage_steps: int = 4
    realign_steps: int = 20
    lr: float = 3e-3
    epochs: float = 10

    def validate(self) -> None:
        super().validate()
        self._check_positive("window", "predictor_dim", "stage_steps", "predictor_lr")
        self._check_positive("align_steps", "realign_steps", allow_zero=True)
        self._check_positive("layer", allow_zero=True)
        self.thresholds = tuple(float(t) for t in self.thresholds)
        if not self.thresholds or any(not -1.0 <= t <= 1.0 for t in self.thresholds):
            raise ConfigError(f"EmbeddingAlignmentConfig.thresholds: expected cosine margins in [-1, 1], got "
                              f"{self.thresholds!r}.")


class EmbeddingPredictor(nn.Module):
    """``h_t -> ê_t``: predicts, from the hidden states up to position t, one embedding of
    the next ``window`` tokens (a linear map, one causal self-attention layer, a linear map)."""

    def __init__(self, in_dim: int, dim: int, out_dim: int):
        super().__init__()
        heads = next(h for h in (4, 2, 1) if dim % h == 0)
        self.inp = nn.Linear(in_dim, dim)
        self.layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=0.0, batch_first=True)
        self.out = nn.Linear(dim, out_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(h.shape[1], device=h.device)
        return self.out(self.layer(self.inp(h), src_mask=mask, is_causal=True))


@register("strategy", "embedding_alignment", aliases=("align_then_unlearn", "atu"))
class EmbeddingAlignment(ForgetRetainStrategy):
    """Align-then-Unlearn (ATU).

    Spohn, Girrbach, Bader & Akata, "Align-then-Unlearn: Embedding Alignment for LLM
    Unlearning", arXiv:2506.13181 (2025). **Align**: a small predictor ``E`` reads the
    language model's hidden states at block ``layer`` and is trained (the model frozen) to
    predict, at every position t, a reference embedding of the next ``window`` tokens (cosine
    loss). **Unlearn**: the model is trained, ``E`` frozen, to push ``E``'s predictions on
    the forget texts away from the embedding of the concept to forget,
    ``mean_t ReLU(cos(E(h_t), e_target) − τ)``, with margins τ that decrease stage by stage;
    between stages ``E`` is re-aligned on forget and retain text, so the model cannot
    merely fool a fixed predictor. Forgetting happens in what the model is about to say,
    not in the exact token sequence.

    Deviations, because this library runs offline and on question/answer forget sets: (1)
    the reference encoder is a frozen copy of the original model itself (mean of its last
    hidden states over the window, encoded on its own, centred by the mean over forget and
    retain windows) instead of a pretrained sentence encoder (MPNet), which cannot be
    downloaded here; (2) the concept of each forget sample
    is its own answer (the reference embedding of the answer tokens) rather than one
    target name, so a forget set of many facts needs no list of names; (3) a retain
    cross-entropy term (``retain_weight``) keeps utility, as in GradDiff-style methods
    (ATU itself relies on the margin alone); (4) the predictor's attention is strictly
    causal. Causal language models only.
    """

    config_class = EmbeddingAlignmentConfig
    supports = ("causal_lm",)

    # -- reference embeddings -------------------------------------------------------
    @torch.no_grad()
    def _encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Reference embedding of each row of ``ids`` (mean of the frozen model's last hidden
        states over the attended tokens), in chunks."""
        out = []
        for i in range(0, len(ids), 512):
            h = self.reference(input_ids=ids[i:i + 512], attention_mask=mask[i:i + 512],
                               output_hidden_states=True).hidden_states[-1].float()
            m = mask[i:i + 512].unsqueeze(-1).float()
            out.append((h * m).sum(1) / m.sum(1).clamp_min(1.0) - self._ref_mean)
        return torch.cat(out) if out else torch.zeros(0, self._ref_dim, device=ids.device)

    MAX_CACHE = 50_000_000  # cached floats (200 MB)

    def _cached(self, rows, encode):
        """``encode`` the rows not yet in the cache (the reference encoder is frozen, so a
        sequence's embeddings never change); returns one tensor per row."""
        keys = [tuple(r) for r in rows]
        todo = [k for k in dict.fromkeys(keys) if k not in self._cache]
        fresh = dict(zip(todo, encode(todo))) if todo else {}
        for key, val in fresh.items():
            if self._cache_items + val.numel() <= self.MAX_CACHE:
                self._cache[key] = val
                self._cache_items += val.numel()
        return [self._cache[k] if k in self._cache else fresh[k] for k in keys]

    def _answer_rows(self, seqs):
        """The reference embedding of each answer (a tuple of token ids)."""
        device = next(self.model.parameters()).device
        width = max(len(sq) for sq in seqs)
        ids = torch.zeros(len(seqs), width, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for i, sq in enumerate(seqs):
            ids[i, :len(sq)] = torch.tensor(sq, device=device)
            mask[i, :len(sq)] = 1
        return list(self._encode(ids, mask))

    def _window_rows(self, seqs):
        """For each token sequence (a tuple), the reference embeddings of its windows of the
        next ``window`` tokens, one row per position t = 0 .. len - 1 - k."""
        k = self.config.window
        device = next(self.model.parameters()).device
        wins = [torch.tensor(sq, device=device)[1:].unfold(0, k, 1) if len(sq) > k
                else torch.zeros(0, k, dtype=torch.long, device=device) for sq in seqs]
        flat = torch.cat(wins)
        emb = self._encode(flat, torch.ones_like(flat)) if len(flat) else torch.zeros(0, self._ref_dim, device=device)
        return list(emb.split([len(w) for w in wins]))

    def _windows(self, b):
        """Reference embeddings of the next ``window`` tokens at each position whose window
        lies inside the sequence: (B, L - k) embeddings and their validity mask."""
        k = self.config.window
        ids, mask = b["input_ids"], b["attention_mask"]
        if ids.shape[1] <= k:
            return None, None
        lengths = mask.sum(1).tolist()  # right-padded sequences
        rows = self._cached([ids[i, :n].tolist() for i, n in enumerate(lengths)], self._window_rows)
        emb = torch.zeros(ids.shape[0], ids.shape[1] - k, self._ref_dim, device=ids.device)
        valid = torch.zeros(ids.shape[0], ids.shape[1] - k, dtype=torch.bool, device=ids.device)
        for i, r in enumerate(rows):
            emb[i, :len(r)], valid[i, :len(r)] = r, True
        return emb, valid

    def _hidden(self, b, grad: bool):
        with torch.set_grad_enabled(grad):
            out = self.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True)
        return out.hidden_states[self.layer + 1].float()

    # -- alignment ----------------------------------------------------------------------
    def _align(self, steps: int) -> None:
        """Train the predictor (the model frozen) to predict the reference window embeddings."""
        if steps <= 0:
            return
        self.predictor.train()
        for p in self.predictor.parameters():
            p.requires_grad_(True)
        for _ in range(steps):
            b = self.adapter.to_device(next(self._texts))
            target, valid = self._windows(b)
            if target is None or not valid.any():
                continue
            pred = self.predictor(self._hidden(b, grad=False))[:, :target.shape[1]]
            loss = -F.cosine_similarity(pred[valid], target[valid], dim=-1).mean()
            self._popt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.predictor.parameters(), 1.0)
            self._popt.step()
            self.align_history.append(-float(loss.detach()))
        self.predictor.eval()
        for p in self.predictor.parameters():
            p.requires_grad_(False)

    def setup(self, forget_loader, retain_loader):
        c = self.config
        n = len(transformer_blocks(self.model))
        self.layer = block_index(self.model, c.layer, max(0, round(0.9 * n) - 1), "embedding_alignment")
        self.reference = frozen_copy(self.model)
        device = next(self.model.parameters()).device
        probe = self.adapter.to_device(next(iter(forget_loader)))
        self._cache, self._cache_items = {}, 0
        self._ref_mean = 0.0
        self._ref_dim = self._encode(probe["input_ids"][:1], probe["attention_mask"][:1]).shape[-1]
        # centre the reference space: mean-pooled hidden states share a large common direction
        # (cosine ~0.7 between unrelated windows on the test model), which hides what differs
        sample = [self._windows(self.adapter.to_device(b)) for ld in (forget_loader, retain_loader)
                  if ld is not None for b, _ in zip(ld, range(4))]
        self._ref_mean = torch.cat([e[v] for e, v in sample if e is not None]).mean(0)
        self._cache, self._cache_items = {}, 0  # those entries were not centred
        hid = self._hidden(probe, grad=False).shape[-1]
        torch.manual_seed(0)
        self.predictor = EmbeddingPredictor(hid, c.predictor_dim, self._ref_dim).to(device)
        self._popt = torch.optim.Adam(self.predictor.parameters(), lr=c.predictor_lr)
        loaders = [forget_loader] + ([retain_loader] if retain_loader is not None else [])
        streams = [cycle(ld) for ld in loaders]
        self._texts = (next(s) for s in itertools.cycle(streams))  # forget and retain text, alternating
        self.align_history = []
        was = self.model.training
        self.model.eval()
        self._align(c.align_steps)
        self.model.train(was)
        self._count, self._stage = 0, 0

    @property
    def threshold(self) -> float:
        return self.config.thresholds[self._stage]

    def forget_step(self, batch, batch_idx):
        c = self.config
        stage = min(self._count // c.stage_steps, len(c.thresholds) - 1)
        if stage != self._stage:  # a new margin: re-align the predictor to the model as it is now
            self._stage = stage
            was = self.model.training
            self.model.eval()
            self._align(c.realign_steps)
            self.model.train(was)
        self._count += 1
        b = self.adapter.to_device(batch)
        # the concept of each forget sample: the reference embedding of its answer tokens
        ans = b["labels"] != -100
        target = torch.stack(self._cached([b["input_ids"][i][ans[i]].tolist() for i in range(len(ans))],
                                          self._answer_rows))     # (B, D)
        pred = self.predictor(self._hidden(b, grad=True))         # (B, L, D)
        cos = F.cosine_similarity(pred, target.unsqueeze(1), dim=-1)
        m = b["attention_mask"].bool()
        return F.relu(cos[m] - self.threshold).mean()

    def release(self) -> None:
        self.reference = self.predictor = self._popt = self._texts = self._cache = None
        super().release()
