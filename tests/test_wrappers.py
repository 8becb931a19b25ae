"""The specification's by-name wrappers (§2): LLaMAWrapper, LLaVAWrapper and
StableDiffusionWrapper load from a folder as from a Hub name, and their inspection methods
compute what they name: a block's own output, the answer to a question about an image, and
cross-attention maps equal to a softmax computed by hand."""
import importlib.util

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from erasus.core.exceptions import ConfigError, DataError  # noqa: E402
from erasus.models import (CausalLMAdapter, LLaMAWrapper, LLaVAWrapper, StableDiffusionWrapper,  # noqa: E402
                           VisionLMAdapter, wrap)
from erasus.models.causal_lm import word_tokenizer  # noqa: E402


def test_llama_wrapper_reads_each_blocks_own_output(tmp_path):
    tok = word_tokenizer(["harry potter best friend is ron"])
    torch.manual_seed(0)
    lm = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=32, pad_token_id=tok.pad_token_id))
    lm.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")

    w = LLaMAWrapper(str(tmp_path / "lm"))  # a folder, as a Hub name loads
    assert wrap(w) is w and w.tokenizer is not None and w.family == "causal_lm"
    acts = w.get_layer_activations("harry potter best friend is", [0, 1, -1])
    ids = w.tokenizer("harry potter best friend is", return_tensors="pt")
    with torch.no_grad():
        hs = w.model(**ids, output_hidden_states=True).hidden_states
    assert set(acts) == {"layer_0", "layer_1", "layer_-1"} and acts["layer_0"].shape == (1, 5, 32)
    assert torch.allclose(acts["layer_0"], hs[1]) and torch.allclose(acts["layer_1"], hs[2])
    # the last block's own output: the model's last hidden state is it after the final norm
    assert torch.allclose(w.model.model.norm(acts["layer_-1"]), hs[-1]) and not torch.allclose(acts["layer_-1"], hs[-1])
    two = w.get_layer_activations(["harry potter", "best friend is ron"], [0])["layer_0"]
    assert two.shape[0] == 2
    assert type(w.with_model(lm)) is CausalLMAdapter

    with pytest.raises(ConfigError, match=r"\[-3, 2\]"):
        w.get_layer_activations("harry", [3])
    with pytest.raises(ConfigError, match="tokenizer"):
        LLaMAWrapper(lm).get_layer_activations("harry", [0])
    with pytest.raises(ConfigError, match="by name"):
        LLaMAWrapper(lm, torch_dtype=torch.float16)
    if importlib.util.find_spec("bitsandbytes") is None:
        with pytest.raises(ConfigError, match="bitsandbytes"):
            LLaMAWrapper(str(tmp_path / "lm"), load_in_8bit=True)


def test_llava_wrapper_answers_about_the_image_through_its_processor(tmp_path):
    from test_vision_lm import COLOURS, QUESTION, TOK, fit, records

    model = fit(records(32, 0))  # a small LLaVA trained to name the square's colour
    image_processor = transformers.CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16},
                                                      image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = transformers.LlavaProcessor(image_processor=image_processor, tokenizer=TOK, patch_size=8,
                                            vision_feature_select_strategy="default", image_token="<image>",
                                            num_additional_image_tokens=1)
    model.save_pretrained(tmp_path / "llava")
    processor.save_pretrained(tmp_path / "llava")

    w = LLaVAWrapper(str(tmp_path / "llava"))
    assert w.processor is not None and w.family == "vision_lm"
    assert w.vision_tower is not None and w.mm_projector is not None and w.language_model is not None
    for name, c in COLOURS.items():
        image = ((np.array(c) + 1) / 2 * 255 * np.ones((16, 16, 3))).astype(np.uint8)
        assert w.generate_with_image(image, "<image> " + QUESTION, max_length=3) == name
    assert type(w.with_model(model)) is VisionLMAdapter

    with pytest.raises(ConfigError, match="processor"):
        LLaVAWrapper(model).generate_with_image(image, "<image> " + QUESTION)
    with pytest.raises(ConfigError, match="max_length"):
        w.generate_with_image(image, "<image> " + QUESTION, max_length=0)
    with pytest.raises(ConfigError, match="image-text-to-text"):
        LLaVAWrapper(transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2)))


def test_stable_diffusion_wrapper_maps_are_the_cross_attention_softmax(tmp_path):
    pytest.importorskip("diffusers")
    from erasus.models.diffusion import toy_text_to_image

    toy_text_to_image(["a red square", "a green square"]).save_pretrained(tmp_path / "t2i")
    w = StableDiffusionWrapper(str(tmp_path / "t2i"))
    assert w.pipe is None and w.vae is None and w.unet is w.model.unet and w.text_encoder is w.model.text_encoder
    before = {k: type(v) for k, v in w.unet.attn_processors.items()}
    maps = w.get_cross_attention_maps("a red square")
    assert {k: type(v) for k, v in w.unet.attn_processors.items()} == before  # the processors are put back
    assert maps and all(k.endswith("attn2") for k in maps)
    assert maps["mid_block.attentions.0.transformer_blocks.0.attn2"].shape == (w.model.max_length, 4, 4)
    assert all(torch.allclose(m.sum(0), torch.ones(m.shape[1:]), atol=1e-5) for m in maps.values())

    # by hand on every layer: softmax(q kᵀ · scale) of the layer's inputs, averaged over heads
    modules = dict(w.unet.named_modules())
    seen = {}
    hooks = [modules[n].register_forward_hook(
        lambda _m, args, kw, _o, n=n: seen.__setitem__(n, (args[0] if args else kw["hidden_states"],
                                                            kw["encoder_hidden_states"])), with_kwargs=True)
        for n in maps]
    t = w.model.scheduler.config.num_train_timesteps // 2
    x = torch.randn(w.model.latent_shape(1), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        w.model.eps(x, torch.tensor([t]), w.model.encode(["a red square"]))
        for h in hooks:
            h.remove()
        for n, (hidden, context) in seen.items():
            mod = modules[n]
            q, k = mod.to_q(hidden), mod.to_k(context)
            heads = lambda z: z.view(z.shape[0], z.shape[1], mod.heads, -1).transpose(1, 2)  # noqa: E731
            p = torch.softmax(heads(q) @ heads(k).transpose(-1, -2) * mod.scale, -1).mean(1)[0]
            assert torch.allclose(p.T.reshape(maps[n].shape), maps[n], atol=1e-6), n
    other = w.get_cross_attention_maps("a red square", timestep=0)
    assert not torch.allclose(other["mid_block.attentions.0.transformer_blocks.0.attn2"],
                              maps["mid_block.attentions.0.transformer_blocks.0.attn2"])

    assert StableDiffusionWrapper(w.model).model is w.model  # a model object as well as a name
    with pytest.raises(DataError, match="prompt"):
        w.get_cross_attention_maps("")
    with pytest.raises(ConfigError, match="timestep"):
        w.get_cross_attention_maps("a red square", timestep=10_000)
