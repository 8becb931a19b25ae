"""The local-folder loaders (class folders of images, COCO-style captions, a LibriSpeech-style
corpus, UCF-style clips as frame folders) on small fixtures written here, and word error rate."""
import json
import wave

import numpy as np
import pytest
import torch

from erasus.core.exceptions import DataError
from erasus.data.folders import image_captions, image_folder, read_wav, speech_corpus, video_folder

PIL = pytest.importorskip("PIL.Image")


def png(path, rgb, size=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.new("RGB", (size, size), rgb).save(path)


def test_image_folder_reads_classes_in_order(tmp_path):
    png(tmp_path / "cat" / "a.png", (255, 0, 0))
    png(tmp_path / "cat" / "b.png", (255, 0, 0))
    png(tmp_path / "dog" / "c.png", (0, 0, 255))
    x, y, classes = image_folder(tmp_path, size=4)
    assert classes == ["cat", "dog"] and y.tolist() == [0, 0, 1] and x.shape == (3, 3, 4, 4)
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0])) and torch.allclose(x[2, 2], torch.ones(4, 4))
    with pytest.raises(DataError, match="no such folder"):
        image_folder(tmp_path / "missing")


def test_image_captions_pairs_every_caption_with_its_image(tmp_path):
    from erasus.models.causal_lm import word_tokenizer

    png(tmp_path / "img" / "1.png", (255, 0, 0))
    png(tmp_path / "img" / "2.png", (0, 255, 0))
    ann = {"images": [{"id": 1, "file_name": "1.png"}, {"id": 2, "file_name": "2.png"}],
           "annotations": [{"image_id": 1, "caption": "a red square"}, {"image_id": 2, "caption": "a green square"},
                           {"image_id": 1, "caption": "red"}]}
    (tmp_path / "captions.json").write_text(json.dumps(ann))
    tok = word_tokenizer(["a red square", "a green square"])
    pixels, ids, captions = image_captions(tmp_path / "img", tmp_path / "captions.json", tok, size=4, max_length=6)
    assert captions == ["a red square", "a green square", "red"] and ids.shape == (3, 6)
    assert torch.equal(pixels[0], pixels[2]) and pixels[1, 1].mean() == 1.0
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DataError, match="COCO-style"):
        image_captions(tmp_path / "img", tmp_path / "bad.json", tok)
    # a pretrained CLIP's own preprocessing: its mean / std normalisation, not [0, 1]
    transformers = pytest.importorskip("transformers")
    proc = transformers.CLIPImageProcessor(size={"shortest_edge": 4}, crop_size={"height": 4, "width": 4})
    got, _, _ = image_captions(tmp_path / "img", tmp_path / "captions.json", tok, max_length=6, image_processor=proc)
    mean, std = torch.tensor(proc.image_mean).view(3, 1, 1), torch.tensor(proc.image_std).view(3, 1, 1)
    assert got.shape == (3, 3, 4, 4)
    assert torch.allclose(got, (pixels - mean) / std, atol=1e-2)


def write_wav(path, samples, rate=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.asarray(samples) * 32767).astype(np.int16).tobytes())


def test_speech_corpus_reads_a_librispeech_layout(tmp_path):
    chapter = tmp_path / "19" / "198"
    tone = 0.5 * np.sin(np.arange(1600) / 5)
    write_wav(chapter / "19-198-0000.wav", tone)
    write_wav(chapter / "19-198-0001.wav", -tone)
    (chapter / "19-198.trans.txt").write_text("19-198-0000 HELLO WORLD\n19-198-0001 GOOD BYE\n")
    recs = speech_corpus(tmp_path)
    assert [r["text"] for r in recs] == ["HELLO WORLD", "GOOD BYE"] and recs[0]["speaker"] == "19"
    assert np.allclose(recs[0]["audio"].numpy(), tone, atol=1e-4)
    assert read_wav(chapter / "19-198-0001.wav")[1] == 16000
    # another rate is resampled: a 100 Hz sine at 16 kHz read at 8 kHz is that sine at 8 kHz
    slow = np.sin(2 * np.pi * 100 * np.arange(3200) / 16000)
    write_wav(chapter / "19-198-0000.wav", 0.5 * slow)
    low = speech_corpus(tmp_path, sample_rate=8000)[0]["audio"].numpy()
    assert len(low) == 1600
    assert np.allclose(low[100:-100], 0.5 * np.sin(2 * np.pi * 100 * np.arange(1600) / 8000)[100:-100], atol=1e-3)
    (chapter / "19-198-0001.wav").unlink()
    with pytest.raises(DataError, match="no audio for utterance 19-198-0001"):
        speech_corpus(tmp_path)


def test_speech_corpus_reads_librispeech_flac(tmp_path):
    """LibriSpeech's own files are FLAC: read losslessly through soundfile."""
    soundfile = pytest.importorskip("soundfile")
    chapter = tmp_path / "84" / "121123"
    x = (0.3 * np.sin(np.arange(4000) / 7) * 32767).astype(np.int16)
    chapter.mkdir(parents=True)
    soundfile.write(str(chapter / "84-121123-0000.flac"), x, 16000, subtype="PCM_16")
    (chapter / "84-121123.trans.txt").write_text("84-121123-0000 GO DO YOU HEAR\n")
    rec = speech_corpus(tmp_path)[0]
    assert rec["text"] == "GO DO YOU HEAR" and rec["speaker"] == "84"
    assert np.allclose(rec["audio"].numpy(), x / 32768.0, atol=1e-4)


def test_video_folder_samples_frames_evenly(tmp_path):
    for k in range(4):
        png(tmp_path / "jump" / "clip1" / f"{k:04d}.png", (60 * k, 0, 0))
        png(tmp_path / "run" / "clip2" / f"{k:04d}.png", (0, 60 * k, 0))
    clips, y, classes = video_folder(tmp_path, frames=2, size=4)
    assert classes == ["jump", "run"] and clips.shape == (2, 2, 3, 4, 4) and y.tolist() == [0, 1]
    assert clips[0, 0, 0].mean() == 0.0 and clips[0, 1, 0].mean() == pytest.approx(180 / 255)
    (tmp_path / "run" / "clip3.avi").write_bytes(b"RIFF")
    with pytest.raises(DataError, match="clip3.avi"):
        video_folder(tmp_path, frames=2, size=4)


def test_video_folder_decodes_video_files(tmp_path):
    """UCF101 ships .avi files: decoded through PyAV, frames taken evenly spaced."""
    av = pytest.importorskip("av")
    for name, channel in (("jump", 0), ("run", 1)):
        path = tmp_path / name / "v_clip.avi"
        path.parent.mkdir(parents=True)
        with av.open(str(path), "w") as out:
            stream = out.add_stream("ffv1", rate=10)  # lossless, so colours come back exactly
            stream.width = stream.height = 16
            stream.pix_fmt = "bgr0"
            for k in range(9):
                frame = np.zeros((16, 16, 3), np.uint8)
                frame[..., channel] = 30 * k
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
    clips, y, classes = video_folder(tmp_path, frames=3, size=8)
    assert classes == ["jump", "run"] and clips.shape == (2, 3, 3, 8, 8) and y.tolist() == [0, 1]
    # frames 0, 4 and 8 of 9
    assert clips[0, :, 0].mean((1, 2)).tolist() == pytest.approx([0, 120 / 255, 240 / 255], abs=1e-6)
    assert clips[1, :, 1].mean((1, 2)).tolist() == pytest.approx([0, 120 / 255, 240 / 255], abs=1e-6)
    assert clips[0, :, 1].abs().max() == 0
    with pytest.raises(DataError, match="expected at least 12"):
        video_folder(tmp_path, frames=12, size=8)
    (tmp_path / "run" / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(DataError, match="broken.mp4"):
        video_folder(tmp_path, frames=3, size=8)


def test_word_error_rate_of_forgotten_and_kept_words():
    """A small Whisper trained on four one-word utterances: WER 0 on what it learned; after
    forgetting one word its WER there rises to the retrained model's while the others stay at 0."""
    pytest.importorskip("jiwer")
    import warnings

    from torch.utils.data import DataLoader

    from erasus.data.synthetic import spoken_records
    from erasus.metrics.speech import word_error_rate
    from erasus.models import wrap
    from erasus.models.causal_lm import word_tokenizer
    from erasus.models.training import train_steps
    from erasus.unlearners import AudioUnlearner
    from test_media import whisper

    tok = word_tokenizer(["w0 w1 w2 w3"])
    assert tok.convert_tokens_to_ids(["w0", "w3"]) == [3, 6]
    train, test = spoken_records(64, 0), spoken_records(16, 1)
    forgotten = lambda r: int(r["labels"][0]) == 3  # noqa: E731

    def fit(rs):
        m = whisper()
        m.train()
        train_steps(wrap(m).loss, list(m.parameters()),
                    DataLoader(rs, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0)), 300, 3e-3)
        return m.eval()

    wer = lambda m, rs: word_error_rate(m, rs, tok, start_token=1, end_token=2)  # noqa: E731
    f_test, r_test = [r for r in test if forgotten(r)], [r for r in test if not forgotten(r)]
    original, retrained = fit(train), fit([r for r in train if not forgotten(r)])
    assert wer(original, f_test) == 0.0 and wer(original, r_test) == 0.0 and wer(retrained, f_test) == 1.0
    u = AudioUnlearner(original)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u.fit(DataLoader([r for r in train if forgotten(r)], batch_size=32),
              DataLoader([r for r in train if not forgotten(r)], batch_size=32), progress=False)
    assert wer(u.model, f_test) == 1.0 and wer(u.model, r_test) <= 0.05
