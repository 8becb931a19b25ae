"""A TOFU world small enough for a CPU: two fictitious authors to forget, four to keep, tiny
GPT-2s trained from scratch on them (the finetuned model) and on the retained authors only
(the gold standard). Real use: load your finetuned model with ``load_causal_lm``."""
import torch
from torch.utils.data import DataLoader

from erasus.data.datasets.tofu import subset_request, tofu_request
from erasus.models.causal_lm import QACollator, gpt2_lm, tofu_texts, word_tokenizer
from erasus.models.training import train_classifier


def train(records, tok, seed, epochs=40):
    model = gpt2_lm(tok, seed=seed)
    loader = DataLoader(records, batch_size=20, shuffle=True, collate_fn=QACollator(tok, max_length=96),
                        generator=torch.Generator().manual_seed(seed))
    return train_classifier(model, loader, epochs=epochs, lr=3e-3, seed=seed, cosine=False).eval()


def tiny_tofu(forget_authors=1, retain_authors=2):
    req = subset_request(tofu_request("forget10"), forget_authors=forget_authors, retain_authors=retain_authors)
    tok = word_tokenizer(tofu_texts(req))
    finetuned = train(req.forget.records + req.retain.records, tok, 0)
    retrained = train(req.retain.records, tok, 1)
    return req, tok, finetuned, retrained
