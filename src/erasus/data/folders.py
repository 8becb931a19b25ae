"""Loaders for the data layouts the specification names, read from local folders (nothing is
downloaded): images in class folders (CIFAR / ImageNet exports), COCO-style captions, a
LibriSpeech-style speech corpus, and UCF-style video classes (clips as folders of frames).

Each returns tensors or records in the batch formats the adapters take: ``(images, labels)``
for classifiers, ``(pixel_values, input_ids)`` pairs for CLIP, ``{"audio", "text", "speaker",
"id"}`` records for speech, ``(clips, labels)`` for video classifiers. Images are read with
Pillow, resized to ``size`` × ``size`` and scaled to ``[0, 1]`` (``(C, H, W)``, RGB).
"""
from __future__ import annotations

import json
import wave
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
import torch

from ..exceptions import DataError

PathLike = Union[str, Path]
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def _folder(path: PathLike, what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise DataError(f"Expected {what} at {p}: no such folder.")
    return p


def read_image(path: PathLike, size: int) -> torch.Tensor:
    """One image as a ``(3, size, size)`` tensor in ``[0, 1]``."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB").resize((size, size), Image.BILINEAR)
        return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def _images_in(folder: Path) -> List[Path]:
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)


def image_folder(root: PathLike, size: int = 32) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
    """``(images, labels, classes)`` from ``root/<class>/<image>`` (the layout of CIFAR and
    ImageNet exports, torchvision's ``ImageFolder``); classes in sorted order."""
    root = _folder(root, "a folder of class folders")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    xs, ys = [], []
    for c, name in enumerate(classes):
        for f in _images_in(root / name):
            xs.append(read_image(f, size))
            ys.append(c)
    if not xs:
        raise DataError(f"Expected images ({', '.join(IMAGE_EXTENSIONS)}) in class folders under {root}, found none.")
    return torch.stack(xs), torch.tensor(ys), classes


def image_captions(images_dir: PathLike, annotations: PathLike, tokenizer, size: int = 224,
                   max_length: int = 77) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
    """``(pixel_values, input_ids, captions)`` of COCO-style captions: ``annotations`` is a JSON
    file with ``images`` (``id``, ``file_name``) and ``annotations`` (``image_id``, ``caption``);
    every caption gives one image-text pair (COCO has five per image). ``tokenizer``: a Hugging
    Face tokenizer (CLIP's), padded to ``max_length``."""
    images_dir = _folder(images_dir, "the caption data set's images")
    try:
        meta = json.loads(Path(annotations).read_text())
        files = {im["id"]: im["file_name"] for im in meta["images"]}
        pairs = [(files[a["image_id"]], a["caption"]) for a in meta["annotations"]]
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"Expected a COCO-style captions JSON at {annotations} (images: id, file_name; annotations: "
                        f"image_id, caption): {err!r}") from err
    if not pairs:
        raise DataError(f"No captions in {annotations}.")
    cache: Dict[str, torch.Tensor] = {}
    pixels = []
    for name, _ in pairs:
        if name not in cache:
            cache[name] = read_image(images_dir / name, size)
        pixels.append(cache[name])
    captions = [c for _, c in pairs]
    ids = tokenizer(captions, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt").input_ids
    return torch.stack(pixels), ids, captions


def read_wav(path: PathLike) -> Tuple[torch.Tensor, int]:
    """``(waveform in [-1, 1], sample rate)`` of a PCM WAV file (mono, or the channels' mean)."""
    with wave.open(str(path), "rb") as w:
        width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
        raw = w.readframes(w.getnframes())
    if width not in (1, 2, 4):
        raise DataError(f"{path}: expected 8-, 16- or 32-bit PCM WAV, got {8 * width}-bit samples.")
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}[width]
    x = np.frombuffer(raw, dtype=dtype).astype(np.float32)
    x = (x - 128.0) / 128.0 if width == 1 else x / float(np.iinfo(dtype).max)
    return torch.from_numpy(x.reshape(-1, channels).mean(1)), rate


def speech_corpus(root: PathLike, sample_rate: int = 16000) -> List[dict]:
    """Records ``{"audio", "text", "speaker", "id"}`` from a LibriSpeech-style corpus:
    ``root/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` (lines ``<id> <TRANSCRIPT>``) and
    ``<id>.wav`` beside it. LibriSpeech ships FLAC: convert it to WAV first (``ffmpeg`` or
    ``sox``); other sample rates than ``sample_rate`` are refused rather than resampled."""
    root = _folder(root, "a LibriSpeech-style corpus (speaker/chapter folders)")
    out = []
    for trans in sorted(root.glob("*/*/*.trans.txt")):
        speaker = trans.parent.parent.name
        for line in trans.read_text().splitlines():
            if not line.strip():
                continue
            uid, _, text = line.partition(" ")
            audio = trans.parent / f"{uid}.wav"
            if not audio.exists():
                flac = trans.parent / f"{uid}.flac"
                raise DataError(f"Expected {audio}" + (f"; found {flac.name}: convert FLAC to WAV first (e.g. ffmpeg -i "
                                                       f"{flac.name} {audio.name})" if flac.exists() else "."))
            x, rate = read_wav(audio)
            if rate != sample_rate:
                raise DataError(f"{audio}: {rate} Hz, expected {sample_rate} Hz; resample the corpus first.")
            out.append({"audio": x, "text": text.strip(), "speaker": speaker, "id": uid})
    if not out:
        raise DataError(f"Expected <speaker>/<chapter>/*.trans.txt transcripts under {root}, found none.")
    return out


def video_folder(root: PathLike, frames: int = 16, size: int = 224) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
    """``(clips (N, frames, 3, size, size), labels, classes)`` from UCF-style class folders
    whose clips are folders of frame images (``root/<class>/<clip>/<frame>.jpg``, as clips are
    commonly extracted for training); ``frames`` frames are taken evenly spaced. Video files
    (``.avi``, ``.mp4``) are not decoded here: extract their frames first (``ffmpeg -i clip.avi
    clip/%04d.jpg``)."""
    root = _folder(root, "a folder of class folders of clips")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    clips, ys = [], []
    for c, name in enumerate(classes):
        for item in sorted((root / name).iterdir()):
            if item.is_file() and item.suffix.lower() in (".avi", ".mp4", ".mkv", ".mov", ".webm"):
                raise DataError(f"{item}: video files are not decoded here; extract its frames into a folder first "
                                f"(ffmpeg -i {item.name} {item.stem}/%04d.jpg).")
            if not item.is_dir():
                continue
            imgs = _images_in(item)
            if len(imgs) < frames:
                raise DataError(f"{item}: {len(imgs)} frames, expected at least {frames}.")
            pick = np.linspace(0, len(imgs) - 1, frames).round().astype(int)
            clips.append(torch.stack([read_image(imgs[k], size) for k in pick]))
            ys.append(c)
    if not clips:
        raise DataError(f"Expected clips (folders of frames) in class folders under {root}, found none.")
    return torch.stack(clips), torch.tensor(ys), classes


def speech_batch(records: Sequence[dict], feature_extractor, tokenizer, max_label_length: int = 64) -> dict:
    """A speech-to-text batch (``input_features``, ``labels``) from :func:`speech_corpus` records:
    ``feature_extractor`` (Whisper's: log-mel features) and ``tokenizer`` (the transcript's ids;
    padding marked -100)."""
    feats = feature_extractor([r["audio"].numpy() for r in records], sampling_rate=16000, return_tensors="pt")
    tok = tokenizer([r["text"] for r in records], padding="max_length", max_length=max_label_length, truncation=True,
                    return_tensors="pt")
    labels = tok.input_ids.masked_fill(tok.attention_mask == 0, -100)
    return {"input_features": feats.input_features, "labels": labels}
