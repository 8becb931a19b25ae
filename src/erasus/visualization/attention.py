"""``AttentionVisualizer``: a transformer's attention on one input before and after unlearning
(the specification's ``erasus.visualization.attention``), over :func:`~.analysis.attention_maps`;
for a text-to-image model, where its UNet attends to a word of a prompt
(:func:`~.plots.cross_attention_maps`)."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from .analysis import attention_data, attention_maps
from .plots import PathLike, cross_attention_maps


class AttentionVisualizer:
    """Bound to the model after unlearning::

        attn_viz = AttentionVisualizer(model_after)
        attn_viz.plot_attention_comparison(inputs, model_before)

    ``inputs``: the tokenizer's output for one sequence (``{"input_ids": (1, seq), ...}``);
    models: Hugging Face transformers that return attention weights (load them with
    ``attn_implementation="eager"``). For text-to-image models::

        AttentionVisualizer(erased).plot_cross_attention_comparison("a photo of a sneaker", "sneaker", original)
    """

    def __init__(self, model):
        self.model = model

    def attention(self, inputs: Mapping[str, torch.Tensor], layer: int = -1) -> np.ndarray:
        """``(heads, seq, seq)`` attention weights of the model at ``layer``."""
        return attention_data(self.model, inputs, layer)

    def plot_attention_comparison(self, inputs: Mapping[str, torch.Tensor], model_before, layer: int = -1,
                                  tokens: Optional[Sequence[str]] = None, labels: Sequence[str] = ("before", "after"),
                                  path: Optional[PathLike] = None, formats: Sequence[str] = ("png",),
                                  overwrite: bool = False):
        """Head-averaged attention at ``layer``: ``model_before`` left, this model right."""
        return attention_maps({labels[0]: model_before, labels[1]: self.model}, inputs, tokens, path, layer, formats,
                              overwrite)

    def plot_cross_attention_comparison(self, prompt: str, word: str, model_before,
                                        labels: Sequence[str] = ("before", "after"), path: Optional[PathLike] = None,
                                        formats: Sequence[str] = ("png",), overwrite: bool = False, **kwargs):
        """A text-to-image model's attention to ``word`` in ``prompt``, ``model_before`` left, this
        model right, under what each draws (:func:`~.plots.cross_attention_maps`; ``kwargs``:
        ``images``, ``timestep``, ``seed``, ``steps``, ``guidance_scale``)."""
        return cross_attention_maps({labels[0]: model_before, labels[1]: self.model}, prompt, word, path,
                                    formats=formats, overwrite=overwrite, **kwargs)
