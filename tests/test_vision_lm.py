"""Image-text-to-text models (a small LLaVA built from a config): "what colour is the square ?"
answered from the image. NPO with the vision side frozen, called bare, must stop the model
answering "red" as a model retrained without red squares does, and keep the other answers."""
import warnings

import pytest
import torch
from torch.utils.data import DataLoader

transformers = pytest.importorskip("transformers")

from erasus.models import VisionLMAdapter, wrap  # noqa: E402
from erasus.models.causal_lm import word_tokenizer  # noqa: E402
from erasus.models.training import train_steps  # noqa: E402
from erasus.unlearners import MultimodalUnlearner, VLMUnlearner  # noqa: E402

COLOURS = {"red": (1, -1, -1), "green": (-1, 1, -1), "blue": (-1, -1, 1), "yellow": (1, 1, -1)}
QUESTION = "what colour is the square ?"
TOK = word_tokenizer([QUESTION] + list(COLOURS))
TOK.add_special_tokens({"additional_special_tokens": ["<image>"]})
IMAGE = TOK.convert_tokens_to_ids("<image>")


def records(n_per, seed):
    """Causal-LM records with pixel_values: 4 image tokens (a 16×16 image in 8×8 patches), the
    question, and the colour word and end token as the scored answer."""
    g = torch.Generator().manual_seed(seed)
    q = TOK(QUESTION)["input_ids"]
    out = []
    for name, c in COLOURS.items():
        a = TOK(name)["input_ids"] + [TOK.eos_token_id]
        ids = torch.tensor([IMAGE] * 4 + q + a)
        labels = torch.tensor([-100] * (4 + len(q)) + a)
        for _ in range(n_per):
            x = torch.tensor(c, dtype=torch.float).view(3, 1, 1).expand(3, 16, 16) + 0.5 * torch.randn(3, 16, 16, generator=g)
            out.append({"pixel_values": x, "input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
                        "colour": name})
    return out


def collate(rs):
    return {k: torch.stack([r[k] for r in rs]) for k in ("pixel_values", "input_ids", "attention_mask", "labels")}


def llava():
    torch.manual_seed(0)
    vision = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                           num_attention_heads=4, image_size=16, patch_size=8, num_channels=3)
    text = transformers.LlamaConfig(vocab_size=len(TOK), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=32,
                                    pad_token_id=TOK.pad_token_id)
    return transformers.LlavaForConditionalGeneration(transformers.LlavaConfig(
        vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_index=IMAGE, vision_feature_layer=-1))


def fit(rs):
    m = llava()
    a = wrap(m)
    m.train()
    train_steps(a.loss, list(m.parameters()), DataLoader(rs, batch_size=16, shuffle=True, collate_fn=collate,
                                                          generator=torch.Generator().manual_seed(0)), 200, 3e-3)
    return m.eval()


def answer_accuracy(model, rs):
    with torch.no_grad():
        return float(wrap(model).loss_and_accuracy(collate(rs))[1].mean())


@pytest.fixture(scope="module")
def llavas():
    train = records(32, 0)
    return train, fit(train), fit([r for r in train if r["colour"] != "red"])


def vision_unchanged(a, b):
    return all(torch.equal(p, q) for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters())
               if "language_model" not in n and "lm_head" not in n)


@pytest.mark.parametrize("lora", [False, True])
def test_npo_with_the_vision_side_frozen_forgets_an_answer_like_retraining(llavas, lora):
    train, original, retrained = llavas
    test = records(16, 1)
    t_forget = [r for r in test if r["colour"] == "red"]
    t_other = [r for r in test if r["colour"] != "red"]
    assert answer_accuracy(original, t_forget) > 0.9 and answer_accuracy(retrained, t_forget) < 0.1
    u = MultimodalUnlearner.from_model(original, lora=lora)
    assert type(u) is VLMUnlearner and u.strategy.registered_name == ("lora_unlearning" if lora else "npo")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u.fit(DataLoader([r for r in train if r["colour"] == "red"], batch_size=16, shuffle=True, collate_fn=collate),
              DataLoader([r for r in train if r["colour"] != "red"], batch_size=16, shuffle=True, collate_fn=collate),
              progress=False)
    assert answer_accuracy(u.model, t_forget) <= answer_accuracy(retrained, t_forget) + 0.05
    assert answer_accuracy(u.model, t_other) >= answer_accuracy(retrained, t_other) - 0.05
    assert vision_unchanged(original, u.model)
    assert all(p.requires_grad for p in original.parameters()), "the caller's model was changed"


def test_the_adapter_loss_is_the_models_own(llavas):
    _, original, _ = llavas
    batch = collate(records(2, 3))
    a = wrap(original)
    assert isinstance(a, VisionLMAdapter)
    with torch.no_grad():  # equal answer lengths: the mean of per-sample means is the token mean
        assert torch.allclose(a.per_sample_loss(batch).mean(), original(**batch).loss, atol=1e-5)
    from erasus.core.exceptions import DataError

    with pytest.raises(DataError, match="pixel_values"):
        a.per_sample_loss({k: v for k, v in batch.items() if k != "pixel_values"})
