"""The select stage on CLIP and text-to-image diffusion models: the gradient- and
error-based selectors return exactly k dataset indices (the same for a shuffled loader), the
per-sample gradients they use are each sample's own (CLIP: they sum to the batch loss's
gradient; diffusion: a sample's gradient does not depend on its batch), and on a planted
fixture (pairs whose caption is wrong, images unlike the rest of the request) they rank the
planted samples first."""

import copy

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from erasus.core.exceptions import UnsupportedModelError
from erasus.core.registry import build
from erasus.models import wrap
from erasus.selectors.lm_gradients import per_sample_gradients

SELECTORS = ("gradient_norm", "influence", "tracin", "craig", "grad_match", "glister", "data_shapley")
COLOURS = {"red": (1, -1, -1), "green": (-1, 1, -1), "blue": (-1, -1, 1)}
NAMES = list(COLOURS)
PLANTED = 6


def _squares(n_per, seed, size):
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for c, name in enumerate(NAMES):
        base = torch.tensor(COLOURS[name], dtype=torch.float).view(3, 1, 1).expand(3, size, size)
        xs.append(base + 0.3 * torch.randn(n_per, 3, size, size, generator=g))
        ys += [c] * n_per
    return torch.cat(xs), torch.tensor(ys)


@pytest.fixture(scope="module")
def clip():
    from erasus.models.clip import toy_clip, train_clip

    captions = [f"a photo of a {n} square" for n in NAMES]
    model, tok = toy_clip(captions)
    ids = tok(captions, padding="max_length", max_length=8, return_tensors="pt").input_ids
    x, y = _squares(48, 0, 16)
    train_clip(model, DataLoader(TensorDataset(x, ids[y]), batch_size=32, shuffle=True,
                                 generator=torch.Generator().manual_seed(0)), steps=200)
    model.eval()
    # the request: 24 red squares with their caption, then 6 whose caption is wrong (planted)
    xr, _ = _squares(10, 5, 16)
    red = xr[:10].repeat(3, 1, 1, 1)[:24 + PLANTED]
    text = torch.cat([ids[[0] * 24], ids[[1, 2] * (PLANTED // 2)]])
    data = TensorDataset(red, text)
    ordered = DataLoader(data, batch_size=10)
    shuffled = DataLoader(data, batch_size=10, shuffle=True, generator=torch.Generator().manual_seed(3))
    return model, ordered, shuffled


@pytest.fixture(scope="module")
def diffusion():
    pytest.importorskip("diffusers")
    from test_diffusion import trained_toy  # the diffusion tests' colour model, trained once per session

    model = copy.deepcopy(trained_toy())
    # the request: 24 red squares prompted "a red square", then 6 whose top half is in the opposite
    # colour (planted: images unlike anything the model learned; a prompt mismatch alone hardly
    # moves this small model's loss, measured 0.250 vs 0.248, since x_t shows the colour)
    xr, _ = _squares(24, 7, 8)
    odd = xr[:PLANTED].clone()
    odd[:, :, :4] *= -1
    request = [(xr[i], "a red square") for i in range(24)] + [(odd[i], "a red square") for i in range(PLANTED)]
    ordered = DataLoader(request, batch_size=8)
    shuffled = DataLoader(request, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(3))
    return model, ordered, shuffled


@pytest.mark.parametrize("family", ["clip", "diffusion"])
@pytest.mark.parametrize("name", SELECTORS + ("el2n",))
def test_selector_returns_k_indices_the_same_for_a_shuffled_loader(family, name, clip, diffusion):
    model, ordered, shuffled = {"clip": clip, "diffusion": diffusion}[family]
    if name == "el2n" and family == "diffusion":
        with pytest.raises(UnsupportedModelError, match="diffusion.*predicts noise"):
            build("selector", name).select(model, ordered, k=8)
        return
    a = build("selector", name).select(model, ordered, k=8)
    b = build("selector", name).select(model, shuffled, k=8)
    assert len(a.indices) == 8 and len(set(a.indices.tolist())) == 8
    assert sorted(a.indices.tolist()) == sorted(b.indices.tolist())
    assert np.isfinite(a.scores).all()


@pytest.mark.parametrize("family, name", [("clip", "gradient_norm"), ("clip", "el2n"), ("diffusion", "gradient_norm")])
def test_the_planted_samples_rank_first(family, name, clip, diffusion):
    """Pairs with a wrong caption, and images unlike the rest, carry the largest gradients and
    errors: the top of the ranking is the planted samples (EL2N does not apply to diffusion
    models: tested above)."""
    model, ordered, _ = {"clip": clip, "diffusion": diffusion}[family]
    top = build("selector", name).select(model, ordered, k=PLANTED).indices
    n = len(ordered.dataset)
    assert set(top.tolist()) == set(range(n - PLANTED, n)), sorted(top.tolist())


def test_clip_per_sample_gradients_sum_to_the_batch_gradient(clip):
    model, ordered, _ = clip
    a = wrap(model)
    G = per_sample_gradients(a, ordered, "all", dim=None)
    params = [p for p in model.parameters() if p.requires_grad]
    batch = next(iter(ordered))
    loss = a.per_sample_loss(batch).sum()
    want = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                      for g, p in zip(torch.autograd.grad(loss, params, allow_unused=True), params)])
    got = G[:len(batch[0])].sum(0)
    # float32 sums in another order (one backward per sample vs one per batch): measured 4.5e-4
    # of the gradient's norm at one thread; leaving out one of the 10 samples: 11.9 times its norm
    assert (got - want).norm() <= 2e-3 * want.norm()
    assert (got - want).abs().max() <= 2e-3 * want.abs().max()
    assert (G[:10].norm(dim=1) > 0).all() and not torch.allclose(G[0], G[1])


def test_a_diffusion_samples_gradient_does_not_depend_on_its_batch(diffusion):
    model, ordered, _ = diffusion
    a = wrap(model)
    whole = per_sample_gradients(a, ordered, "all", dim=256)
    ones = per_sample_gradients(a, DataLoader(ordered.dataset, batch_size=1), "all", dim=256)
    assert torch.allclose(whole, ones, atol=1e-5)
    other_seed = per_sample_gradients(a, ordered, "all", dim=256, seed=1)
    assert not torch.allclose(whole, other_seed)  # the draws (and the sketch) follow the seed


def test_auto_parameters_of_a_large_clip_or_diffusion_model_are_the_concept_layers(clip, diffusion, monkeypatch):
    """Above the exact-gradient budget, "auto" takes CLIP's two projections and the UNet's
    cross-attention (the unprojected gradient's length says which parameters were taken)."""
    import erasus.selectors.lm_gradients as lg
    from torch.utils.data import Subset

    monkeypatch.setattr(lg, "AUTO_MAX_PARAMS", 1000)
    for (model, ordered, _), parts in ((clip, ("visual_projection", "text_projection")), (diffusion, ("attn2",))):
        G = lg.per_sample_gradients(wrap(model), DataLoader(Subset(ordered.dataset, range(4)), batch_size=4,
                                                            collate_fn=ordered.collate_fn), dim=None)
        want = sum(p.numel() for n, p in model.named_parameters() if any(x in n for x in parts))
        assert G.shape == (4, want) and want < sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_discovery_by_gradient_finds_the_planted_images_from_two_examples(diffusion):
    """Forget-set discovery on a diffusion model: given two of the odd images, gradient
    similarity ranks the other four planted ones right after them, ahead of the 24 others."""
    from erasus.selectors import discover

    model, ordered, _ = diffusion
    n = len(ordered.dataset)
    examples = [ordered.dataset[n - 1], ordered.dataset[n - 2]]
    found = discover(model, ordered, examples=DataLoader(examples, batch_size=2), method="gradient")
    assert set(found.order[:PLANTED].tolist()) == set(range(n - PLANTED, n)), found.order[:PLANTED]


@pytest.fixture(scope="module")
def speech():
    """A small Whisper trained on one-word utterances; the request: 24 utterances of word 0 with
    their transcript, then 6 whose transcript names another word (planted mislabels)."""
    pytest.importorskip("transformers")
    from erasus.data.synthetic import spoken_records
    from erasus.models.training import train_steps
    from test_media import whisper

    model = whisper()
    model.train()
    train_steps(wrap(model).loss, list(model.parameters()),
                DataLoader(spoken_records(32, 0), batch_size=32, shuffle=True,
                           generator=torch.Generator().manual_seed(0)), 200, 3e-3)
    model.eval()
    word0 = [r for r in spoken_records(24 + PLANTED, 4) if int(r["labels"][0]) == 3]
    for r in word0[24:]:
        r["labels"] = r["labels"].clone()
        r["labels"][0] = 4
    ordered = DataLoader(word0, batch_size=8)
    shuffled = DataLoader(word0, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(3))
    return model, ordered, shuffled


@pytest.mark.parametrize("name", ("gradient_norm", "el2n", "influence", "tracin"))
def test_speech_to_text_selectors_find_the_mislabelled_utterances(name, speech):
    """Whisper (the speech-to-text family, through its transcript's NLL): the selectors return k
    indices, the same for a shuffled loader, and the utterances whose transcript is wrong carry
    the largest gradients and errors, so they rank first."""
    model, ordered, shuffled = speech
    a = build("selector", name).select(model, ordered, k=PLANTED)
    b = build("selector", name).select(model, shuffled, k=PLANTED)
    assert sorted(a.indices.tolist()) == sorted(b.indices.tolist())
    if name in ("gradient_norm", "el2n"):
        n = len(ordered.dataset)
        assert set(a.indices.tolist()) == set(range(n - PLANTED, n)), sorted(a.indices.tolist())
