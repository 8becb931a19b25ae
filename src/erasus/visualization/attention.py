"""``AttentionVisualizer``: a transformer's attention on one input before and after unlearning
(the specification's ``erasus.visualization.attention``), over :func:`~.analysis.attention_maps`."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from .analysis import attention_data, attention_maps
from .plots import PathLike


class AttentionVisualizer:
    """Bound to the model after unlearning::

        attn_viz = AttentionVisualizer(model_after)
        attn_viz.plot_attention_comparison(inputs, model_before)

    ``inputs``: the tokenizer's output for one sequence (``{"input_ids": (1, seq), ...}``);
    models: Hugging Face transformers that return attention weights (load them with
    ``attn_implementation="eager"``)."""

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
