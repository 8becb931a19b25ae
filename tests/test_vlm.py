"""CLIP unlearning on a small CLIP trained here: six coloured squares and their captions. The
forgotten colour must lose its zero-shot accuracy as a model retrained without it does, the
other colours must keep theirs, and plain gradient ascent at the same rate must show the
forgetting cascade that modality decoupling avoids."""
import copy
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from erasus.core.exceptions import ConfigError, DataError
from erasus.metrics.clip import retrieval_recall, zero_shot_accuracy
from erasus.models.clip import CLIPAdapter, toy_clip, train_clip
from erasus.unlearners import ErasusUnlearner, MultimodalUnlearner, VLMUnlearner

COLOURS = {"red": (1, -1, -1), "green": (-1, 1, -1), "blue": (-1, -1, 1), "yellow": (1, 1, -1),
           "cyan": (-1, 1, 1), "magenta": (1, -1, 1)}
NAMES = list(COLOURS)
CAPTIONS = [f"a photo of a {n} square" for n in NAMES]


def squares(n_per, seed, exclude=()):
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for c, name in enumerate(NAMES):
        if name in exclude:
            continue
        base = torch.tensor(COLOURS[name], dtype=torch.float).view(3, 1, 1).expand(3, 16, 16)
        xs.append(base + 0.5 * torch.randn(n_per, 3, 16, 16, generator=g))
        ys += [c] * n_per
    return torch.cat(xs), torch.tensor(ys)


@pytest.fixture(scope="module")
def world():
    model, tok = toy_clip(CAPTIONS)
    ids = tok(CAPTIONS, padding="max_length", max_length=8, return_tensors="pt").input_ids
    loader = lambda x, y: DataLoader(TensorDataset(x, ids[y]), batch_size=32, shuffle=True,
                                     generator=torch.Generator().manual_seed(0))
    x, y = squares(64, 0)
    original = train_clip(copy.deepcopy(model), loader(x, y), steps=300)
    xg, yg = squares(64, 0, exclude=("red",))
    retrained = train_clip(copy.deepcopy(model), loader(xg, yg), steps=300)
    red = y == 0
    forget = DataLoader(TensorDataset(x[red], ids[y[red]]), batch_size=16, shuffle=True,
                        generator=torch.Generator().manual_seed(1))
    retain = DataLoader(TensorDataset(x[~red], ids[y[~red]]), batch_size=32, shuffle=True,
                        generator=torch.Generator().manual_seed(2))
    xt, yt = squares(32, 1)
    tr = yt == 0
    tests = {"forget": DataLoader(TensorDataset(xt[tr], yt[tr]), batch_size=64),
             "others": DataLoader(TensorDataset(xt[~tr], yt[~tr]), batch_size=64)}
    labelled = DataLoader(TensorDataset(x, y), batch_size=64)
    return dict(original=original, retrained=retrained, ids=ids, forget=forget, retain=retain, tests=tests,
                labelled=labelled, test_labelled=DataLoader(TensorDataset(xt, yt), batch_size=64))


def accuracies(model, w):
    a = CLIPAdapter(model, w["ids"])
    return {k: zero_shot_accuracy(a, v) for k, v in w["tests"].items()}


def unlearn(w, strategy, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = VLMUnlearner(w["original"], strategy=strategy, strategy_kwargs=kw, class_prompts=w["ids"])
        u.fit(w["forget"], None if strategy == "gradient_ascent" else w["retain"], progress=False)
    return u


def pair_similarity(model, loader):
    a = CLIPAdapter(model)
    with torch.no_grad():
        sims = [(a.image_embeddings(x) * a.text_embeddings(ids)).sum(-1) for x, ids in loader]
    return float(torch.cat(sims).mean())


@pytest.mark.parametrize("name", ["modality_decoupling", "contrastive_unlearning"])
def test_each_clip_method_forgets_the_pairs_and_keeps_the_rest(world, name):
    """Each method at its defaults: forget pairs' similarity falls more than retain pairs', the
    forgotten colour's zero-shot accuracy falls to the retrained model's, the others keep theirs."""
    before, gold = accuracies(world["original"], world), accuracies(world["retrained"], world)
    model = unlearn(world, name).model
    after = accuracies(model, world)
    drop_f = pair_similarity(world["original"], world["forget"]) - pair_similarity(model, world["forget"])
    drop_r = pair_similarity(world["original"], world["retain"]) - pair_similarity(model, world["retain"])
    assert drop_f > drop_r + 0.1, (name, drop_f, drop_r)
    assert after["forget"] <= gold["forget"] + 0.1, (name, after)
    assert after["others"] >= before["others"] - 0.05, (name, after)


def test_the_null_space_projection_hides_the_class_from_zero_shot_but_not_from_a_probe(world):
    """What the projection promises and no more: zero-shot scores for red fall to 0, the image
    features before the projection are unchanged, so a linear probe still finds red."""
    from erasus.metrics.clip import probe_accuracy

    model = unlearn(world, "clip_nullspace").model
    after = accuracies(model, world)
    assert after["forget"] == 0.0 and after["others"] >= 0.7, after  # the cost in a 16-dim space: its limits
    probe = lambda m: probe_accuracy(CLIPAdapter(m), world["labelled"], world["test_labelled"], classes=[0])
    assert probe(model) == probe(world["original"]) >= 0.9
    old, new = world["original"].state_dict(), model.state_dict()
    assert [k for k in old if not torch.equal(old[k], new[k])] == ["visual_projection.weight"]
    # the closed form: every image's similarity to the forgotten caption is exactly 0
    a = CLIPAdapter(model, world["ids"])
    with torch.no_grad():
        x = torch.cat([b[0] for b in world["test_labelled"]])
        assert a.logits((x, torch.zeros(len(x), dtype=torch.long)))[:, 0].abs().max() < 1e-4


def test_the_protected_projection_leaves_the_retained_scores_exactly(world):
    a0 = CLIPAdapter(world["original"], world["ids"])
    a1 = CLIPAdapter(unlearn(world, "clip_nullspace", protect_retain=True).model, world["ids"])
    with torch.no_grad():
        x = torch.cat([b[0] for b in world["test_labelled"]])
        y = torch.zeros(len(x), dtype=torch.long)
        # image embeddings are renormalised after the projection: compare unnormalised scores
        raw = lambda a: _tensor_features(a, x) @ a.text_embeddings(world["ids"]).T
        assert torch.allclose(raw(a0)[:, 1:], raw(a1)[:, 1:], atol=1e-5)
        assert not torch.allclose(a0.logits((x, y))[:, 0], a1.logits((x, y))[:, 0])


def _tensor_features(adapter, x):
    from erasus.models.clip import _tensor

    return _tensor(adapter.model.get_image_features(pixel_values=x)).float()


def test_modality_decoupling_forgets_like_retraining_without_the_cascade(world):
    before, gold = accuracies(world["original"], world), accuracies(world["retrained"], world)
    assert before["forget"] > 0.9 and before["others"] > 0.9 and gold["forget"] < 0.2, (before, gold)
    snapshot = copy.deepcopy(world["original"].state_dict())
    md = accuracies(unlearn(world, "modality_decoupling").model, world)  # the defaults, bare call
    assert md["forget"] <= gold["forget"] + 0.1, md
    assert md["others"] >= before["others"] - 0.05, md
    assert all(torch.equal(v, snapshot[k]) for k, v in world["original"].state_dict().items())
    # plain gradient ascent at the same rate, both towers, no alignment term: the cascade
    ga = accuracies(unlearn(world, "gradient_ascent", lr=1e-4).model, world)
    assert ga["others"] <= md["others"] - 0.1, (ga, md)


def test_the_towers_train_at_their_own_rates(world):
    u = unlearn(world, "modality_decoupling", vision_lr_factor=0.0)
    old, new = world["original"].state_dict(), u.model.state_dict()
    vision = [k for k in old if k.startswith(("vision_model", "visual_projection"))]
    text = [k for k in old if k.startswith(("text_model", "text_projection"))]
    assert all(torch.equal(old[k], new[k]) for k in vision)
    assert any(not torch.equal(old[k], new[k]) for k in text)
    assert torch.equal(old["logit_scale"], new["logit_scale"])


def test_evaluate_compares_with_the_original_and_the_retrained_model(world):
    u = unlearn(world, "modality_decoupling")
    rep = u.evaluate(world["forget"], world["retain"], zero_shot=world["tests"], gold_model=world["retrained"])
    assert set(rep) == {"unlearned", "original", "retrained"}
    assert rep["original"]["forget_zero_shot_acc"] > 0.9 and rep["unlearned"]["forget_zero_shot_acc"] < 0.3
    assert rep["unlearned"]["retain_i2t@1"] >= rep["original"]["retain_i2t@1"] - 0.05


def test_zero_shot_class_forgetting_is_verified_like_a_classifier(world):
    """A CLIP model used as a zero-shot classifier (its adapter holds the class prompts), red
    forgotten: the verification entry points read labelled images as a classifier's samples
    (labels, correctness over the class prompts; class forgetting inferred), so the untouched
    original FAILs and a model retrained without red from another seed PASSes in each, as the
    classifier cheat gallery requires. (They read every label as 0 and every accuracy as NaN,
    and failed the retrained model as "sample forgetting".)"""
    from erasus.certification import UnlearningVerificationSuite, UnlearningVerifier
    from erasus.core.stats import split_stats
    from erasus.evaluation import UnlearningBenchmark

    ids = world["ids"]
    xg, yg = squares(64, 0, exclude=("red",))
    other = train_clip(toy_clip(CAPTIONS, seed=1)[0], DataLoader(
        TensorDataset(xg, ids[yg]), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(1)), steps=300)
    x, y = squares(64, 0)
    xt, yt = squares(32, 1)
    red = y == 0
    forget = DataLoader(TensorDataset(x[red], y[red]), batch_size=16)
    retain = DataLoader(TensorDataset(x[~red], y[~red]), batch_size=32)
    test = DataLoader(TensorDataset(xt, yt), batch_size=32)
    a = lambda m: CLIPAdapter(m, ids)  # noqa: E731

    st = split_stats(a(world["original"]), test, with_entropy=True)  # a classifier's statistics, against a direct count
    logits = torch.cat([a(world["original"]).logits((xb, yb)) for xb, yb in test])
    assert np.array_equal(st["label"], yt.numpy())
    assert np.array_equal(st["correct"], (logits.argmax(1) == yt).double().numpy()) and st["correct"].mean() > 0.9
    assert {"phi", "entropy"} <= set(st)

    gold, orig = a(world["retrained"]), a(world["original"])
    for who, cand, want in (("original", world["original"], "FAIL"), ("retrained, seed 1", other, "PASS")):
        v = UnlearningVerifier().verify_all(a(cand), forget, retain, test_loader=test, gold_model=gold,
                                            original_model=orig)
        assert "class forgetting" in str(v) and v.verdict == want, (who, str(v))
        b = UnlearningBenchmark().evaluate(a(cand), forget_data=forget, retain_data=retain, test_data=test,
                                           gold_model=gold, original_model=orig)
        assert b.verdict == want, (who, str(b))
        r = UnlearningVerificationSuite().run(a(cand), forget, retain, test, gold_model=gold, original_model=orig)
        assert r.verdict == want, (who, r.summary())
        assert r.results, "the suite ran no attack"


@pytest.mark.parametrize("name", ["modality_decoupling", "contrastive_unlearning", "clip_nullspace",
                                  "gradient_ascent"])
def test_a_zero_shot_class_is_forgotten_from_labelled_images(world, name):
    """A user whose forget and retain data are a classification data set (image, label) and
    who gives the class prompts: the class falls to the retrained model's zero-shot accuracy.
    The methods built on pairs pair each image with its class's prompt, so their run equals the
    run on those pairs built by hand, weight for weight; the adapter's own loss (gradient
    ascent's forget term, contrastive unlearning's retain term) is the zero-shot cross-entropy
    over the class prompts for labelled images. (The pair methods refused labelled images, and
    gradient ascent raised "zero-shot logits need class prompts" although they were given: the
    strategy re-wrapped the bare model without them.)"""
    ids = world["ids"]
    x, y = squares(64, 0)
    red = y == 0
    order = lambda seed: dict(shuffle=True, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    labelled = (DataLoader(TensorDataset(x[red], y[red]), batch_size=16, **order(1)),
                DataLoader(TensorDataset(x[~red], y[~red]), batch_size=32, **order(2)))
    by_hand = (DataLoader(TensorDataset(x[red], ids[y[red]]), batch_size=16, **order(1)),
               DataLoader(TensorDataset(x[~red], ids[y[~red]]), batch_size=32, **order(2)))
    models = []
    for forget, retain in (labelled, by_hand):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            u = VLMUnlearner(world["original"], strategy=name, class_prompts=ids)
            u.fit(forget, retain, progress=False)
        models.append(u.model)
    if name in ("modality_decoupling", "clip_nullspace"):
        for (k, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values()):
            assert torch.equal(a, b), (name, k)
    after, gold = accuracies(models[0], world), accuracies(world["retrained"], world)
    assert after["forget"] <= gold["forget"] + 0.1, (name, after)
    assert accuracies(world["original"], world)["forget"] > 0.9


def test_an_evaluation_embeds_each_image_once_and_scores_each_pair_on_its_own(world):
    """Every statistic of a split of image-text pairs (the pair's own score, its caption's
    rank among every split's captions, retrieval) comes from one pass of each image through
    the vision tower (it took three), and equals a direct computation."""
    model = copy.deepcopy(world["original"])
    seen = []
    tower = model.get_image_features
    model.get_image_features = lambda pixel_values, **kw: (seen.append(len(pixel_values)),  # noqa: E731
                                                         tower(pixel_values=pixel_values, **kw))[1]
    xt, yt = squares(32, 1)
    holdout = DataLoader(TensorDataset(xt[yt == 0], world["ids"][yt[yt == 0]]), batch_size=16)
    res = ErasusUnlearner(model).evaluate(world["forget"], world["retain"], holdout_data=holdout,
                                          metrics=["accuracy", "mia", "mia_accuracy", "retrieval"])
    sizes = [len(d.dataset) for d in (world["forget"], world["retain"], holdout)]
    assert sum(seen) == sum(sizes), (seen, sizes)

    a = CLIPAdapter(world["original"])
    emb = {k: a.split_embeddings(DataLoader(d.dataset, batch_size=64))
           for k, d in (("forget", world["forget"]), ("retain", world["retain"]), ("holdout", holdout))}
    captions = torch.cat([e[1] for e in emb.values()])
    keys = [k for e in emb.values() for k in e[2]]
    for split in ("forget", "retain"):
        img, txt, own = emb[split]
        best = [keys[j] for j in (img @ captions.T).argmax(1).tolist()]
        assert res[f"{split}_accuracy"] == pytest.approx(np.mean([b == k for b, k in zip(best, own)]))
    scores = {k: (a.scale() * (e[0] * e[1]).sum(-1)).detach().numpy() for k, e in emb.items()}
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(np.r_[np.ones(sizes[0]), np.zeros(sizes[2])], np.r_[scores["forget"], scores["holdout"]])
    assert res["mia_auc"] == pytest.approx(auc, abs=1e-9)
    assert res["retain_i2t@1"] == pytest.approx(retrieval_recall(a, world["retain"])["i2t@1"])


class _Embedder(torch.nn.Module):
    """A CLIP-shaped model whose embeddings are given: images → their first 4 pixels, texts →
    a lookup of their first token."""

    def __init__(self, text_table):
        super().__init__()
        self.logit_scale = torch.nn.Parameter(torch.tensor(0.0))
        self.table = torch.nn.Parameter(text_table)

    def get_image_features(self, pixel_values):
        return pixel_values.flatten(1)[:, :4]

    def get_text_features(self, input_ids, attention_mask=None):
        return self.table[input_ids[:, 0]]


def test_retrieval_recall_matches_a_direct_count():
    g = torch.Generator().manual_seed(0)
    n = 40
    img = torch.randn(n, 4, generator=g)
    table = torch.randn(10, 4, generator=g)
    caption = torch.randint(0, 10, (n,), generator=g)  # repeated captions, as with class captions
    x = torch.zeros(n, 3, 2, 2)
    x.view(n, -1)[:, :4] = img
    ids = torch.stack([caption, torch.zeros(n, dtype=torch.long)], 1)
    got = retrieval_recall(CLIPAdapter(_Embedder(table)), DataLoader(TensorDataset(x, ids), batch_size=7), ks=(1, 3))
    vi, vt = torch.nn.functional.normalize(img, dim=1), torch.nn.functional.normalize(table[caption], dim=1)
    sim = vi @ vt.T
    for k in (1, 3):
        i2t = sum(bool((caption[sim[i].topk(k).indices] == caption[i]).any()) for i in range(n)) / n
        t2i = sum(bool((caption[sim[:, j].topk(k).indices] == caption[j]).any()) for j in range(n)) / n
        assert got[f"i2t@{k}"] == pytest.approx(i2t) and got[f"t2i@{k}"] == pytest.approx(t2i)


def test_multimodal_unlearner_picks_the_family(world):
    from erasus.models.causal_lm import gpt2_lm, word_tokenizer

    assert type(MultimodalUnlearner.from_model(world["original"])) is VLMUnlearner
    assert type(MultimodalUnlearner.from_model(torch.nn.Linear(3, 2))) is ErasusUnlearner
    tok = word_tokenizer(["a b c"])
    assert type(MultimodalUnlearner.from_model(gpt2_lm(tok), tokenizer=tok)).__name__ == "LLMUnlearner"
    with pytest.raises(ConfigError, match="Supported families"):
        MultimodalUnlearner.from_model("not a model")
    with pytest.raises(TypeError, match="from_model"):
        MultimodalUnlearner(world["original"])


def test_bad_input_gets_clear_errors(world):
    with pytest.raises(ConfigError, match="CLIP"):
        VLMUnlearner(torch.nn.Linear(3, 2))
    with pytest.raises(ConfigError, match="class prompts"):
        CLIPAdapter(world["original"]).logits((torch.zeros(2, 3, 16, 16), torch.tensor([0, 1])))
    with pytest.raises(DataError, match="class_prompts"):
        CLIPAdapter(world["original"], class_prompts=torch.zeros(1, 8, dtype=torch.long))
    labelled = DataLoader(TensorDataset(torch.zeros(4, 3, 16, 16), torch.zeros(4, dtype=torch.long)), batch_size=2)
    with pytest.raises(DataError, match="image-text pairs.*class prompts"):  # nothing to pair the labels with
        VLMUnlearner(world["original"]).fit(labelled, world["retain"], progress=False)
    beyond = DataLoader(TensorDataset(torch.zeros(4, 3, 16, 16), torch.full((4,), 6)), batch_size=2)
    with pytest.raises(DataError, match=r"labels in \[0, 5\] for 6 class prompts"):
        VLMUnlearner(world["original"], class_prompts=world["ids"]).fit(beyond, world["retain"], progress=False)
    with pytest.raises(DataError, match="CLIP batch"):
        CLIPAdapter(world["original"]).split(("text",))


def test_the_adapter_loss_is_the_models_own_clip_loss(world):
    x, ids = next(iter(world["retain"]))
    with torch.no_grad():
        own = world["original"](input_ids=ids, pixel_values=x, return_loss=True).loss
        ours = CLIPAdapter(world["original"]).per_sample_loss((x, ids)).mean()
    assert torch.allclose(own, ours, atol=1e-5)


@pytest.mark.parametrize("name", ["scrub", "bad_teacher", "undial"])
def test_distillation_methods_refuse_clip_with_a_clear_error(world, name):
    """They distil per-sample or per-token output distributions; a CLIP model gives them none
    for image-text pairs (they used to fail asking for class prompts even when given them), so
    they refuse it and name the families they support."""
    from erasus.exceptions import UnsupportedModelError

    u = VLMUnlearner(world["original"], strategy=name, class_prompts=world["ids"])
    with pytest.raises(UnsupportedModelError, match="supports model families.*'classifier'.*got a 'clip' model"):
        u.fit(world["forget"], world["retain"], progress=False)


def test_an_unlearned_clip_saves_with_its_card_and_reloads(world, tmp_path):
    """VLMUnlearner.save_pretrained (the other unlearners had it; this one did not): safetensors
    weights that CLIPModel.from_pretrained reloads to the same zero-shot accuracies, a model card
    naming the method, and an existing folder kept unless overwrite=True."""
    from transformers import CLIPModel

    u = unlearn(world, "modality_decoupling")
    path = u.save_pretrained(tmp_path / "clip-forgot-red")
    assert (path / "model.safetensors").exists() and "modality_decoupling" in (path / "README.md").read_text()
    back = CLIPModel.from_pretrained(path)
    assert all(torch.equal(p, q) for p, q in zip(back.state_dict().values(), u.model.state_dict().values()))
    assert accuracies(back, world) == accuracies(u.model, world)
    with pytest.raises(FileExistsError):
        u.save_pretrained(path)
