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

from typing import Any, Union

from torch import nn

from ..core.exceptions import ConfigError
from .erasus_unlearner import ErasusUnlearner
from .saving import SavesPretrained


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


class _HFClassifierUnlearner(SavesPretrained, ErasusUnlearner):
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

    @property
    def card_title(self) -> str:  # type: ignore[override]
        return f"Unlearned {self.kind} classifier"

    @property
    def card_tags(self) -> tuple:  # type: ignore[override]
        return (f"{self.kind}-classification",)


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
