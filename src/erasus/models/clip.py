"""Contrastive vision-language models (CLIP) seen through the adapter interface.

A batch is ``(pixel_values, input_ids)`` / ``(pixel_values, input_ids, attention_mask)`` or a
dict with those keys: image-text pairs, the forget and retain data of CLIP unlearning. For
zero-shot classification a batch is ``(pixel_values, labels)`` (``labels`` 1-D) and the
adapter scores the images against its ``class_prompts`` (token ids of one prompt per class,
e.g. "a photo of a dog"), so the classifier metrics (accuracy, MIA, gap to the retrained
model) apply to CLIP unchanged.

* ``per_sample_loss``: for a pair batch, each pair's CLIP loss against the rest of the batch,
  ``½ [CE(s·⟨v_i, t_·⟩, i) + CE(s·⟨v_·, t_i⟩, i)]`` (Radford et al., ICML 2021); for a labelled
  image batch, the zero-shot cross-entropy.
* ``logits``: zero-shot logits ``s·⟨v, t_c⟩`` over the class prompts.
* ``features``: the normalised image embeddings.

Any model with ``get_image_features``, ``get_text_features`` and ``logit_scale`` works:
``transformers.CLIPModel`` (and SigLIP-style models with those methods).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..exceptions import ConfigError, DataError
from .base import ModelAdapter, check_label_range, layer_outputs, load_or_take


def is_clip(model) -> bool:
    return all(hasattr(model, a) for a in ("get_image_features", "get_text_features", "logit_scale"))


def _tensor(out) -> torch.Tensor:
    """transformers 5 returns an output object (the projected embedding in ``pooler_output``)."""
    return out if torch.is_tensor(out) else out.pooler_output


def split_clip_batch(batch: Any) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor], Optional[torch.Tensor]]:
    """``(pixel_values, input_ids or None, attention_mask or None, labels or None)`` of a CLIP
    batch: image-text pairs, labelled images, or a dict with those keys."""
    if isinstance(batch, Mapping):
        return batch["pixel_values"], batch.get("input_ids"), batch.get("attention_mask"), batch.get("labels")
    if isinstance(batch, (list, tuple)) and len(batch) in (2, 3) and torch.is_tensor(batch[0]) and batch[0].dim() == 4:
        second = batch[1]
        if torch.is_tensor(second) and second.dim() == 1:
            return batch[0], None, None, second
        if torch.is_tensor(second) and second.dim() == 2:
            return batch[0], second, batch[2] if len(batch) == 3 else None, None
    raise DataError("Expected a CLIP batch: (pixel_values, input_ids[, attention_mask]) pairs, (pixel_values, "
                    "labels) for zero-shot classification, or a dict with those keys; got "
                    f"{type(batch).__name__}.")


class CLIPAdapter(ModelAdapter):
    """Adapter of a CLIP-style model (family ``"clip"``); ``class_prompts``: ``(C, L)`` token ids
    (or a dict with ``input_ids`` and ``attention_mask``) of one prompt per class, for zero-shot
    logits."""

    family = "clip"

    def __init__(self, model: nn.Module, class_prompts=None):
        super().__init__(model)
        if not is_clip(model):
            raise ConfigError(f"Expected a CLIP-style model (get_image_features, get_text_features, logit_scale), got "
                              f"{type(model).__name__}.")
        if isinstance(class_prompts, dict):
            ids, mask = class_prompts["input_ids"], class_prompts.get("attention_mask")
        else:
            ids, mask = class_prompts, None
        if ids is not None and (not torch.is_tensor(ids) or ids.dim() != 2 or len(ids) < 2):
            raise DataError("Expected class_prompts as a (classes >= 2, length) tensor of token ids, got "
                            f"{getattr(ids, 'shape', type(ids).__name__)}.")
        self.class_ids, self.class_mask = ids, mask

    def with_model(self, model: nn.Module) -> "CLIPAdapter":
        return CLIPAdapter(model, {"input_ids": self.class_ids, "attention_mask": self.class_mask}
                           if self.class_ids is not None else None)

    @property
    def num_classes(self) -> int:
        if self.class_ids is None:
            raise ConfigError("This CLIP adapter has no class prompts: pass class_prompts=<(C, L) token ids>.")
        return len(self.class_ids)

    # batches ---------------------------------------------------------------------------
    def split(self, batch: Any):
        """``(pixel_values, input_ids or None, attention_mask or None, labels or None)``."""
        return split_clip_batch(batch)

    def to_device(self, batch: Any):
        d = self.device
        return tuple(v.to(d) if torch.is_tensor(v) else v for v in self.split(batch))

    def batch_size(self, batch: Any) -> int:
        return len(self.split(batch)[0])

    def pairs(self, batch: Any, what: str = "data", on_device: bool = True):
        """``(pixel_values, input_ids, attention_mask or None)`` (on the model's device unless
        ``on_device=False``): a batch of image-text pairs as it is, a batch of labelled images
        paired with the prompt of each image's class (zero-shot class forgetting from a
        classification data set: a "sneaker" image becomes the pair (image, "a photo of a
        sneaker")). ``what`` names the data in the error for labelled images without class
        prompts."""
        x, ids, mask, labels = self.to_device(batch) if on_device else self.split(batch)
        if ids is not None:
            return x, ids, mask
        if self.class_ids is None:
            raise DataError(f"Expected {what} as image-text pairs (pixel_values, input_ids[, attention_mask]), or "
                            "labelled images with class prompts to pair them with: CLIPAdapter(model, "
                            "class_prompts=<(C, L) ids>) or VLMUnlearner(model, class_prompts=...).")
        self._check_labels(labels)
        ids = self.class_ids.to(x.device)[labels]
        return x, ids, (self.class_mask.to(x.device)[labels] if self.class_mask is not None else None)

    def _check_labels(self, labels: torch.Tensor) -> None:
        check_label_range(labels, len(self.class_ids), f"{len(self.class_ids)} class prompts")

    # embeddings ------------------------------------------------------------------------
    def image_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return F.normalize(_tensor(self.model.get_image_features(pixel_values=pixel_values)).float(), dim=-1)

    def text_embeddings(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        kw = {"attention_mask": attention_mask} if attention_mask is not None else {}
        return F.normalize(_tensor(self.model.get_text_features(input_ids=input_ids, **kw)).float(), dim=-1)

    def scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp().float()

    def pair_logits(self, batch: Any) -> torch.Tensor:
        """``s·⟨v_i, t_j⟩`` for the batch's images (rows) and texts (columns)."""
        x, ids, mask, _ = self.to_device(batch)
        if ids is None:
            raise DataError("Expected image-text pairs (pixel_values, input_ids); this batch holds labels.")
        return self.scale() * self.image_embeddings(x) @ self.text_embeddings(ids, mask).T

    def pair_scores(self, batch: Any) -> torch.Tensor:
        """Each pair's own scaled similarity ``s·⟨v_i, t_i⟩``, independent of the rest of the
        batch: the membership score of Ko et al., "Practical Membership Inference Attacks Against
        Large-Scale Multi-Modal Models: A Pilot Study", ICCV 2023 (a pair seen in training is
        closer). The in-batch CLIP loss is not: it depends on the batch's size and captions."""
        x, ids, mask, _ = self.to_device(batch)
        if ids is None:
            raise DataError("Expected image-text pairs (pixel_values, input_ids); this batch holds labels.")
        return self.scale() * (self.image_embeddings(x) * self.text_embeddings(ids, mask)).sum(-1)

    @torch.no_grad()
    def split_embeddings(self, loader, images: bool = True):
        """``(image embeddings, text embeddings, captions)`` of every pair in ``loader``
        (normalised; ``captions``: each pair's token ids as a tuple, equal for pairs that share a
        caption, as COCO's five captions of an image would); without ``images`` the first is
        ``None``. ``None`` when the loader holds labelled images."""
        imgs, txts, keys = [], [], []
        for batch in loader:
            x, ids, mask, _ = self.to_device(batch)
            if ids is None:
                return None
            if images:
                imgs.append(self.image_embeddings(x))
            txts.append(self.text_embeddings(ids, mask))
            keys += [tuple(r.tolist()) for r in ids.cpu()]
        if not txts:
            raise DataError("Expected image-text pairs, got an empty loader.")
        return (torch.cat(imgs) if images else None), torch.cat(txts), keys

    @torch.no_grad()
    def stats_from_embeddings(self, emb, others=()) -> Dict[str, np.ndarray]:
        """Per-sample statistics of a split of image-text pairs from its :meth:`split_embeddings`
        ``emb`` (the evaluation context embeds each split once; ``others``: the other splits'
        embeddings evaluated with it):

        - ``loss``: a pair's negated :meth:`pair_scores`, ``−s·⟨v_i, t_i⟩``, independent of the
          rest of its batch (the in-batch CLIP loss depends on the batch's size and captions, so
          splits batched differently would differ for no other reason): the membership score of
          Ko et al., "Practical Membership Inference Attacks Against Large-Scale Multi-Modal
          Models: A Pilot Study", ICCV 2023 (a pair seen in training is closer);
        - ``correct``: whether the caption most similar to the image, among every caption of this
          split and of ``others`` (the forget concept's images compete with the retained
          concepts' captions), is its own: zero-shot classification with the captions as the
          classes, since correctness within a batch would depend on the batch's other captions;
          NaN where only one caption is there to choose from;
        - ``label``: 0 (pairs have no class)."""
        img, txt, keys = emb
        own = len(keys)
        loss = -(self.scale().to(img.device) * (img * txt).sum(-1)).double().cpu().numpy()
        for other in others:
            txt, keys = torch.cat([txt, other[1].to(txt.device)]), keys + other[2]
        index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        cap = torch.tensor([index[k] for k in keys], device=txt.device)
        correct = (np.full(own, np.nan) if len(index) < 2
                   else (cap[(img @ txt.T).argmax(1)] == cap[:own]).double().cpu().numpy())
        return {"loss": loss, "correct": correct, "label": np.zeros(own, dtype=np.int64)}

    def logits(self, batch: Any) -> torch.Tensor:
        """Zero-shot logits over the class prompts."""
        x = self.to_device(batch)[0]
        if self.class_ids is None:
            raise ConfigError("Zero-shot logits need class prompts: CLIPAdapter(model, class_prompts=<(C, L) ids>) "
                              "or VLMUnlearner(model, class_prompts=...).")
        t = self.text_embeddings(self.class_ids.to(self.device),
                                 self.class_mask.to(self.device) if self.class_mask is not None else None)
        return self.scale() * self.image_embeddings(x) @ t.T

    def classifies(self, batch: Any) -> bool:
        """Labelled images are scored as classification (zero-shot logits over the class
        prompts), image-text pairs are not (see :func:`erasus.core.stats.classifies`)."""
        return self.split(batch)[1] is None

    def labels(self, batch: Any) -> torch.Tensor:
        labels = self.to_device(batch)[3]
        if labels is None:
            raise DataError("Expected (pixel_values, labels) for zero-shot classification; this batch holds texts.")
        if self.class_ids is not None:
            self._check_labels(labels)
        return labels

    def logits_and_labels(self, batch: Any):
        return self.logits(batch), self.labels(batch)

    def per_sample_loss(self, batch: Any, logits: torch.Tensor = None) -> torch.Tensor:
        """Each pair's symmetric CLIP loss within the batch; the zero-shot cross-entropy for a
        labelled image batch."""
        if self.split(batch)[1] is None:
            lg = self.logits(batch) if logits is None else logits
            return F.cross_entropy(lg.float(), self.labels(batch), reduction="none")
        lg = self.pair_logits(batch) if logits is None else logits
        target = torch.arange(len(lg), device=lg.device)
        return 0.5 * (F.cross_entropy(lg, target, reduction="none") + F.cross_entropy(lg.T, target, reduction="none"))

    def features(self, batch: Any) -> torch.Tensor:
        with torch.no_grad():
            return self.image_embeddings(self.to_device(batch)[0])

    # parts -----------------------------------------------------------------------------
    def towers(self) -> Tuple[list, list]:
        """``(image-side parameters, text-side parameters)``: the vision model and its projection,
        the text model and its projection (``logit_scale`` belongs to neither)."""
        m = self.model
        vision = [p for n, p in m.named_parameters() if n.startswith(("vision_model", "visual_projection"))]
        text = [p for n, p in m.named_parameters() if n.startswith(("text_model", "text_projection"))]
        if not vision or not text:
            raise ConfigError(f"{type(m).__name__}: expected vision_model / visual_projection and text_model / "
                              "text_projection parameters (transformers' CLIPModel layout).")
        return vision, text


class CLIPWrapper(CLIPAdapter):
    """The specification's CLIP wrapper: :class:`CLIPAdapter` built from a model **or** a Hub
    name / local folder (``CLIPModel.from_pretrained``; weights through safetensors where the
    checkpoint has them), with the parts the specification's examples use::

        model = CLIPWrapper("openai/clip-vit-base-patch32")      # or CLIPWrapper(clip_model)
        model.get_image_features(images, layer_indices=[-1])   # {"layer_-1": hidden states}

    ``processor``: the checkpoint's ``CLIPProcessor`` (``None`` when the folder holds no
    processor files, as a model saved without one); ``tokenizer`` and ``image_processor`` likewise
    (a folder with an image processor and a tokenizer of another class than CLIP's). ``device``: where
    the model is put (``"cuda"``, ``"cpu"``; default: left where it is). Strategies, selectors and
    metrics take the wrapper wherever they take a model."""

    def __init__(self, model_name, device: Optional[str] = None, class_prompts=None, **from_pretrained_kwargs):
        self.processor = self.tokenizer = self.image_processor = None

        def load(name, **kw):
            try:
                from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel, CLIPProcessor
            except ImportError as e:
                raise ConfigError("Loading a CLIP model needs transformers: pip install 'erasus[llm]'.") from e
            for attr, cls in (("processor", CLIPProcessor), ("tokenizer", AutoTokenizer),
                              ("image_processor", AutoImageProcessor)):
                try:
                    setattr(self, attr, cls.from_pretrained(name))
                except (OSError, ValueError, TypeError):
                    pass  # a folder without these files: the caller tokenises and preprocesses
            return CLIPModel.from_pretrained(name, **kw)

        model = load_or_take(model_name, load, device, from_pretrained_kwargs, "a CLIP model")
        super().__init__(model, class_prompts)
        self.vision_model = model.vision_model
        self.text_model = model.text_model

    def get_image_features(self, images: torch.Tensor, layer_indices: Optional[Sequence[int]] = None):
        """The model's image embeddings (unnormalised, as ``CLIPModel.get_image_features``), or,
        with ``layer_indices``, ``{"layer_<i>": hidden states of vision encoder layer i}``."""
        images = images.to(self.device)
        if layer_indices is None:
            return _tensor(self.model.get_image_features(pixel_values=images))
        return layer_outputs(self.model, self.vision_model.encoder.layers, layer_indices,
                             lambda: self.model.get_image_features(pixel_values=images), "vision encoder")

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The model's text embeddings (unnormalised, as ``CLIPModel.get_text_features``)."""
        kw = {"attention_mask": attention_mask.to(self.device)} if attention_mask is not None else {}
        return _tensor(self.model.get_text_features(input_ids=input_ids.to(self.device), **kw))


def toy_clip(vocab: Sequence[str], image_size: int = 16, width: int = 32, embed: int = 16, seed: int = 0):
    """A small ``transformers.CLIPModel`` and a word-level tokenizer over ``vocab``'s words,
    built from code (no weights can be downloaded here): tests and examples train it."""
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    from .causal_lm import word_tokenizer

    from tokenizers import processors

    tok = word_tokenizer(list(vocab), bos=False)
    # CLIP pools the text at its end token: every text ends with <end> (the highest id, so that
    # transformers' legacy argmax pooling finds it too)
    tok.add_special_tokens({"sep_token": "<end>"})
    end = tok.sep_token_id
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A <end>", special_tokens=[("<end>", end)])
    tok.model_max_length = 8
    torch.manual_seed(seed)
    text = CLIPTextConfig(vocab_size=len(tok), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=1,
                          num_attention_heads=4, max_position_embeddings=8, pad_token_id=tok.pad_token_id,
                          bos_token_id=tok.pad_token_id, eos_token_id=end)
    vision = CLIPVisionConfig(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2, num_attention_heads=4,
                              image_size=image_size, patch_size=4, num_channels=3)
    return CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=embed)), tok


def train_clip(model: nn.Module, loader, steps: int = 300, lr: float = 1e-3, seed: int = 0, progress: bool = False):
    """Train a CLIP-style model on ``(pixel_values, input_ids)`` pairs with its symmetric
    contrastive loss (AdamW), for models trained here from scratch (tests, examples)."""
    from .training import train_steps

    torch.manual_seed(seed)
    adapter = CLIPAdapter(model)
    model.train()
    train_steps(adapter.loss, [p for p in model.parameters() if p.requires_grad], loader, steps, lr, "train CLIP",
                progress)
    return model.eval()
