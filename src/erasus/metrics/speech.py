"""Word error rate of speech-to-text models (``jiwer``), on forget and retain utterances."""
from __future__ import annotations

from typing import List, Sequence

import torch

from ..core.exceptions import ConfigError, DataError


@torch.no_grad()
def greedy_transcripts(model, input_features: torch.Tensor, start_token: int, end_token: int,
                       max_new_tokens: int = 32) -> List[List[int]]:
    """Greedy decoding of an encoder-decoder speech model (the decoder fed its own argmax from
    ``start_token`` until ``end_token`` or ``max_new_tokens``): token ids per utterance,
    without the start and end tokens. Plain greedy search, so that WER does not depend on a
    checkpoint's generation settings."""
    model.eval()
    x = input_features.to(next(model.parameters()).device)
    enc = model.get_encoder()(x)
    ids = torch.full((len(x), 1), start_token, dtype=torch.long, device=x.device)
    done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(max_new_tokens):
        nxt = model(encoder_outputs=enc, decoder_input_ids=ids).logits[:, -1].argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, end_token), nxt)
        ids = torch.cat([ids, nxt[:, None]], 1)
        done |= nxt == end_token
        if bool(done.all()):
            break
    out = []
    for row in ids[:, 1:].tolist():
        out.append(row[:row.index(end_token)] if end_token in row else row)
    return out


def word_error_rate(model, records: Sequence[dict], tokenizer, start_token: int, end_token: int,
                    max_new_tokens: int = 32, batch_size: int = 32) -> float:
    """Corpus WER (``jiwer``: word substitutions, deletions and insertions over the reference
    words) of ``model``'s greedy transcripts of ``records`` (``input_features`` and the
    reference ``labels``, -100 where padded) against the references, both decoded with
    ``tokenizer``. Compare it on the forget and retain utterances with a retrained model's."""
    try:
        import jiwer
    except ImportError as e:  # pragma: no cover - an install without the extra
        raise ConfigError("Word error rate needs jiwer: pip install jiwer.") from e
    if not records:
        raise DataError("Expected speech records (input_features, labels), got none.")
    hyps, refs = [], []
    for i in range(0, len(records), batch_size):
        chunk = records[i:i + batch_size]
        feats = torch.stack([r["input_features"] for r in chunk])
        for r, hyp in zip(chunk, greedy_transcripts(model, feats, start_token, end_token, max_new_tokens)):
            ref = [t for t in r["labels"].tolist() if t >= 0 and t != end_token]
            refs.append(tokenizer.decode(ref, skip_special_tokens=True).strip())
            hyps.append(tokenizer.decode(hyp, skip_special_tokens=True).strip())
    if not any(refs):
        raise DataError("Every reference transcript is empty.")
    return float(jiwer.wer(refs, hyps))
