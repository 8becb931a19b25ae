"""Concept erasure in a text-to-image diffusion model trained here: a small pixel-space UNet
with cross-attention learns "a red / green / blue square" (8×8 images); a judge (the
dominant colour channel) says which concept an image shows. Each method must lower the
judged presence of the erased concept more than of the others."""
import copy
import functools
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

pytest.importorskip("diffusers")

from erasus.core.exceptions import ConfigError, DataError  # noqa: E402
from erasus.models.diffusion import TextToImage, toy_text_to_image, train_text_to_image  # noqa: E402
from erasus.unlearners import DiffusionUnlearner  # noqa: E402

COLOURS = ["red", "green", "blue"]


def colour_data(n_per=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    imgs, prompts = [], []
    for c, name in enumerate(COLOURS):
        x = -torch.ones(n_per, 3, 8, 8)
        x[:, c] = 1.0
        imgs.append(x + 0.1 * torch.randn(x.shape, generator=g))
        prompts += [f"a {name} square"] * n_per
    return list(zip(torch.cat(imgs), prompts))


@functools.lru_cache(maxsize=None)
def trained_toy() -> TextToImage:
    """The colour model the diffusion tests start from, trained once per session (600 steps,
    about a minute) and shared read-only with the select stage's tests
    (tests/test_family_selectors.py): deep-copy it to change it."""
    data = colour_data()
    loader = DataLoader(data, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    model = toy_text_to_image([p for _, p in data])
    return train_text_to_image(model, loader, steps=600, lr=2e-3)


@pytest.fixture(scope="module")
def toy():
    return trained_toy()


def judged(model, n=32):
    """Share of images generated for each colour that the judge assigns to it."""
    out = {}
    for c, name in enumerate(COLOURS):
        imgs = model.generate([f"a {name} square"] * n, seed=1, guidance_scale=5.0, steps=20)
        out[name] = float((imgs.mean((2, 3)).argmax(1) == c).float().mean())
    return out


@pytest.fixture(scope="module")
def toy_judged(toy):
    """``judged(toy)``, once: the trained model's judged colours, every test's "before"."""
    return judged(toy)


def params_equal(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


METHODS = {
    # ESD on a small model: a larger rate and η than the paper's Stable Diffusion settings (see its limits)
    "esd": ("a red square", dict(lr=1e-3, iterations=80, ddim_steps=20, negative_guidance=3.0), 0.3),
    "uce": ("a red square", {}, 0.3),
    "concept_ablation": ("a red square", dict(lr=1e-3, iterations=80, ddim_steps=20, anchor_images=32), 0.1),
    # SLD steers away from a safety concept that differs from the prompt (the same text would give
    # ε_p = ε_S and no steering, by its construction); its effect is smaller
    "sld": ("red", dict(warmup_steps=2), 0.05),
    # SalUn and AdvUnlearn use preserved prompts (SalUn's retain images, AdvUnlearn's utility term)
    "salun": ("a red square", dict(lr=1e-3, iterations=80, images_per_prompt=16, retain_weight=1.0), 0.3),
    "adv_unlearn": ("a red square", dict(lr=3e-4, iterations=60, ddim_steps=20, warmup=10, attack_steps=5,
                                         negative_guidance=3.0), 0.3),
}
PRESERVING = ("uce", "salun", "adv_unlearn")


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_lowers_the_erased_concept_more_than_the_others(toy, toy_judged, name):
    concept, kw, margin = METHODS[name]
    before = toy_judged
    assert before["red"] > 0.8 and before["green"] > 0.8 and before["blue"] > 0.7, before
    snapshot = copy.deepcopy(toy.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        unl = DiffusionUnlearner(toy, strategy=name, strategy_kwargs=kw)
        res = unl.erase(concept, preserve=["a green square", "a blue square"] if name in PRESERVING else (),
                        anchor="a green square" if name == "concept_ablation" else None, progress=False,
                        check=False)  # judged below; erase's own check is tested on its own
    after = judged(unl.model)
    drop = {k: before[k] - after[k] for k in COLOURS}
    assert drop["red"] > max(drop["green"], drop["blue"]) + margin, (name, before, after)
    assert all(torch.equal(v, snapshot[k]) for k, v in toy.state_dict().items()), "the caller's model changed"
    assert res.strategy == unl.strategy.registered_name and res.config["strategy"] == res.strategy
    if name == "sld":  # inference-time guidance: the weights are the original's
        assert params_equal(unl.model, toy) and unl.model.safety["concept"] == "red"


def test_uce_maps_the_concept_to_the_anchor_in_closed_form(toy):
    unl = DiffusionUnlearner(toy, strategy="uce", strategy_kwargs={"lamb": 1e-4})
    unl.erase("a red square", anchor="a green square", progress=False)
    strat = unl.strategy
    ce, ca = strat._segments(toy, ["a red square"], ["a green square"])
    new_blocks = dict(unl.model.unet.named_modules())
    n = 0
    for name, attn in toy.unet.named_modules():
        if name.endswith("attn2"):
            for proj in ("to_k", "to_v"):
                w_old = getattr(attn, proj).weight.double()
                w_new = getattr(new_blocks[name], proj).weight.double()
                want, got = ca @ w_old.T, ce @ w_new.T
                assert torch.linalg.norm(got - want) <= 0.05 * torch.linalg.norm(want)
                n += 1
    assert n == 8


def test_device_keeps_the_original_for_the_check_and_a_second_erase_starts_from_it(toy):
    """``device=...`` works on a copy of the model on that device and keeps that copy as the
    original: erase's check still compares with it (it once read as an in-place run and measured
    nothing), a second erase starts from the original rather than from the first one's result, and
    the caller's model is untouched."""
    snapshot = copy.deepcopy(toy.state_dict())
    unl = DiffusionUnlearner(toy, strategy="uce", device="cpu")
    first = unl.erase("a red square", preserve=["a green square"])
    assert abs(first.metrics["concept_left"]) < 0.3, first.stop_reason
    second = unl.erase("a red square", preserve=["a green square"])
    assert abs(second.metrics["concept_left"] - first.metrics["concept_left"]) < 1e-4
    assert all(torch.allclose(p, q, atol=1e-5) for p, q in zip(first.model.parameters(), second.model.parameters()))
    assert all(torch.equal(v, snapshot[k]) for k, v in toy.state_dict().items()), "the caller's model changed"


def test_a_saved_model_reloads_and_generates_the_same_images(toy, tmp_path):
    unl = DiffusionUnlearner(toy, strategy="sld", strategy_kwargs={"warmup_steps": 2})
    unl.erase("red", progress=False)
    path = unl.save_pretrained(tmp_path / "erased")
    assert (path / "README.md").read_text().count("sld") >= 1
    back = TextToImage.from_pretrained(path)
    assert back.safety == unl.model.safety
    assert torch.allclose(back.generate(["a red square"] * 4, seed=3, steps=10),
                          unl.generate(["a red square"] * 4, seed=3, steps=10), atol=1e-5)
    with pytest.raises(FileExistsError):
        unl.save_pretrained(path)


def test_bad_input_gets_clear_errors(toy):
    unl = DiffusionUnlearner(toy, strategy="uce")
    with pytest.raises(DataError, match="non-empty"):
        unl.erase([])
    with pytest.raises(DataError, match="non-empty"):
        unl.erase("   ")
    with pytest.raises(DataError, match="disjoint"):
        unl.erase("a red square", preserve=["a red square"])
    with pytest.raises(ConfigError, match="guidance_scale"):
        toy.generate(["a red square"], guidance_scale=500.0)
    with pytest.raises(ConfigError, match="steps"):
        toy.generate(["a red square"], steps=0)
    with pytest.raises(ConfigError, match="anchor"):
        DiffusionUnlearner(toy, strategy="esd").erase("a red square", anchor="a green square")
    with pytest.raises(ConfigError, match="TextToImage|diffusion"):
        DiffusionUnlearner(torch.nn.Linear(2, 2))


def test_cross_attention_maps_follow_the_text_encoding(toy, tmp_path):
    """The word's attention map (erasus.visualization.cross_attention_data) is read at the
    word's tokens: a cheat whose text encoder reads "red" as "green" attends to "red" in "a red
    square" exactly as the original attends to "green" in "a green square", and not as the
    original attends to "red"; the figure draws each model's image above its map."""
    from erasus.visualization import cross_attention_data
    from erasus.visualization.attention import AttentionVisualizer

    assert toy.word_positions("a red square", "red") == [toy.tokenizer("a red square").input_ids.index(
        toy.tokenizer.convert_tokens_to_ids("red"))]
    with pytest.raises(DataError, match="not among the tokens"):
        toy.word_positions("a red square", "purple")
    cheat = copy.deepcopy(toy)
    table = cheat.text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        table[cheat.tokenizer.convert_tokens_to_ids("red")] = table[cheat.tokenizer.convert_tokens_to_ids("green")]
    red = cross_attention_data({"original": toy, "cheat": cheat}, "a red square", "red")
    green = cross_attention_data({"original": toy}, "a green square", "green")
    assert red["original"].shape == (8, 8) and (red["original"] >= 0).all()
    assert np.allclose(red["cheat"], green["original"], atol=1e-6)
    assert not np.allclose(red["original"], green["original"], atol=1e-3)
    fig = AttentionVisualizer(cheat).plot_cross_attention_comparison("a red square", "red", toy,
                                                                     path=tmp_path / "attention", steps=5)
    assert (tmp_path / "attention.png").exists() and len(fig.axes) == 4


def test_the_loss_based_entry_points_refuse_a_text_to_image_model_and_name_its_report():
    """The verifier, the benchmark, the attack suite and evaluate() read per-sample losses and
    accuracies, which do not judge a text-to-image model (a noise prediction at a random
    timestep, no labels: they returned INCONCLUSIVE, or crashed on the prompts); each now
    refuses it before any work and names the erasure report."""
    from erasus.certification import UnlearningVerificationSuite, UnlearningVerifier
    from erasus.core.exceptions import UnsupportedModelError
    from erasus.evaluation import UnlearningBenchmark

    data = colour_data(4)
    model = toy_text_to_image([p for _, p in data])
    forget = DataLoader([d for d in data if "red" in d[1]], batch_size=4)
    retain = DataLoader([d for d in data if "red" not in d[1]], batch_size=4)
    calls = {
        "verifier": lambda: UnlearningVerifier().verify_all(model, forget, retain, retain, original_model=model),
        "benchmark": lambda: UnlearningBenchmark().evaluate(model, forget_data=forget, retain_data=retain,
                                                            holdout_data=retain, gold_model=model),
        "suite": lambda: UnlearningVerificationSuite().run(model, forget, retain, None, retain, gold_model=model),
        "evaluate": lambda: DiffusionUnlearner(model).evaluate(forget, retain, holdout_data=retain),
    }
    for name, call in calls.items():
        with pytest.raises(UnsupportedModelError, match=r"erasure_report.*retrained"):
            call()


def test_a_unet_without_cross_attention_is_refused_by_cross_attention_methods(toy):
    import diffusers

    flat = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=8, mid_block_type=None)
    model = TextToImage(flat, toy.text_encoder, toy.tokenizer, toy.scheduler)
    with pytest.raises(ConfigError, match="cross-attention"):
        DiffusionUnlearner(model, strategy="uce").erase("a red square")


def test_salun_needs_concepts_to_preserve(toy):
    unl = DiffusionUnlearner(toy, strategy="salun")
    assert unl.strategy.registered_name == "salun_generation"  # SalUn's generative variant
    with pytest.raises(DataError, match="preserve"):
        unl.erase("a red square")


def test_a_model_agnostic_loss_trains_on_generated_images_and_leaves_the_rest_of_the_model_whole(toy, toy_judged):
    """``erase`` with gradient ascent (a loss not made for diffusion models) trains on images
    the model draws for the concept, under the concept rule with the prediction guard. Under a
    fixed schedule (before) every prompt came to draw red; under the direction guard green and
    blue were still lost (judged 0.0). The guard stops it before the preserved colours move,
    and a warning says to use a concept-erasure method; with nothing to preserve it is refused."""
    before = toy_judged
    with pytest.warns(UserWarning, match="concept-erasure method"):
        res = DiffusionUnlearner(toy, strategy="gradient_ascent").erase(
            "a red square", preserve=["a green square", "a blue square"], progress=False)
    after = judged(res.model)
    assert after["green"] >= before["green"] - 0.1 and after["blue"] >= before["blue"] - 0.1, (before, after)
    assert res.stop.kind.name == "GUARD" and "preserve_shift" in res.stop_reason, res.stop_reason
    with pytest.raises(DataError, match="not made for diffusion.*esd, uce.*preserve="):
        DiffusionUnlearner(toy, strategy="npo").erase("a red square")
    with pytest.raises(ConfigError, match="images_per_prompt"):
        DiffusionUnlearner(toy, strategy="npo").erase("a red square", preserve=["a green square"], images_per_prompt=0)


def test_a_one_shot_edit_that_moves_the_preserved_prompts_is_undone(toy):
    """SSD (a one-shot edit not made for diffusion models, no stopping rule): on this model it
    took red from 0.91 to 0.00 judged and green from 0.97 to 0.19 with it. ``erase`` measures
    the preserved prompts' shift afterwards and undoes the edit past the guard."""
    from erasus.models.diffusion import PRESERVE_GUARD, preserve_shift

    with pytest.warns(UserWarning, match="undone"):
        res = DiffusionUnlearner(toy, strategy="ssd").erase("a red square", preserve=["a green square", "a blue square"])
    assert res.metrics["preserve_shift"] > PRESERVE_GUARD
    assert params_equal(res.model, toy)
    assert preserve_shift(toy, toy, ["a green square"]) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = colour_data(8)  # the same edit through fit() on given images: undone too, or kept when asked
        undone = DiffusionUnlearner(toy, strategy="ssd").fit(DataLoader(data[:8], batch_size=8),
                                                            DataLoader(data[8:], batch_size=8), progress=False)
        kept = DiffusionUnlearner(toy, strategy="ssd").fit(DataLoader(data[:8], batch_size=8),
                                                          DataLoader(data[8:], batch_size=8), progress=False, guard=False)
    assert params_equal(undone.model, toy) and "undone" in undone.stop_reason
    assert preserve_shift(kept.model, toy, ["a green square", "a blue square"]) > PRESERVE_GUARD


def test_the_advice_after_a_uce_edit_names_its_own_knob_not_uce(toy, monkeypatch):
    """A UCE edit whose preserved prompts' images no longer look like the original's was told to
    "try strategy='uce'"; the advice now names UCE's own preserve_scale."""
    from erasus.models.diffusion import SelfJudge

    monkeypatch.setattr(SelfJudge, "drawn", lambda self, model: (None, {"a green square": 0.2, "a blue square": 1.0}))
    with pytest.warns(UserWarning) as seen:
        DiffusionUnlearner(toy, strategy="uce").erase("a red square", preserve=["a green square", "a blue square"])
    said = " ".join(str(w.message) for w in seen)
    assert "no longer look like" in said and "preserve_scale" in said and "strategy='uce'" not in said, said


def test_the_specifications_fit_call_is_guarded_and_checked_as_erase_is(toy, toy_judged):
    """``DiffusionUnlearner(model=sd_model, strategy="concept_erasure").fit(forget_data=artist_loader,
    retain_data=general_loader)``, the specification's call, with (image, prompt) loaders. Before,
    fit() ran a loss not made for diffusion models on a fixed schedule (gradient ascent left red
    red and turned green red: judged 1.0 and 0.0) and checked nothing (ESD kept 84% of red's
    conditioning, silently). Now the preserved prompts come from the retain loader, the concept
    rule guards the run and the check measures and warns."""
    from erasus.strategies import ESD

    data = colour_data(16)
    artist_loader = DataLoader([d for d in data if "red" in d[1]], batch_size=16)
    general_loader = DataLoader([d for d in data if "red" not in d[1]], batch_size=16)
    assert isinstance(DiffusionUnlearner(model=toy, strategy="concept_erasure").strategy, ESD)
    with pytest.warns(UserWarning, match="probably still generated"):
        res = DiffusionUnlearner(model=toy, strategy="gradient_ascent").fit(
            forget_data=artist_loader, retain_data=general_loader, progress=False)
    after = judged(res.model)
    assert after["green"] >= toy_judged["green"] - 0.1 and after["blue"] >= toy_judged["blue"] - 0.1, after
    assert res.stop.kind.name == "GUARD" and "concept_left" in res.metrics
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # an erasure that worked: measured, and nothing to warn of
        res = DiffusionUnlearner(model=toy, strategy="uce").fit(forget_data=artist_loader, retain_data=general_loader,
                                                                progress=False)
    after = judged(res.model)
    assert after["red"] <= toy_judged["red"] - 0.5 and res.metrics["concept_left"] < 0.5, (after, res.metrics)
    with pytest.raises(DataError, match="both erased and preserved"):
        DiffusionUnlearner(model=toy, strategy="uce").fit(artist_loader, artist_loader)
    # nothing to preserve: nothing guarded or checked the rest, and the user is told
    with pytest.warns(UserWarning, match="no prompts to preserve"):
        res = DiffusionUnlearner(model=toy, strategy="uce").fit(artist_loader)
    assert "nothing preserved" in res.stop_reason


def test_generated_pairs_are_the_models_images_for_each_prompt(toy):
    from erasus.models.diffusion import generated_pairs

    pairs = generated_pairs(toy, ["a red square", "a blue square"], 3, torch.Generator().manual_seed(4), steps=5,
                            batch=4)
    assert [p for _, p in pairs] == ["a red square"] * 3 + ["a blue square"] * 3
    g = torch.Generator().manual_seed(4)
    want = torch.cat([toy.generate(["a red square"] * 3 + ["a blue square"], steps=5, generator=g),
                      toy.generate(["a blue square"] * 2, steps=5, generator=g)])
    assert torch.equal(torch.stack([img for img, _ in pairs]), want)


def test_soft_tokens_equal_the_word_they_stand_for(toy):
    """A soft token with a word's embedding, placed where the word stands, encodes the same
    prompt: the attacks and AdvUnlearn optimise over exactly the text encoder's input space."""
    red = toy.tokenizer.convert_tokens_to_ids("red")
    soft = toy.token_table()[[red]].detach()
    assert torch.equal(toy.encode(["a square"], soft=soft, soft_at=1), toy.encode(["a red square"]))
    assert torch.equal(toy.encode(["red a square"]), toy.encode(["a square"], soft=soft))
    with pytest.raises(ConfigError, match="shape"):
        toy.encode(["a square"], soft=torch.zeros(1, 3))


class ColourJudge(torch.nn.Module):
    """The dominant colour channel of an image."""

    def forward(self, x):
        return x.mean((2, 3))


def train_without_red(seed):
    data = colour_data()
    keep = [d for d in data if "red" not in d[1]]
    loader = DataLoader(keep, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(seed))
    return train_text_to_image(toy_text_to_image([p for _, p in data], seed=seed), loader, steps=600, lr=2e-3, seed=seed)


@pytest.fixture(scope="module")
def retrained():
    return train_without_red(0)


OTHERS = {"a green square": 1, "a blue square": 2}
FAST_ATTACKS = {"prompt_attack": {"n_targets": 4, "steps": 20, "discrete": False},
                "concept_inversion": {"steps": 100, "template": "a {} square"}, "relearning": {"steps": 5}}


def test_a_hidden_concept_fails_the_erasure_report_under_attack(toy, retrained):
    """A cheat that only renames the concept (the word "red" now means "green"): its plain
    prompt draws no red square and the other colours are intact, so a report without attacks
    would pass it; the attacks still reach red in its UNet, where the retrained model has none."""
    from erasus.metrics.diffusion import erasure_report

    cheat = copy.deepcopy(toy)
    table = cheat.text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        table[cheat.tokenizer.convert_tokens_to_ids("red")] = table[cheat.tokenizer.convert_tokens_to_ids("green")]
    rep = erasure_report(cheat, ColourJudge(), "a red square", 0, OTHERS, original=toy, gold_model=retrained,
                         steps=20, attack_kwargs=FAST_ATTACKS)
    assert rep.rows["unlearned"]["erasure"] >= 0.9 and rep.rows["retrained"]["erasure"] >= 0.9, rep.rows
    assert rep.rows["original"]["erasure"] <= 0.2 and rep.rows["original"]["prompt_attack"] <= 0.2, rep.rows
    assert rep.rows["unlearned"]["retention"] >= rep.rows["original"]["retention"] - 0.05
    assert rep.verdict == "FAIL" and any(v.startswith("broken") for v in rep.attacks.values()), rep.to_markdown()
    assert "broken" in rep.to_markdown()


@pytest.mark.slow
def test_a_second_retrained_model_passes_the_erasure_report(toy, retrained):
    """The gold standard judged against another model retrained without the concept (another
    seed) passes, attacks included; without a gold model the same report is inconclusive.
    With -m slow (a second seed of the retrained model: 600 more training steps, 80 s of CI);
    the report's verdict logic for a model that matches the gold is tested on every run by
    test_a_model_matching_the_gold_passes_and_an_untouched_one_fails."""
    from erasus.metrics.diffusion import erasure_report

    other = train_without_red(1)
    images = toy.generate(["a red square"] * 16, seed=5, steps=20)
    rep = erasure_report(other, ColourJudge(), "a red square", 0, OTHERS, gold_model=retrained, attack_images=images,
                         steps=20, attack_kwargs=FAST_ATTACKS, retention_drop=0.1)
    assert rep.verdict == "PASS", rep.to_markdown()
    assert all(v.startswith("survives") for v in rep.attacks.values())
    alone = erasure_report(other, ColourJudge(), "a red square", 0, OTHERS, attack_images=images, steps=20,
                           attacks=("relearning",), attack_kwargs=FAST_ATTACKS)
    assert alone.verdict == "INCONCLUSIVE" and "gold_model" in " ".join(alone.reasons)


def test_a_model_matching_the_gold_passes_and_an_untouched_one_fails():
    """The report's verdict from measured rows (the numbers are of the kind the reports above
    measure): a model within tolerance of the retrained one on erasure and on every attack, and
    within retention_drop of the original's retention, passes; the original, a model an attack
    breaks and one that lost retention fail; without a retrained model the attacks are not
    compared and the verdict is INCONCLUSIVE."""
    from erasus.metrics.diffusion import _judge

    gold = {"erasure": 1.0, "retention": 0.9, "prompt_attack": 1.0, "relearning": 0.55}
    orig = {"erasure": 0.05, "retention": 0.94, "prompt_attack": 0.0, "relearning": 0.0}
    like_gold = {"erasure": 0.94, "retention": 0.9, "prompt_attack": 0.91, "relearning": 0.47}
    attacks = ("prompt_attack", "relearning")

    def verdict(me, gold=gold, attacks=attacks):
        rows = {"unlearned": me, "original": orig, **({"retrained": gold} if gold else {})}
        return _judge("a red square", rows, attacks, 0.1, 0.05, [], {})

    ok = verdict(like_gold)
    assert ok.verdict == "PASS" and all(v.startswith("survives") for v in ok.attacks.values()), ok.attacks
    assert verdict(orig).verdict == "FAIL"
    broken = verdict({**like_gold, "prompt_attack": 0.3})
    assert broken.verdict == "FAIL" and broken.attacks["prompt_attack"].startswith("broken")
    worse = verdict({**like_gold, "retention": 0.85})
    assert worse.verdict == "FAIL" and "retention" in worse.reasons[0]
    assert verdict(like_gold, gold=None).verdict == "INCONCLUSIVE"
    # without a retrained model and attacks the bar is 1 - tolerance
    assert verdict(like_gold, gold=None, attacks=()).verdict == "PASS"
    assert verdict({**like_gold, "erasure": 0.85}, gold=None, attacks=()).verdict == "FAIL"


def test_erasure_report_bad_input(toy):
    from erasus.metrics.diffusion import erasure_report
    from erasus.models.diffusion_attacks import concept_inversion

    with pytest.raises(DataError, match="also among"):
        erasure_report(toy, ColourJudge(), "a red square", 0, {"a red square": 0})
    with pytest.raises(DataError, match="non-empty"):
        erasure_report(toy, ColourJudge(), "a red square", 0, {})
    with pytest.raises(ConfigError, match="Unknown attack"):
        erasure_report(toy, ColourJudge(), "a red square", 0, OTHERS, attacks=("jailbreak",))
    with pytest.raises(ConfigError, match="template"):
        concept_inversion(toy, ColourJudge(), 0, torch.zeros(2, 3, 8, 8), template="a square")
    with pytest.raises(DataError, match="logits"):
        erasure_report(toy, lambda x: x.mean(), "a red square", 0, OTHERS, attacks=(), n_images=2, steps=2)


def test_fid_and_kid_compute_what_their_definitions_say():
    """FID against scipy's matrix square root; KID (one subset of every sample) against the
    unbiased MMD² with the cubic polynomial kernel (x·y/d + 1)³ written out."""
    import numpy as np
    from scipy import linalg

    from erasus.metrics.diffusion import fid, kid

    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, 6, generator=g).double()
    b = (torch.randn(200, 6, generator=g) * 1.3 + 0.4).double()
    s1, s2 = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    want = float(((a.mean(0) - b.mean(0)) ** 2).sum()) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert fid(a, b) == pytest.approx(want, rel=1e-6)
    k = lambda x, y: (x @ y.T / x.shape[1] + 1) ** 3
    n = len(a)
    kxx, kyy, kxy = k(a, a), k(b, b), k(a, b)
    mmd = ((kxx.sum() - kxx.diag().sum()) + (kyy.sum() - kyy.diag().sum())) / (n * (n - 1)) - 2 * kxy.mean()
    assert kid(a, b, subset_size=n, subsets=1)[0] == pytest.approx(float(mmd), rel=1e-6)
    assert abs(kid(a, torch.randn(200, 6, generator=g).double())[0]) < 0.1 * kid(a, b)[0]
    with pytest.raises(DataError, match="features"):
        kid(torch.zeros(4, 3, 8, 8), torch.zeros(4, 3, 8, 8))
    judge = ColourJudge()
    imgs = -torch.ones(8, 3, 8, 8)
    assert kid(imgs, imgs, features=judge, subset_size=8, subsets=1)[0] == pytest.approx(0.0, abs=1e-9)
    # its random subsets come from its own seeded generator: the same inputs give the same KID,
    # and the caller's random state is left as it was
    c = torch.randn(120, 6, generator=g).double()
    state = torch.get_rng_state()
    assert kid(a[:120], c) == kid(a[:120], c) and torch.equal(torch.get_rng_state(), state)
    assert kid(a[:120], c, seed=1) != kid(a[:120], c)


def test_concept_left_tells_an_unchanged_model_from_an_erased_one(toy, retrained):
    """``concept_left`` is 1 for the original (exactly) and far lower for a model retrained
    without red and for UCE's closed-form edit to the empty prompt; ``erase`` records it, and
    warns when a run at the paper's Stable Diffusion step size left the conditioning in place.
    With preserved prompts it also records what the images say (``self_judged``)."""
    from erasus.metrics.diffusion import CONCEPT_LEFT_WARN, DRAWN_WARN, KEPT_WARN, concept_left

    assert concept_left(copy.deepcopy(toy), toy, "a red square") == pytest.approx(1.0, abs=1e-9)
    assert concept_left(retrained, toy, "a red square") < 0.3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an edit that erased raises no warning
        res = DiffusionUnlearner(toy, strategy="uce").erase("a red square", preserve=["a green square"])
    assert abs(res.metrics["concept_left"]) < 0.3 and "concept_left" in res.stop_reason
    # and the images: red no longer drawn, green still (self_judged, tested below)
    assert res.metrics["concept_drawn"] < DRAWN_WARN and res.metrics["preserve_drawn"] >= KEPT_WARN, res.stop_reason
    assert res.timings["check_s"] > 0 and "self-judged" in res.stop_reason
    with pytest.warns(UserWarning, match="may be too small a change"):
        res = DiffusionUnlearner(toy, strategy="esd", strategy_kwargs={"iterations": 20, "ddim_steps": 10}).erase(
            "a red square", progress=False)
    assert res.metrics["concept_left"] > CONCEPT_LEFT_WARN
    sld = DiffusionUnlearner(toy, strategy="sld").erase("red")
    assert "concept_left" not in sld.metrics and "safety guidance saved" in sld.stop_reason
    assert "concept_left" not in DiffusionUnlearner(toy, strategy="uce").erase("a red square", check=False).metrics
    with pytest.raises(ConfigError, match="n >= 1"):
        concept_left(toy, toy, "a red square", n=0)


def test_self_judged_images_tell_an_erased_concept_and_a_damaged_preserved_one(toy, retrained):
    """``self_judged`` (the original's own images as a nearest-neighbour judge) gives an
    unchanged model exactly the original's shares and the model retrained without red almost
    no red. ``erase`` records it (UCE's edit passes without a warning: the ``concept_left``
    test), while a cheat that "erases" blue by turning green squares red warns that a preserved
    prompt was damaged; SLD, which changes no weights, has its preserved prompts checked
    through its images."""
    from erasus.metrics.diffusion import KEPT_WARN, self_judged

    prompts = ["a red square", "a green square", "a blue square"]
    same = self_judged(copy.deepcopy(toy), toy, prompts, n=8, reference=8)
    assert all(v["model"] == v["original"] for v in same.values()) and same["a red square"]["original"] >= 0.75
    gold = self_judged(retrained, toy, prompts, n=8, reference=8)
    assert gold["a red square"]["model"] <= 0.25 and gold["a green square"]["model"] >= 0.75, gold
    green_to_red = DiffusionUnlearner(toy, strategy="uce").erase("a green square", anchor="a red square",
                                                                   check=False).model
    cheat = DiffusionUnlearner(toy, strategy="uce")
    unlearn = cheat.strategy.unlearn

    def damaging_unlearn(*args, **kwargs):
        out = unlearn(*args, **kwargs)
        out.model.load_state_dict(green_to_red.state_dict())
        return out

    cheat.strategy.unlearn = damaging_unlearn
    with pytest.warns(UserWarning, match="'a green square' [0-9]+% of the original's share"):
        res = cheat.erase("a blue square", preserve=["a red square", "a green square"])
    assert res.metrics["preserve_drawn"] < KEPT_WARN
    sld = DiffusionUnlearner(toy, strategy="sld").erase("red", preserve=["a green square"])
    assert "concept_left" not in sld.metrics and sld.metrics["preserve_drawn"] >= KEPT_WARN, sld.stop_reason
    with pytest.raises(ConfigError, match="n >= 1"):
        self_judged(toy, toy, prompts, n=0)
    with pytest.raises(DataError, match="list of prompts"):
        self_judged(toy, toy, "a red square")


def test_the_concept_rule_raises_salun_paper_rate_on_a_short_run(toy):
    """The paper's Stable Diffusion rate (1e-5) moves this model too little: over 60 iterations
    the concept rule raises it (at step 3, then 54; measured) and keeps a step whose preserved
    colours stayed within its guard. The whole default run, judged, is the next test (-m slow:
    450 steps, 95 s of CI)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = DiffusionUnlearner(toy, strategy="salun", strategy_kwargs={"iterations": 60}).erase(
            "a red square", preserve=["a green square", "a blue square"], progress=False, check=False)
    raised = [b["lr"] for b in res.history["backoffs"] if b["restored_step"] is None]
    assert raised and raised[0] > 1e-5 and "raised the learning rate" in res.stop_reason, res.stop_reason
    kept = [e for e in res.history["eval"] if e["step"] == res.stop.restored_step][0]
    first = res.history["eval"][0]
    assert kept["preserve_shift"] <= 0.5 and kept["concept_left"] < first["concept_left"], (first, kept)


@pytest.mark.slow
def test_salun_at_its_defaults_erases_under_the_concept_rule_and_keeps_the_preserved(toy, toy_judged):
    """The paper's Stable Diffusion rate (1e-5) moves this model too little; the concept rule
    raises it, and the run keeps a step whose preserved colours stayed within its guard (with
    the anchor held, it reached the target: concept_left 0.08 at step 450, shift 0.03).
    With -m slow; the rule's raise is checked on every run by the test above."""
    before = toy_judged
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = DiffusionUnlearner(toy, strategy="salun").erase("a red square", preserve=["a green square", "a blue square"],
                                                             progress=False, check=False)  # judged below
    after = judged(res.model)
    assert before["red"] - after["red"] >= 0.4, (before, after, res.stop_reason)
    assert after["green"] >= before["green"] - 0.1 and after["blue"] >= before["blue"] - 0.1, (before, after)
    raised = [b["lr"] for b in res.history["backoffs"]]
    assert raised and max(raised) > 1e-5 and "raised the learning rate" in res.stop_reason
    kept = [e for e in res.history["eval"] if e["step"] == res.stop.restored_step][0]
    assert kept["preserve_shift"] <= 0.5 and kept["concept_left"] < 0.7


def test_salun_draws_its_image_pools_at_the_configured_guidance(toy, monkeypatch):
    """The forget and preserve prompts' images are generated at ``pool_guidance`` (classifier-free
    guidance of the original model), and a guidance that is not positive is refused up front."""
    from erasus.models.diffusion import TextToImage

    seen = []
    generate = TextToImage.generate

    def spy(self, prompts, *args, **kwargs):
        seen.append(kwargs.get("guidance_scale"))
        return generate(self, prompts, *args, **kwargs)

    monkeypatch.setattr(TextToImage, "generate", spy)
    kw = {"iterations": 2, "images_per_prompt": 2, "ddim_steps": 4, "pool_guidance": 1.0}
    DiffusionUnlearner(toy, strategy="salun", strategy_kwargs=kw).erase(
        "a red square", preserve=["a green square"], stopping="none", check=False, progress=False)
    assert seen[:2] == [1.0, 1.0], seen
    with pytest.raises(ConfigError, match="pool_guidance"):
        DiffusionUnlearner(toy, strategy="salun", strategy_kwargs={"pool_guidance": 0.0})


@pytest.mark.parametrize("target", ["auto", "data"])
def test_salun_fits_generated_retain_images_to_the_original_and_given_ones_to_their_noise(toy, monkeypatch, target):
    """``retain_target``: images generated from preserve prompts are fitted to the untouched
    original's prediction ("auto"), so at the first step (the model is still the original) the
    retain term's target is the model's own prediction; ``"data"`` fits them to the noise (the
    paper's DDPM loss), as "auto" does with images the caller gave."""
    from erasus.strategies.diffusion import SalUnGeneration, _ImagePool

    seen = {}
    step = SalUnGeneration.forget_step

    def spy(self, batch, batch_idx):
        if not seen:
            m, g = self.model, torch.Generator().manual_seed(0)
            r0, rp, generated = self.retain_pool.sample(6, g)
            r_t, t, noise = m.noised(r0, g)
            with torch.no_grad():
                pred = m.eps(r_t, t, m.encode(rp)).float()
            tgt = self.retain_targets(r_t, t, rp, noise, generated)
            seen.update(generated=bool(generated.all()), to_pred=float((tgt - pred).abs().max()),
                        to_noise=float((tgt - noise).abs().max()))
        return step(self, batch, batch_idx)

    monkeypatch.setattr(SalUnGeneration, "forget_step", spy)
    kw = {"iterations": 2, "images_per_prompt": 2, "ddim_steps": 4, "retain_target": target}
    DiffusionUnlearner(toy, strategy="salun", strategy_kwargs=kw).erase(
        "a red square", preserve=["a green square"], stopping="none", check=False, progress=False)
    assert seen["generated"], seen
    if target == "auto":
        assert seen["to_pred"] < 1e-5 < seen["to_noise"], seen
    else:
        assert seen["to_noise"] == 0 < seen["to_pred"], seen
    given = _ImagePool(toy, [(torch.zeros(3, 3, 8, 8), ["a green square"] * 3)], 2, 4, torch.Generator(), 5.0)
    assert not given.generated.any() and len(given) == 3
    with pytest.raises(ConfigError, match="retain_target"):
        DiffusionUnlearner(toy, strategy="salun", strategy_kwargs={"retain_target": "noise"})


def test_salun_holds_its_anchor_where_the_original_had_it(toy):
    """``hold_anchor``: the remapping's target (the anchor's prediction on the forget images,
    the "" prompt here, which no retain term holds) stays near the original's; without it the
    shared weights carry it along. The paper's forget loss is unchanged: the first step's
    loss, before anything moved, is the same either way."""
    data = [x for x, p in colour_data(16, seed=3) if p == "a red square"]
    g = torch.Generator().manual_seed(0)
    x_t, t, _ = toy.noised(torch.stack(data), g)
    with torch.no_grad():
        ref = toy.eps(x_t, t, toy.encode([""] * len(data)))

    def drift(hold):
        kw = {"lr": 1e-3, "iterations": 40, "images_per_prompt": 8, "ddim_steps": 10, "hold_anchor": hold}
        res = DiffusionUnlearner(toy, strategy="salun", strategy_kwargs=kw).erase(
            "a red square", preserve=["a green square", "a blue square"], stopping="none", check=False,
            progress=False)
        with torch.no_grad():
            moved = res.model.eps(x_t, t, res.model.encode([""] * len(data))) - ref
        return float(moved.pow(2).sum() / ref.pow(2).sum()), res.history["loss"][0]

    held, first_held = drift(True)
    free, first_free = drift(False)
    assert held < 0.5 * free, (held, free)
    assert abs(first_held - first_free) < 1e-6, (first_held, first_free)


def test_the_concept_rule_guards_keeps_the_paper_schedule_on_request_and_raises_nothing_unguarded(toy):
    from erasus.strategies.diffusion import ConceptStopping

    kw = {"iterations": 20, "ddim_steps": 10}
    # a guard nothing passes: the run goes back to the original weights and says why
    with pytest.warns(UserWarning, match="shifted past the stopping rule's guard"):
        res = DiffusionUnlearner(toy, strategy="salun", strategy_kwargs={"iterations": 20, "images_per_prompt": 4}).erase(
            "a red square", preserve=["a green square"], stopping=ConceptStopping(guard=1e-9), progress=False)
    assert res.stop.kind.value == "guard" and res.stop.restored_step == 0 and params_equal(res.model, toy)
    # stopping="none": the paper's fixed schedule
    res = DiffusionUnlearner(toy, strategy="esd", strategy_kwargs=kw).erase("a red square", stopping="none",
                                                                          progress=False, check=False)
    assert res.steps == 20 and not res.history["backoffs"] and res.stop.kind.value == "fixed"
    # no preserved prompts: the rate stays as configured, and the stop reason says why
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = DiffusionUnlearner(toy, strategy="esd", strategy_kwargs=kw).erase("a red square", progress=False)
    assert not res.history["backoffs"] and "no preserved prompts" in res.stop_reason
    assert [e["step"] for e in res.history["eval"]] == list(range(0, 21))
    with pytest.raises(ConfigError, match="guard > 0"):
        ConceptStopping(guard=0)


def test_the_image_guard_judges_preserved_images_at_every_check_and_keeps_no_step_past_it(toy):
    """``erase(image_guard=True)``: the concept rule also judges the preserved prompts' images
    (self-judged, against the original's at the start) at each check; a step whose images fell
    below ``kept`` is past the guard like a shifted one (restored, and the run stops or backs
    off). What it buys on a protocol where the weight guard misses the damage is measured on the
    stripes (scripts/diffusion_stripes_probe.py --image-guard; ConceptStopping's docstring)."""
    from erasus.core.stopping import RunContext, StopKind
    from erasus.strategies.diffusion import ConceptStopping

    kw = {"iterations": 2, "ddim_steps": 10}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = DiffusionUnlearner(toy, strategy="esd", strategy_kwargs=kw).erase(
            "a red square", preserve=["a green square", "a blue square"], image_guard=True, check=False, progress=False)
    first = res.history["eval"][0]
    assert first["step"] == 0 and first["preserve_drawn"] == first["preserve_drawn_mean"] == 1.0, first  # the original
    assert all("preserve_drawn" in e for e in res.history["eval"]) and "judged the preserved prompts' images" in res.stop_reason
    # the decision: images that fell count as past the guard, as a shift does
    rule = ConceptStopping()
    rule.ctx = RunContext(config=None, adapter=None, val={}, total=100, history={"backoffs": []})
    rule.best, rule.best_step, rule.grown, rule.backoffs, rule.base = 0.5, 10, 0, 0, None
    d = rule.decide(20, {"concept_left": 0.2, "preserve_shift": 0.1, "preserve_drawn": 0.6, "preserve_drawn_mean": 0.8})
    assert d.restore and d.stop.kind is StopKind.GUARD and "preserve_drawn_mean 0.80" in d.stop.message
    assert d.stop.restored_step == 10 and d.stop.metric == "preserve_drawn_mean"   # what code asks, not the message
    # one prompt destroyed among many that keep the average up: the floor
    d = rule.decide(20, {"concept_left": 0.2, "preserve_shift": 0.1, "preserve_drawn": 0.4, "preserve_drawn_mean": 0.9})
    assert d.restore and d.stop.metric == "preserve_drawn" and "preserve_drawn 0.40 < 0.5" in d.stop.message
    assert rule.decide(20, {"concept_left": 0.2, "preserve_shift": 9.0, "preserve_drawn": 0.4}).stop.metric == \
        "preserve_shift"                                                      # the weight guard named first
    # one prompt two images short (16 a prompt) while the rest hold: noise, not damage
    assert not rule.decide(30, {"concept_left": 0.2, "preserve_shift": 0.1, "preserve_drawn": 0.82,
                                "preserve_drawn_mean": 0.97}).restore
    # refused up front: nothing to judge, a rule given as well, a method without a run to guard
    with pytest.raises(DataError, match="preserve"):
        DiffusionUnlearner(toy, strategy="esd").erase("a red square", image_guard=True)
    with pytest.raises(ConfigError, match="stopping"):
        DiffusionUnlearner(toy, strategy="esd").erase("a red square", preserve=["a green square"], image_guard=True,
                                                      stopping="none")
    with pytest.raises(ConfigError, match="one-shot"):
        DiffusionUnlearner(toy, strategy="uce").erase("a red square", preserve=["a green square"], image_guard=True)
    with pytest.raises(ConfigError, match="kept"):
        ConceptStopping(images=True, kept=1.5)
    with pytest.raises(ConfigError, match="floor"):
        ConceptStopping(images=True, kept=0.8, floor=0.9)


def test_advunlearn_runs_its_adversarial_phase_past_the_plain_target(toy):
    """AdvUnlearn under the concept rule does not stop where the plain prompt's concept_left meets
    the target (which once ended the run inside its warm-up, before any adversarial step): it
    goes on to its iterations, keeps its latest step, and records the concept left under the
    latest attack. (No preserved prompts here, so no guard: the rate that meets the target
    within the warm-up shifts the preserved prompts past it.)"""
    kw = dict(lr=3e-3, iterations=30, ddim_steps=10, warmup=12, attack_steps=3, negative_guidance=3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = DiffusionUnlearner(toy, strategy="adv_unlearn", strategy_kwargs=kw).erase("a red square", progress=False)
    evals = res.history["eval"]
    assert min(e["concept_left"] for e in evals if 0 < e["step"] <= 12) <= 0.1, evals  # met within the warm-up
    attacked = [e["step"] for e in evals if "concept_left_attacked" in e]
    assert attacked and min(attacked) > 12, evals
    assert res.stop.kind.value == "budget" and res.steps == 30, res.stop_reason
    assert res.stop.restored_step == max(e["step"] for e in evals) and "under the latest attack" in res.stop_reason


def _bench():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "diffusion_bench", Path(__file__).resolve().parent.parent / "benchmarks" / "diffusion.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_the_benchmarks_cpu_preset_fills_only_what_the_command_line_leaves_out():
    import argparse

    bench = _bench()
    args = argparse.Namespace(preset="cpu", image_size=32, attention="high", width=64, train_steps=20000, batch=128,
                              seeds="0,1", n_images=200, guidance=5.0, name="diffusion")
    bench.apply_preset(args, ["--preset", "cpu", "--seeds", "0,1", "--width=48"])
    assert (args.image_size, args.attention, args.train_steps, args.batch, args.n_images, args.guidance, args.name) == (
        16, "low", 3000, 64, 100, 1.5, "diffusion-cpu")
    assert args.seeds == "0,1" and args.width == 64  # given on the command line: kept
    args.image_guard = True  # its own results, unless named
    bench.name_variant(args, ["--preset", "cpu", "--image-guard"])
    assert args.name == "diffusion-cpu-image-guard"
    args.name = "mine"
    bench.name_variant(args, ["--image-guard", "--name", "mine"])
    assert args.name == "mine"
    args.image_guard, args.bare, args.name = False, True, "diffusion-cpu"  # the bare call's rows: their own too
    bench.name_variant(args, ["--preset", "cpu", "--bare"])
    assert args.name == "diffusion-cpu-bare"


def test_the_benchmarks_criterion_compares_each_seed_with_that_seeds_original():
    """The results' summary line: a method meets it with mean erasure ≥ 90% and mean retention at
    most 5 points below the original's at the same seeds; one seed's failure can sink the mean."""
    rows = [{"seed": s, "method": "original", "erasure": 0.3, "retention": r} for s, r in ((0, 0.75), (1, 0.65))]
    rows += [{"seed": 0, "method": "a", "erasure": 0.99, "retention": 0.74},
             {"seed": 1, "method": "a", "erasure": 0.95, "retention": 0.62},
             {"seed": 0, "method": "b", "erasure": 0.99, "retention": 0.74},
             {"seed": 1, "method": "b", "erasure": 0.70, "retention": 0.65},
             {"seed": 0, "method": "c", "erasure": 0.99, "retention": 0.60},
             {"seed": 1, "method": "d", "error": "ValueError: x"}]
    line = _bench().criterion(rows)
    assert "lost per seed): a (97.0%, +2.0 points; seeds +1.0/+3.0); not: b (84.5%, +0.5 points; seeds +1.0/+0.0), " \
           "c (99.0%, +15.0 points)." in line, line
