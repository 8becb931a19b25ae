"""``AudioUnlearner`` and ``VideoUnlearner``: Hugging Face audio and video classifiers, and
speech-to-text models (Whisper).

``Wav2Vec2ForSequenceClassification`` (and any ``AutoModelForAudioClassification``: HuBERT,
WavLM, Whisper's encoder classifier, AST) and ``VideoMAEForVideoClassification`` (and any
``AutoModelForVideoClassification``: TimeSformer, ViViT) are classifiers on ``(inputs, labels)``
batches — ``inputs`` the raw waveform (``input_values``), the log-mel features
(``input_features``) or the frames (``pixel_values``) — so every classifier strategy, selector
and metric applies to them unchanged; these classes check the family and save the result as a
Hugging Face model with a model card.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Union

from torch import nn

from ..core.exceptions import ConfigError
from .erasus_unlearner import ErasusUnlearner
from .llm_unlearner import _version


def is_audio_classifier(model) -> bool:
    return (isinstance(model, nn.Module) and getattr(model, "main_input_name", None) in ("input_values", "input_features")
            and type(model).__name__.endswith(("ForSequenceClassification", "ForAudioClassification")))


def is_audio_model(model) -> bool:
    """An audio classifier or a speech-to-text encoder-decoder (Whisper)."""
    from ..models.seq2seq_lm import is_speech_seq2seq

    return is_audio_classifier(model) or is_speech_seq2seq(model)


def is_video_classifier(model) -> bool:
    return (isinstance(model, nn.Module) and getattr(model, "main_input_name", None) == "pixel_values"
            and type(model).__name__.endswith("ForVideoClassification"))


class _HFClassifierUnlearner(ErasusUnlearner):
    kind = ""
    examples = ""

    def __init__(self, model: nn.Module, strategy: Union[str, Any] = "wga", **kwargs):
        if not self._accepts(model):
            raise ConfigError(f"Expected a Hugging Face {self.kind} classifier ({self.examples}), got "
                              f"{type(model).__name__}. Other models: MultimodalUnlearner.from_model(model).")
        super().__init__(model, strategy=strategy, **kwargs)

    @staticmethod
    def _accepts(model) -> bool:
        raise NotImplementedError  # abstract

    def model_card(self) -> str:
        r = self.result_
        if r is None:
            raise ConfigError("Nothing to describe yet: call fit() first.")
        return "\n".join([
            "---", f"tags: [erasus, machine-unlearning, {self.kind}-classification]", "---", "",
            f"# Unlearned {self.kind} classifier", "",
            f"Produced with Erasus {_version()} on {time.strftime('%Y-%m-%d')} from `{type(self.model).__name__}`.", "",
            f"- method: `{r.strategy}`", f"- steps: {r.steps}; stopped: {r.stop_reason}", "",
            "## Configuration", "", "```json", json.dumps(r.config, indent=1, default=str), "```", ""]) + "\n"

    def save_pretrained(self, path: Union[str, Path], overwrite: bool = False) -> Path:
        """The model (``save_pretrained``, safetensors) and ``README.md`` (the model card),
        written atomically (:func:`erasus.utils.io.replace_dir`); an existing non-empty ``path``
        is replaced only with ``overwrite=True``."""
        from ..utils.io import replace_dir

        card = self.model_card()

        def build(tmp: Path) -> None:
            self.model.save_pretrained(tmp, safe_serialization=True)
            (tmp / "README.md").write_text(card)

        return replace_dir(build, Path(path), overwrite=overwrite)


class AudioUnlearner(_HFClassifierUnlearner):
    """The :class:`ErasusUnlearner` API for audio models: classifiers (``(input_values,
    labels)`` batches: forget a speaker's recordings, a keyword or a sound class) and
    speech-to-text models (``WhisperForConditionalGeneration``: dicts of ``input_features``
    and the transcript's ``labels``; :class:`~erasus.models.SpeechSeq2SeqAdapter` scores the
    transcript's NLL, so the likelihood-based strategies apply). Default strategy WGA."""

    kind = "audio"
    examples = ("Wav2Vec2ForSequenceClassification, any AutoModelForAudioClassification, or "
                "WhisperForConditionalGeneration")
    _accepts = staticmethod(is_audio_model)


class VideoUnlearner(_HFClassifierUnlearner):
    """The :class:`ErasusUnlearner` API for video classifiers (``(pixel_values, labels)`` batches
    of frames, ``(batch, frames, channels, height, width)``). Default strategy WGA."""

    kind = "video"
    examples = "VideoMAEForVideoClassification or any AutoModelForVideoClassification"
    _accepts = staticmethod(is_video_classifier)
