"""The specification's by-name model wrappers (its §2): :class:`LLaMAWrapper`,
:class:`LLaVAWrapper` and :class:`StableDiffusionWrapper` (the CLIP one,
:class:`~erasus.models.clip.CLIPWrapper`, lives beside its adapter). Each is the family's
adapter, built from a model object **or** a Hub name / local folder, with the inspection
method the specification shows; strategies, selectors and metrics take a wrapper wherever
they take a model.

Where the specification's sketches would not run as written, the wrappers say so:

- ``LLaMAWrapper`` loads any causal LM (``AutoModelForCausalLM``: Llama, Mistral, Qwen,
  GPT-2, ...), and ``load_in_8bit`` needs ``bitsandbytes`` and a CUDA GPU (an error says so,
  rather than the sketch's unconditional ``device_map="auto"``).
- ``LLaVAWrapper.generate_with_image`` returns the generated answer without the prompt, and
  ``max_length`` bounds the new tokens (LLaVA-1.5 puts 576 image tokens in the prompt: the
  sketch's total length of 512 would end generation before it starts).
- ``StableDiffusionWrapper.get_cross_attention_maps`` returns attention *maps* (each prompt
  token's softmax weight over the image positions, per cross-attention layer); the sketch
  recorded the layers' outputs, which are not maps.
"""
from __future__ import annotations

import math
import os
from typing import Dict, Optional, Sequence, Union

import torch
from torch import nn

from ..exceptions import ConfigError, DataError
from .base import layer_outputs, load_or_take
from .causal_lm import CausalLMAdapter, VisionLMAdapter, is_vision_lm, load_causal_lm
from .diffusion import DiffusionAdapter, TextToImage


def _decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a language model: its ``ModuleList`` with one entry per
    layer of the config (``model.layers`` in Llama, ``transformer.h`` in GPT-2)."""
    n = getattr(model.config, "num_hidden_layers", None)
    for _, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) == n:
            return m
    raise ConfigError(f"Found no list of {n} transformer blocks in {type(model).__name__}.")


class LLaMAWrapper(CausalLMAdapter):
    """The specification's LLaMA wrapper: a :class:`~erasus.models.CausalLMAdapter` from a model
    or a Hub name / local folder (``AutoModelForCausalLM``, weights through safetensors where
    the checkpoint has them, and the folder's tokenizer)::

        model = LLaMAWrapper("meta-llama/Llama-2-7b-hf")          # or LLaMAWrapper(lm, tokenizer=tok)
        acts = model.get_layer_activations("Harry Potter's best friend is", [0, -1])  # {"layer_0": (1, T, H), ...}

    ``load_in_8bit``: 8-bit weights through ``bitsandbytes`` on a CUDA GPU (train them through
    LoRA: ``LLMUnlearner(model.model, lora=...)``); ``device``: where the model is put (default:
    left where it is); other keywords go to ``from_pretrained``."""

    def __init__(self, model_name, load_in_8bit: bool = False, device: Optional[str] = None, tokenizer=None,
                 **from_pretrained_kwargs):
        self.tokenizer = tokenizer
        if load_in_8bit:
            if not isinstance(model_name, (str, os.PathLike)):
                raise ConfigError("load_in_8bit=True applies when loading by name; got a model.")
            try:
                import bitsandbytes  # noqa: F401
            except ImportError as e:
                raise ConfigError("load_in_8bit=True needs bitsandbytes and a CUDA GPU: pip install bitsandbytes, "
                                  "or load in full precision (load_in_8bit=False).") from e
            if not torch.cuda.is_available():
                raise ConfigError("load_in_8bit=True needs a CUDA GPU (bitsandbytes' 8-bit layers); torch sees none.")
            from transformers import BitsAndBytesConfig

            from_pretrained_kwargs.setdefault("quantization_config", BitsAndBytesConfig(load_in_8bit=True))
            from_pretrained_kwargs.setdefault("device_map", "auto")

        def load(name, **kw):
            model, tok = load_causal_lm(name, tokenizer, **kw)
            self.tokenizer = tok
            return model

        model = load_or_take(model_name, load, device, from_pretrained_kwargs, "a causal language model")
        super().__init__(model)

    def with_model(self, model: nn.Module) -> CausalLMAdapter:
        return CausalLMAdapter(model)

    def get_layer_activations(self, text: Union[str, Sequence[str]], layer_indices: Sequence[int]
                              ) -> Dict[str, torch.Tensor]:
        """``{"layer_<i>": output of transformer block i}`` for ``text`` (a string or a list,
        padded), each ``(batch, tokens, hidden)``: the block's own output, read with a forward
        hook (the models' ``hidden_states`` end with the final norm applied)."""
        if self.tokenizer is None:
            raise ConfigError("get_layer_activations needs a tokenizer: LLaMAWrapper(model, tokenizer=...).")
        texts = [text] if isinstance(text, str) else list(text)
        if not texts:
            raise DataError("Expected a text or a non-empty list of texts.")
        if len(texts) > 1 and self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        inputs = self.tokenizer(texts, return_tensors="pt", padding=len(texts) > 1).to(self.device)
        return layer_outputs(self.model, _decoder_layers(self.model), layer_indices,
                             lambda: self.model(input_ids=inputs["input_ids"],
                                                attention_mask=inputs.get("attention_mask")), "decoder")


class LLaVAWrapper(VisionLMAdapter):
    """The specification's LLaVA wrapper: a :class:`~erasus.models.VisionLMAdapter` from a model
    or a Hub name / local folder (``AutoModelForImageTextToText``: LLaVA, BLIP-2, ...; and the
    folder's processor), with the parts the specification names::

        model = LLaVAWrapper("llava-hf/llava-1.5-7b-hf")
        model.generate_with_image(image, "USER: <image>\\nWhat is shown? ASSISTANT:")

    ``vision_tower``, ``mm_projector`` (the multimodal projector) and ``language_model``, where
    the model has them; ``processor``: ``None`` when the folder holds none (pass one)."""

    def __init__(self, model_name, device: Optional[str] = None, processor=None, **from_pretrained_kwargs):
        self.processor = processor

        def load(name, **kw):
            try:
                import transformers
            except ImportError as e:
                raise ConfigError("Loading an image-text model needs transformers: pip install 'erasus[llm]'.") from e
            auto = getattr(transformers, "AutoModelForImageTextToText", None) or transformers.AutoModelForVision2Seq
            model = auto.from_pretrained(name, **kw)
            if self.processor is None:
                try:
                    self.processor = transformers.AutoProcessor.from_pretrained(name)
                except (OSError, ValueError, TypeError):
                    pass  # a folder without processor files: the caller passes one
            return model

        model = load_or_take(model_name, load, device, from_pretrained_kwargs, "an image-text-to-text model")
        if not is_vision_lm(model):
            raise ConfigError(f"Expected an image-text-to-text model (LLaVA, BLIP-2), got {type(model).__name__}.")
        super().__init__(model)
        base = getattr(model, "model", model)
        self.vision_tower = getattr(model, "vision_tower", None) or getattr(base, "vision_tower", None)
        self.mm_projector = (getattr(model, "multi_modal_projector", None)
                             or getattr(base, "multi_modal_projector", None))
        self.language_model = getattr(model, "language_model", None) or getattr(base, "language_model", None)

    def with_model(self, model: nn.Module) -> VisionLMAdapter:
        return VisionLMAdapter(model)

    @torch.no_grad()
    def generate_with_image(self, image, prompt: str, max_length: int = 512, **generate_kwargs) -> str:
        """The model's answer to ``prompt`` about ``image`` (greedy unless ``generate_kwargs`` say
        otherwise), decoded without the prompt. ``prompt`` holds the model's image token where
        its processor expects one (LLaVA-1.5: ``"USER: <image>\\n... ASSISTANT:"``);
        ``max_length``: the most tokens generated."""
        if self.processor is None:
            raise ConfigError("generate_with_image needs the model's processor: LLaVAWrapper(model, processor=...).")
        if max_length < 1:
            raise ConfigError(f"Expected max_length >= 1, got {max_length}.")
        inputs = self.processor(text=prompt, images=image, return_tensors="pt").to(self.device)
        was = self.model.training
        self.model.eval()
        try:
            out = self.model.generate(**inputs, max_new_tokens=max_length, **generate_kwargs)
        finally:
            self.model.train(was)
        return self.processor.decode(out[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True)


class _MapRecorder:
    """An attention processor that records a cross-attention layer's attention weights (the
    module's own ``to_q``/``to_k``, ``head_to_batch_dim`` and ``get_attention_scores``, as
    diffusers' classic ``AttnProcessor`` computes them) and then runs the layer's processor."""

    def __init__(self, inner, name: str, store: Dict[str, torch.Tensor]):
        self.inner, self.name, self.store = inner, name, store

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        if encoder_hidden_states is not None and hidden_states.ndim == 3:
            context = attn.norm_encoder_hidden_states(encoder_hidden_states) if attn.norm_cross else encoder_hidden_states
            q = attn.head_to_batch_dim(attn.to_q(hidden_states))
            k = attn.head_to_batch_dim(attn.to_k(context))
            probs = attn.get_attention_scores(q, k, None)  # (batch · heads, positions, tokens)
            b = hidden_states.shape[0]
            self.store[self.name] = probs.reshape(b, attn.heads, *probs.shape[1:]).mean(1).detach()
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)


class StableDiffusionWrapper(DiffusionAdapter):
    """The specification's Stable Diffusion wrapper: a :class:`~erasus.models.DiffusionAdapter`
    from a :class:`~erasus.models.TextToImage`, a diffusers pipeline object, or a Hub name / local
    folder (``DiffusionPipeline.from_pretrained``, or a folder Erasus saved)::

        model = StableDiffusionWrapper("CompVis/stable-diffusion-v1-4")
        maps = model.get_cross_attention_maps("a painting in the style of Van Gogh")
        # {"down_blocks.0.attentions.0.transformer_blocks.0.attn2": (tokens, 64, 64), ...}

    ``unet``, ``text_encoder``, ``vae`` (``None`` for pixel-space models), ``scheduler`` and
    ``tokenizer``: the model's parts; ``pipe``: the diffusers pipeline when one was loaded or
    given (it shares the parts, so an edit shows in it), else ``None``."""

    def __init__(self, model_name, device: Optional[str] = None, **from_pretrained_kwargs):
        self.pipe = None

        def load(name, **kw):
            model, self.pipe = TextToImage.load_with_pipeline(name, **kw)
            return model

        model = load_or_take(model_name, load, None, from_pretrained_kwargs, "a text-to-image model")
        if not isinstance(model, TextToImage) and hasattr(model, "unet"):  # a pipeline object
            self.pipe, model = model, TextToImage.from_pipeline(model)
        if device is not None:
            from ..utils.misc import resolve_device

            model = model.to(resolve_device(device))
            if self.pipe is not None:
                self.pipe.to(resolve_device(device))
        super().__init__(model)
        self.unet, self.text_encoder, self.vae = model.unet, model.text_encoder, model.vae
        self.scheduler, self.tokenizer = model.scheduler, model.tokenizer

    def with_model(self, model: nn.Module) -> DiffusionAdapter:
        return DiffusionAdapter(model)

    @torch.no_grad()
    def get_cross_attention_maps(self, prompt: str, timestep: Optional[int] = None, seed: int = 0
                                 ) -> Dict[str, torch.Tensor]:
        """Each cross-attention layer's attention maps for ``prompt``: ``{layer name: (tokens,
        h, w)}``, the softmax weight every image position gives each of the prompt's
        ``max_length`` token positions (averaged over heads; token 0 is the start token where
        the tokenizer adds one, padding follows the words), at the layer's own resolution. One
        noise prediction on seeded Gaussian noise as ``x_t`` at ``timestep`` (default: the
        middle of the training schedule, where the layout is being decided)."""
        m = self.model
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(f"Expected a non-empty prompt, got {prompt!r}.")
        n_t = m.scheduler.config.num_train_timesteps
        t = n_t // 2 if timestep is None else int(timestep)
        if not 0 <= t < n_t:
            raise ConfigError(f"Expected a timestep in [0, {n_t - 1}], got {timestep}.")
        store: Dict[str, torch.Tensor] = {}
        before = dict(m.unet.attn_processors)
        names = [k for k in before if k.split(".processor")[0].endswith("attn2")]
        if not names:
            raise ConfigError(f"{type(m.unet).__name__} has no cross-attention layers (attn2) to read maps from.")
        m.unet.set_attn_processor({k: _MapRecorder(p, k.rsplit(".processor", 1)[0], store) if k in names else p
                                   for k, p in before.items()})
        was = m.training
        m.eval()
        try:
            g = torch.Generator(device="cpu").manual_seed(seed)
            x_t = torch.randn(m.latent_shape(1), generator=g).to(m.device)
            m.eps(x_t, torch.tensor([t], device=m.device), m.encode([prompt]))
        finally:
            m.unet.set_attn_processor(before)
            m.train(was)
        H, W = m.latent_shape(1)[2:]
        out = {}
        for name, probs in store.items():  # a layer at 1/f of the latent's side holds (H/f)·(W/f) positions
            f = math.sqrt(H * W / probs.shape[1])
            h, w = round(H / f), round(W / f)
            out[name] = probs[0].T.reshape(probs.shape[2], h, w).cpu()
        return out
