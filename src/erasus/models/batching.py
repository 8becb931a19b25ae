"""Token batches for fast language-model loops: tokenise once, pad to a few lengths.

A training loop that calls the tokenizer in its collator pays for it on every step, and
one that pads each batch to its own longest sequence produces a new tensor shape on almost
every step, so attention kernels plan, compiled graphs recompile and caching allocators
fragment again and again. Here:

* :class:`TokenizedRecords` encodes every record once, with the collator the user chose
  (one record at a time, so per-record choices such as an "I don't know" answer are fixed
  by the record's position), and keeps the token ids; each item carries its ``index``;
* :class:`PadCollator` only pads: every sequence field of a batch is padded to the
  smallest of a few **bucket lengths** that holds it (labels with -100, attention masks
  with 0, ids with the tokenizer's pad id);
* :class:`BucketBatchSampler` groups samples by bucket and fills each batch to a **token
  budget** (about ``max_tokens`` padded tokens: many short sequences or few long ones) or
  to a fixed number of sequences, reshuffled every epoch. An epoch then holds at most
  ``len(edges) + 1`` batch shapes.

:func:`erasus.models.causal_lm.qa_loader` builds all three.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..exceptions import DataError

IGNORE = -100
#: batch key: a sample's position in its dataset (``TokenizedRecords``); lets strategies cache
#: per-sample quantities (e.g. a frozen reference model's log-likelihoods) across steps
INDEX = "index"


def bucket_edges(lengths: Sequence[int], buckets: int = 6, multiple: int = 8) -> List[int]:
    """At most ``buckets`` padded lengths, multiples of ``multiple`` (tensor cores work on
    multiples of 8), that hold sequences of ``lengths`` with the least padding: each sequence
    is padded to the smallest edge that holds it, and the edges minimise the total padded
    tokens (exact, by dynamic programming over the rounded lengths). The last edge holds the
    longest sequence."""
    if buckets < 1 or multiple < 1:
        raise ValueError(f"Expected buckets >= 1 and multiple >= 1, got {buckets} and {multiple}.")
    lengths = np.asarray(list(lengths), dtype=np.int64)
    if lengths.size == 0:
        raise DataError("No sequences to bucket: the dataset is empty.")
    rounded = -(-lengths // multiple) * multiple
    cand = np.unique(rounded)  # every optimal edge is one of these
    count = np.array([(rounded == c).sum() for c in cand], dtype=np.float64)
    total = np.array([lengths[rounded == c].sum() for c in cand], dtype=np.float64)
    n = len(cand)
    # cost[a][b]: padding when candidates a..b share the edge cand[b]
    cc, ct = np.concatenate([[0.0], np.cumsum(count)]), np.concatenate([[0.0], np.cumsum(total)])

    def cost(a: int, b: int) -> float:
        return cand[b] * (cc[b + 1] - cc[a]) - (ct[b + 1] - ct[a])

    k_max = min(buckets, n)
    best = np.full((k_max + 1, n), np.inf)
    arg = np.zeros((k_max + 1, n), dtype=np.int64)
    for b in range(n):
        best[1][b] = cost(0, b)
    for k in range(2, k_max + 1):
        for b in range(n):
            for a in range(1, b + 1):  # the last bucket covers candidates a..b
                v = best[k - 1][a - 1] + cost(a, b)
                if v < best[k][b]:
                    best[k][b], arg[k][b] = v, a
    k = int(np.argmin(best[1:, n - 1])) + 1
    edges, b = [], n - 1
    while k >= 1 and b >= 0:
        edges.append(int(cand[b]))
        if k == 1:
            break
        b, k = int(arg[k][b]) - 1, k - 1
    return sorted(edges)


def padded_length(n: int, edges: Sequence[int], multiple: int = 8) -> int:
    """The smallest edge ``>= n``; beyond the last edge, ``n`` rounded up to ``multiple``."""
    for e in edges:
        if e >= n:
            return e
    return int(math.ceil(n / multiple) * multiple)


def pad_value(key: str, pad_id: int) -> int:
    if key.endswith("labels"):
        return IGNORE
    if key.endswith("attention_mask"):
        return 0
    return pad_id


class TokenizedRecords(torch.utils.data.Dataset):
    """Records encoded once by ``collator`` (called on one record at a time): each item is a
    dict of 1-D token tensors (``input_ids``, ``attention_mask``, ``labels`` and whatever
    else the collator builds, e.g. ``alt_*``), the non-tensor fields (``text``) and the
    record's ``index``. ``lengths[i]`` is the length of item ``i``'s ``input_ids``. A record
    left with no scored token (every label -100, e.g. an answer cut off by ``max_length``)
    is an error that names it, found here rather than in the middle of training."""

    def __init__(self, records: Sequence[dict], collator):
        self.records = list(records)
        self.pad_id = int(getattr(collator, "pad_id", 0) or 0)
        self.items: List[Dict[str, Any]] = []
        for i, r in enumerate(self.records):
            b = collator([r])
            item: Dict[str, Any] = {INDEX: i}
            for k, v in b.items():
                if isinstance(v, torch.Tensor):
                    item[k] = v[0]
                else:
                    item[k] = v[0] if isinstance(v, (list, tuple)) and len(v) == 1 else v
            for k in [k for k in item if k.endswith("labels")]:
                if not bool((item[k] != IGNORE).any()):
                    raise DataError(f"Record {i} has no scored token in {k!r} (question {r.get('question', '')!r:.80}): "
                                    "raise max_length or shorten the prompt, or drop the record.")
            self.items.append(item)
        self.lengths = [int(it["input_ids"].shape[-1]) for it in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        return self.items[i]


class PadCollator:
    """Pads items of :class:`TokenizedRecords` into a batch; calls no tokenizer. Sequence
    fields are padded on the right to :func:`padded_length` of the longest in the batch
    (``edges``: the loader's bucket lengths; ``None`` pads to the longest), fixed-size
    tensors are stacked, other fields listed, and ``index`` is a long tensor."""

    #: the batches were validated when the records were encoded (see TokenizedRecords)
    validated = True

    def __init__(self, pad_id: int, edges: Optional[Sequence[int]] = None, multiple: int = 8):
        self.pad_id, self.edges, self.multiple = pad_id, list(edges) if edges else None, multiple

    def __call__(self, items: List[Dict[str, Any]]) -> Dict[str, Any]:
        out: Dict[str, Any] = {INDEX: torch.tensor([it[INDEX] for it in items], dtype=torch.long)}
        for k in items[0]:
            if k == INDEX:
                continue
            vals = [it[k] for it in items]
            if not isinstance(vals[0], torch.Tensor):
                out[k] = vals
            elif vals[0].dim() == 1 and k.endswith(("input_ids", "attention_mask", "labels")):
                longest = max(v.shape[0] for v in vals)
                n = padded_length(longest, self.edges, self.multiple) if self.edges else longest
                t = torch.full((len(vals), n), pad_value(k, self.pad_id), dtype=vals[0].dtype)
                for j, v in enumerate(vals):
                    t[j, :v.shape[0]] = v
                out[k] = t
            else:
                out[k] = torch.stack(vals)
        return out


class BucketBatchSampler(torch.utils.data.Sampler):
    """Batches of samples of one bucket length, in a random order each epoch.

    Samples are shuffled and assigned to the smallest edge that holds them. Going from the
    shortest bucket to the longest, each bucket's samples (and the shorter ones carried up
    from the buckets before) are sorted by length and cut into full batches from the longest
    down, each starting at a sample of the bucket (so that it pads to the bucket's length);
    what is left is carried up. The samples left after the last bucket are cut the same way,
    each batch sized for the bucket of its longest sample, the last one partial. Batch size per bucket: ``max_tokens // edge`` sequences (a token budget, at least
    one) or ``batch_size``. Every sample appears once per epoch, and an epoch has at most
    ``len(edges) + 1`` distinct (batch, length) shapes."""

    def __init__(self, lengths: Sequence[int], edges: Sequence[int], batch_size: Optional[int] = None,
                 max_tokens: Optional[int] = None, seed: int = 0):
        if (batch_size is None) == (max_tokens is None):
            raise ValueError("Expected exactly one of batch_size (sequences per batch) and max_tokens (padded tokens "
                             "per batch).")
        if (batch_size is not None and batch_size < 1) or (max_tokens is not None and max_tokens < 1):
            raise ValueError(f"Expected a positive batch size or token budget, got {batch_size or max_tokens}.")
        self.lengths, self.edges = list(lengths), sorted(edges)
        if max(self.lengths) > self.edges[-1]:
            raise DataError(f"The longest sample ({max(self.lengths)} tokens) is longer than the last bucket "
                            f"({self.edges[-1]}).")
        self.batch_size, self.max_tokens = batch_size, max_tokens
        self.generator = torch.Generator().manual_seed(seed)
        self._bucket = [next(k for k, e in enumerate(self.edges) if e >= n) for n in self.lengths]

    def size(self, k: int) -> int:
        return self.batch_size if self.batch_size is not None else max(1, self.max_tokens // self.edges[k])

    def batches(self, order: Sequence[int]) -> List[List[int]]:
        by_bucket: List[List[int]] = [[] for _ in self.edges]
        for i in order:
            by_bucket[self._bucket[i]].append(i)
        out, carry = [], []
        for k, own in enumerate(by_bucket):
            pool = sorted(carry + own, key=lambda i: self.lengths[i], reverse=True)  # stable: shuffled ties
            s = self.size(k)
            n_full = min(len(pool) // s, -(-len(own) // s))  # each batch starts at one of the bucket's samples
            out += [pool[j * s:(j + 1) * s] for j in range(n_full)]
            carry = pool[n_full * s:]
        j = 0  # the rest: each batch sized for the bucket of its longest sample; only the last is partial
        while j < len(carry):
            s = self.size(self._bucket[carry[j]])
            out.append(carry[j:j + s])
            j += s
        return out

    def __len__(self) -> int:
        return len(self.batches(range(len(self.lengths))))

    def __iter__(self):
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        batches = self.batches(order)
        for b in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[b]
