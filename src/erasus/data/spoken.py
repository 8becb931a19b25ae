"""A spoken-word corpus synthesised offline with eSpeak NG, in the LibriSpeech layout.

No speech data set can be downloaded on the machines Erasus is tested on, so its audio and
speech benchmarks and tests speak their own: :func:`synthesize_spoken_corpus` calls the
``espeak-ng`` program (Debian/Ubuntu: ``apt-get install espeak-ng``; macOS: ``brew install
espeak-ng``) once per utterance, each voice being one *speaker*, with a speaking rate and pitch
drawn per utterance from a seeded generator, resamples to 16 kHz (:func:`erasus.data.folders.resample`)
and writes ``root/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` with one 16-bit WAV per
utterance beside it, exactly what :func:`erasus.data.folders.speech_corpus` reads (so a user's
own LibriSpeech-style corpus goes through the same code). ``SPEAKERS.TXT`` at the root names each
speaker's voice, as LibriSpeech's does its readers. From the shell::

    python -m erasus.data.spoken data/digits --per-speaker 60 --seed 0

The same seed, words and voices give the same corpus (eSpeak NG's synthesis is deterministic);
writes are atomic, and an existing corpus folder is refused unless ``overwrite=True``.
"""
from __future__ import annotations

import functools
import io
import os
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path
from typing import Sequence, Tuple, Union

import numpy as np

from ..exceptions import ConfigError, DataError
from .folders import resample

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: eSpeak NG voices (language + variant), one per speaker: accents and voice variants differ.
VOICES = ("en-us+m1", "en-us+f2", "en-gb+m3", "en-gb+f4", "en-gb-scotland+m2", "en-029+f1", "en-gb-x-rp+m4",
          "en-us+f5")


def espeak_program() -> str:
    """The path of the ``espeak-ng`` program, or a :class:`ConfigError` that says how to get it."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ConfigError("Synthesising speech needs the espeak-ng program, which is not on PATH. Install it "
                          "(Debian/Ubuntu: apt-get install espeak-ng; macOS: brew install espeak-ng), or point "
                          "erasus.data.folders.speech_corpus at a LibriSpeech-style corpus of your own.")
    return exe


@functools.lru_cache(maxsize=None)
def installed_voices() -> Tuple[frozenset, frozenset]:
    """``(languages, variants)`` eSpeak NG has installed: the names ``-v`` accepts before and
    after ``+`` (``espeak-ng --voices`` and ``--voices=variant``)."""
    def table(arg):
        out = subprocess.run([espeak_program(), arg], capture_output=True, text=True, check=False).stdout
        names = set()
        for row in out.splitlines()[1:]:
            cols = row.split()
            if len(cols) >= 5:
                names.update({cols[1], cols[3], cols[4].rsplit("/", 1)[-1]})
        return frozenset(names)

    return table("--voices"), table("--voices=variant")


def check_voice(voice: str) -> None:
    """Refuse a voice eSpeak NG does not have (it would silently speak with its default voice)."""
    lang, _, variant = voice.partition("+")
    languages, variants = installed_voices()
    if lang not in languages or (variant and variant not in variants):
        raise ConfigError(f"eSpeak NG has no voice {voice!r}: expected <language>[+<variant>] from `espeak-ng "
                          f"--voices` and `espeak-ng --voices=variant` (e.g. en-us+m1, en-gb+f4).")


def speak(text: str, voice: str, rate_wpm: int = 160, pitch: int = 50, sample_rate: int = 16000) -> np.ndarray:
    """``text`` spoken by eSpeak NG's ``voice`` at ``rate_wpm`` words per minute and ``pitch``
    (0–99): float32 samples in [-1, 1] at ``sample_rate`` Hz, leading and trailing silence kept
    as eSpeak NG writes it."""
    check_voice(voice)
    out = subprocess.run([espeak_program(), "-v", voice, "-s", str(int(rate_wpm)), "-p", str(int(pitch)), "--stdout",
                          text], capture_output=True, check=False)
    if out.returncode != 0 or not out.stdout:
        raise DataError(f"espeak-ng could not speak {text!r} with voice {voice!r}: "
                        f"{out.stderr.decode(errors='replace').strip() or 'no audio'}; `espeak-ng --voices=en` lists "
                        "the voices installed.")
    with wave.open(io.BytesIO(out.stdout), "rb") as w:
        rate, raw = w.getframerate(), w.readframes(w.getnframes())
    x = np.frombuffer(raw, dtype=np.int16).astype(np.float32) / 32767.0
    return resample(x, rate, sample_rate)


def _write_wav(path: Path, x: np.ndarray, sample_rate: int) -> None:
    pcm = (np.clip(x, -1.0, 1.0) * 32767.0).round().astype(np.int16)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    path.write_bytes(buf.getvalue())


def synthesize_spoken_corpus(root: Union[str, Path], words: Sequence[str] = DIGITS, voices: Sequence[str] = VOICES,
                             per_speaker: int = 20, words_per_utterance: Tuple[int, int] = (1, 1),
                             rate_wpm: Tuple[int, int] = (130, 200), pitch: Tuple[int, int] = (30, 70),
                             seed: int = 0, sample_rate: int = 16000, overwrite: bool = False) -> Path:
    """Write a LibriSpeech-style corpus of ``words`` spoken by ``voices`` under ``root`` and
    return ``root``.

    Each voice is a speaker (folder ``0``, ``1``, …, chapter ``0``) with ``per_speaker``
    utterances; an utterance is between ``words_per_utterance[0]`` and ``[1]`` words drawn
    uniformly from ``words`` (one word each by default, so the word is a class label), spoken at
    a rate and pitch drawn uniformly from the given ranges. With single-word utterances and
    ``per_speaker`` a multiple of ``len(words)``, every speaker says every word equally often.
    Transcripts are upper case, as LibriSpeech's are. A fixed ``seed`` gives the same corpus.
    """
    root = Path(root)
    lo, hi = words_per_utterance
    if not words or not voices:
        raise ConfigError("Expected at least one word and one voice.")
    if not 1 <= lo <= hi:
        raise ConfigError(f"words_per_utterance must be (min, max) with 1 <= min <= max, got {words_per_utterance}.")
    if per_speaker < 1:
        raise ConfigError(f"per_speaker must be >= 1, got {per_speaker}.")
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise ConfigError(f"{root} exists and is not empty; pass overwrite=True (from the shell: pass --overwrite) "
                          "to replace it, or choose another folder.")
    for voice in voices:
        check_voice(voice)
    rng = np.random.default_rng(seed)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".spoken-", dir=root.parent))
    try:
        speakers = []
        for s, voice in enumerate(voices):
            chapter = tmp / str(s) / "0"
            chapter.mkdir(parents=True)
            lines = []
            for k in range(per_speaker):
                if lo == hi == 1 and per_speaker % len(words) == 0:
                    text = [words[k % len(words)]]
                else:
                    text = [words[i] for i in rng.integers(0, len(words), int(rng.integers(lo, hi + 1)))]
                wpm, p = int(rng.integers(rate_wpm[0], rate_wpm[1] + 1)), int(rng.integers(pitch[0], pitch[1] + 1))
                uid = f"{s}-0-{k:04d}"
                _write_wav(chapter / f"{uid}.wav", speak(" ".join(text), voice, wpm, p, sample_rate), sample_rate)
                lines.append(f"{uid} {' '.join(text).upper()}")
            (chapter / f"{s}-0.trans.txt").write_text("\n".join(lines) + "\n")
            speakers.append(f"{s} | {voice} | {rate_wpm[0]}-{rate_wpm[1]} wpm | pitch {pitch[0]}-{pitch[1]}")
        (tmp / "SPEAKERS.TXT").write_text("; ID | eSpeak NG voice | rate | pitch\n" + "\n".join(speakers) + "\n")
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def main(argv=None) -> None:
    """``python -m erasus.data.spoken OUT [--per-speaker N] [--seed S] ...``: write the corpus."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m erasus.data.spoken", description=synthesize_spoken_corpus.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="the corpus folder to write (refused if it exists and is not empty, unless --overwrite)")
    p.add_argument("--words", default=",".join(DIGITS), help="comma-separated words (default: the ten digits)")
    p.add_argument("--voices", default=",".join(VOICES), help="comma-separated eSpeak NG voices, one per speaker")
    p.add_argument("--per-speaker", type=int, default=60)
    p.add_argument("--words-per-utterance", default="1,1", help="min,max words in an utterance")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    try:
        lo, hi = (int(v) for v in a.words_per_utterance.split(","))
    except ValueError:
        p.error(f"--words-per-utterance: expected min,max (e.g. 1,3), got {a.words_per_utterance!r}")
    try:
        root = synthesize_spoken_corpus(a.out, [w for w in a.words.split(",") if w], [v for v in a.voices.split(",") if v],
                                        per_speaker=a.per_speaker, words_per_utterance=(lo, hi), seed=a.seed,
                                        overwrite=a.overwrite)
    except ConfigError as err:
        p.error(str(err))
    n = sum(1 for _ in root.glob("*/*/*.wav"))
    print(f"{n} utterances by {len(a.voices.split(','))} speakers in {root} (LibriSpeech layout; "
          f"erasus.data.folders.speech_corpus reads it)")


if __name__ == "__main__":
    main()
