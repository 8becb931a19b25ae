"""Loaders for the data layouts the specification names, read from local folders (nothing is
downloaded): images in class folders (CIFAR / ImageNet exports), COCO-style captions, a
LibriSpeech-style speech corpus (FLAC or WAV), and UCF-style video classes (video files or folders of frames).

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
        return _resized(im, size)


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
                   max_length: int = 77, image_processor=None) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
    """``(pixel_values, input_ids, captions)`` of COCO-style captions: ``annotations`` is a JSON
    file with ``images`` (``id``, ``file_name``) and ``annotations`` (``image_id``, ``caption``);
    every caption gives one image-text pair (COCO has five per image). ``tokenizer``: a Hugging
    Face tokenizer (CLIP's), padded to ``max_length``.

    ``image_processor``: for a pretrained CLIP, its image processor
    (``CLIPImageProcessor.from_pretrained(name)`` or the ``CLIPProcessor``): the pixel values
    are then what the model was trained on (its resizing, crop and mean / std normalisation)
    and ``size`` is not used. Without it the images are ``size`` × ``size`` in ``[0, 1]``, what
    a model trained here from such pixels (:func:`~erasus.models.clip.toy_clip`) takes; a
    pretrained CLIP given those embeds them wrongly without any error."""
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
    return _pairs(images_dir, pairs, tokenizer, size, max_length, image_processor)


def _pairs(images_dir: Path, pairs, tokenizer, size, max_length, image_processor):
    """``(pixel_values, input_ids, captions)`` of ``(file name, caption)`` pairs under ``images_dir``."""
    cache: Dict[str, torch.Tensor] = {}
    pixels = []
    for name, _ in pairs:
        if name not in cache:
            f = images_dir / name
            if not f.is_file():
                raise DataError(f"Expected the image {f} that the captions name: no such file.")
            cache[name] = read_image(f, size) if image_processor is None else _processed(f, image_processor)
        pixels.append(cache[name])
    captions = [c for _, c in pairs]
    ids = tokenizer(captions, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt").input_ids
    return torch.stack(pixels), ids, captions


CAPTION_COLUMNS = ("text", "caption")


def captioned_images(folder: PathLike, tokenizer, size: int = 224, max_length: int = 77,
                     image_processor=None) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
    """``(pixel_values, input_ids, captions)`` of a folder of images and their captions, in the
    layouts of Hugging Face's ``imagefolder``:

    * a ``metadata.jsonl`` (one JSON object per line) or ``metadata.csv`` beside the images, with
      a ``file_name`` column (relative to the folder) and a ``text`` or ``caption`` column;
    * without one, a folder per concept (``folder/<concept>/<image>``): the folder's name is the
      caption (underscores read as spaces), as in CLIP's zero-shot prompts without a template.

    A flat folder of images without captions is refused: image-text models unlearn pairs, and
    a caption made up for every image would decide what is forgotten. ``tokenizer`` and
    ``image_processor`` as in :func:`image_captions`."""
    import csv

    root = _folder(folder, "a folder of captioned images")
    jsonl, table = root / "metadata.jsonl", root / "metadata.csv"
    if jsonl.is_file() or table.is_file():
        meta = jsonl if jsonl.is_file() else table
        try:
            rows = ([json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()] if meta is jsonl
                    else list(csv.DictReader(table.read_text().splitlines())))
        except ValueError as err:
            raise DataError(f"{meta}: not readable as {'JSON lines' if meta is jsonl else 'CSV'}: {err}") from err
        column = next((c for c in CAPTION_COLUMNS if rows and c in rows[0]), None)
        if not rows or "file_name" not in rows[0] or column is None:
            raise DataError(f"Expected {meta.name} rows with a file_name and a caption column ({' or '.join(CAPTION_COLUMNS)}), "
                            f"got columns {sorted(rows[0]) if rows else 'none (no rows)'}.")
        pairs = [(r["file_name"], str(r[column])) for r in rows]
    else:
        concepts = sorted(d for d in root.iterdir() if d.is_dir())
        pairs = [(f"{d.name}/{f.name}", d.name.replace("_", " ")) for d in concepts for f in _images_in(d)]
        if not pairs:
            flat = len(_images_in(root))
            raise DataError(f"Expected captions for the images in {root}: a metadata.jsonl or metadata.csv with "
                            f"file_name and text columns, or one folder per concept named by its caption "
                            f"({'found ' + str(flat) + ' images and no captions' if flat else 'found no images'}).")
    return _pairs(root, pairs, tokenizer, size, max_length, image_processor)


def captioned_pairs(folder: PathLike, tokenizer, image_processor):
    """:func:`captioned_images` of ``folder`` through a checkpoint's image processor and
    tokenizer, as a dataset of ``(pixel_values, input_ids)`` pairs (CLIP's batches); captions
    padded to the tokenizer's length, at most CLIP's 77."""
    from torch.utils.data import TensorDataset

    from ..exceptions import ConfigError

    if image_processor is None or tokenizer is None:
        missing = [n for n, v in (("an image processor", image_processor), ("a tokenizer", tokenizer)) if v is None]
        raise ConfigError(f"Reading image folders needs the checkpoint's {' and '.join(missing)}, which it was not "
                          "loaded with: save them beside the weights (e.g. CLIPProcessor, or CLIPImageProcessor and the "
                          "tokenizer, .save_pretrained(folder)), or pass DataLoaders of (pixel_values, input_ids) pairs.")
    max_length = min(int(getattr(tokenizer, "model_max_length", 77) or 77), 77)
    x, ids, _ = captioned_images(folder, tokenizer, max_length=max_length, image_processor=image_processor)
    return TensorDataset(x, ids)


def _processed(path: Path, image_processor) -> torch.Tensor:
    """One image through a Hugging Face image processor (RGB), as ``(3, H, W)`` pixel values."""
    from PIL import Image

    proc = getattr(image_processor, "image_processor", image_processor)  # a CLIPProcessor holds one
    with Image.open(path) as im:
        return proc(images=im.convert("RGB"), return_tensors="pt")["pixel_values"][0]


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


AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``x`` (float samples at ``rate`` Hz) at ``target`` Hz by polyphase filtering
    (``scipy.signal.resample_poly``: a Kaiser-windowed anti-aliasing FIR, as torchaudio's and
    librosa's polyphase resamplers)."""
    if rate == target:
        return np.asarray(x, dtype=np.float32)
    from fractions import Fraction

    from scipy.signal import resample_poly

    f = Fraction(int(target), int(rate))
    return resample_poly(np.asarray(x, dtype=np.float32), f.numerator, f.denominator).astype(np.float32)


def read_audio(path: PathLike) -> Tuple[torch.Tensor, int]:
    """``(waveform in [-1, 1], sample rate)`` of a WAV, FLAC or Ogg file (mono, or the channels'
    mean). WAV is read by the standard library; FLAC and Ogg through ``soundfile`` (libsndfile,
    ``pip install soundfile`` or ``erasus[audio]``)."""
    path = Path(path)
    if path.suffix.lower() == ".wav":
        return read_wav(path)
    try:
        import soundfile
    except ImportError as err:
        raise DataError(f"{path}: reading {path.suffix} audio needs soundfile (pip install soundfile, or "
                        "erasus[audio]); WAV files need nothing.") from err
    x, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return torch.from_numpy(np.ascontiguousarray(x.mean(1))), int(rate)


def speech_corpus(root: PathLike, sample_rate: int = 16000) -> List[dict]:
    """Records ``{"audio", "text", "speaker", "id"}`` from a LibriSpeech-style corpus:
    ``root/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` (lines ``<id> <TRANSCRIPT>``) and
    ``<id>.flac`` (LibriSpeech's own files, read through ``soundfile``) or ``<id>.wav`` beside
    it. Audio at another rate than ``sample_rate`` is resampled (:func:`resample`).
    :func:`erasus.data.spoken.synthesize_spoken_corpus` writes such a corpus offline."""
    root = _folder(root, "a LibriSpeech-style corpus (speaker/chapter folders)")
    out = []
    for trans in sorted(root.glob("*/*/*.trans.txt")):
        speaker = trans.parent.parent.name
        for line in trans.read_text().splitlines():
            if not line.strip():
                continue
            uid, _, text = line.partition(" ")
            found = [trans.parent / f"{uid}{ext}" for ext in AUDIO_EXTENSIONS if (trans.parent / f"{uid}{ext}").exists()]
            if not found:
                raise DataError(f"{trans}: no audio for utterance {uid} (expected {uid}.flac, .wav or .ogg beside it).")
            x, rate = read_audio(found[0])
            x = torch.from_numpy(resample(x.numpy(), rate, sample_rate))
            out.append({"audio": x, "text": text.strip(), "speaker": speaker, "id": uid})
    if not out:
        raise DataError(f"Expected <speaker>/<chapter>/*.trans.txt transcripts under {root}, found none.")
    return out


VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm")


def _evenly(n: int, frames: int) -> np.ndarray:
    return np.linspace(0, n - 1, frames).round().astype(int)


def _resized(im, size: int) -> torch.Tensor:
    from PIL import Image

    im = im.convert("RGB").resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def read_video(path: PathLike, frames: int = 16, size: int = 224) -> torch.Tensor:
    """``frames`` evenly spaced frames of a video file (``.avi``, ``.mp4``, …) as a
    ``(frames, 3, size, size)`` tensor in ``[0, 1]``, decoded by FFmpeg's libraries through PyAV
    (``pip install av``, or ``erasus[video]``)."""
    try:
        import av
    except ImportError as err:
        raise DataError(f"{path}: decoding video files needs PyAV (pip install av, or erasus[video]); or extract the "
                        f"frames into a folder first (ffmpeg -i {Path(path).name} {Path(path).stem}/%04d.jpg).") from err
    try:
        with av.open(str(path)) as container:
            images = [f.to_image() for f in container.decode(video=0)]
    except av.error.FFmpegError as err:
        raise DataError(f"{path}: FFmpeg could not decode it: {err}") from err
    if len(images) < frames:
        raise DataError(f"{path}: {len(images)} frames, expected at least {frames}.")
    return torch.stack([_resized(images[k], size) for k in _evenly(len(images), frames)])


def video_folder(root: PathLike, frames: int = 16, size: int = 224) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
    """``(clips (N, frames, 3, size, size), labels, classes)`` from UCF-style class folders
    (``root/<class>/<clip>.avi``, as UCF101 ships, or ``root/<class>/<clip>/<frame>.jpg``, clips
    extracted to frames); ``frames`` frames are taken evenly spaced. Video files are decoded by
    :func:`read_video` (PyAV)."""
    root = _folder(root, "a folder of class folders of clips")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    clips, ys = [], []
    for c, name in enumerate(classes):
        for item in sorted((root / name).iterdir()):
            if item.is_file() and item.suffix.lower() in VIDEO_EXTENSIONS:
                clips.append(read_video(item, frames, size))
            elif item.is_dir():
                imgs = _images_in(item)
                if len(imgs) < frames:
                    raise DataError(f"{item}: {len(imgs)} frames, expected at least {frames}.")
                clips.append(torch.stack([read_image(imgs[k], size) for k in _evenly(len(imgs), frames)]))
            else:
                continue
            ys.append(c)
    if not clips:
        raise DataError(f"Expected clips (video files or folders of frames) in class folders under {root}, found none.")
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
