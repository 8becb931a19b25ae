"""The eSpeak NG corpus: real synthesised speech in the LibriSpeech layout, read back by the
same loader a user's corpus goes through."""
import shutil

import numpy as np
import pytest

from erasus.data.folders import speech_corpus
from erasus.data.spoken import speak, synthesize_spoken_corpus
from erasus.exceptions import ConfigError

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                reason="needs the espeak-ng program (install.sh installs Debian's espeak-ng)")


def test_corpus_is_deterministic_balanced_and_read_by_speech_corpus(tmp_path):
    words, voices = ("one", "two", "three"), ("en-us+m1", "en-gb+f4")
    root = synthesize_spoken_corpus(tmp_path / "c", words=words, voices=voices, per_speaker=6, seed=3)
    recs = speech_corpus(root)
    assert len(recs) == 12 and {r["speaker"] for r in recs} == {"0", "1"}
    for s in ("0", "1"):  # every speaker says every word twice
        assert sorted(r["text"] for r in recs if r["speaker"] == s) == ["ONE", "ONE", "THREE", "THREE", "TWO", "TWO"]
    assert "en-gb+f4" in (root / "SPEAKERS.TXT").read_text()
    for r in recs:  # speech, not silence: 0.2 to 2 s at 16 kHz with energy
        assert 3200 < len(r["audio"]) < 32000 and float(r["audio"].abs().max()) > 0.05
    again = speech_corpus(synthesize_spoken_corpus(tmp_path / "d", words=words, voices=voices, per_speaker=6, seed=3))
    assert all(np.array_equal(a["audio"].numpy(), b["audio"].numpy()) for a, b in zip(recs, again))
    # two voices saying the same word differ; the same voice at another seed differs in rate or pitch
    one = [r["audio"].numpy() for r in recs if r["text"] == "ONE"]
    assert not np.array_equal(one[0][:3000], one[2][:3000])
    with pytest.raises(ConfigError, match="overwrite=True"):
        synthesize_spoken_corpus(root, words=words, voices=voices, per_speaker=6)
    before = (root / "0" / "0" / "0-0.trans.txt").read_text()
    synthesize_spoken_corpus(root, words=("four",), voices=voices[:1], per_speaker=2, overwrite=True)
    assert (root / "0" / "0" / "0-0.trans.txt").read_text() != before and not (root / "1").exists()


def test_multiword_utterances_and_bad_arguments(tmp_path):
    root = synthesize_spoken_corpus(tmp_path / "m", words=("five", "six"), voices=("en-us+f2",), per_speaker=4,
                                    words_per_utterance=(2, 3), seed=0)
    texts = [r["text"].split() for r in speech_corpus(root)]
    assert all(2 <= len(t) <= 3 and set(t) <= {"FIVE", "SIX"} for t in texts)
    with pytest.raises(ConfigError, match="words_per_utterance"):
        synthesize_spoken_corpus(tmp_path / "x", words_per_utterance=(2, 1))
    for bad in ("no-such-voice", "en-us+nosuch"):  # eSpeak NG itself would speak these with its default voice
        with pytest.raises(ConfigError, match="no voice"):
            speak("one", bad)
    with pytest.raises(ConfigError, match="no voice"):
        synthesize_spoken_corpus(tmp_path / "y", voices=("en-us+m1", "xx"))
    assert not (tmp_path / "y").exists()
    assert not (tmp_path / "x").exists()


def test_slower_speech_is_longer():
    fast, slow = speak("seven", "en-us+m1", rate_wpm=220), speak("seven", "en-us+m1", rate_wpm=110)
    assert len(slow) > 1.3 * len(fast)


def test_an_audio_classifier_on_synthesised_speech_forgets_a_word_like_retraining(tmp_path):
    """Real (synthesised) speech end to end (four words, eight voices): the corpus read back,
    Whisper's log-mel features, a ``WhisperForAudioClassification`` (one of
    ``AutoModelForAudioClassification``'s models) trained from scratch; the default strategy, called bare, forgets the word "two" on held-out
    utterances as the model retrained without it does and keeps the other words."""
    import warnings

    import torch
    from torch.utils.data import DataLoader, TensorDataset

    transformers = pytest.importorskip("transformers")
    from erasus.models import wrap
    from erasus.models.training import train_classifier
    from erasus.unlearners import AudioUnlearner, MultimodalUnlearner

    words = ("one", "two", "three", "four")
    from erasus.data.spoken import VOICES

    recs = speech_corpus(synthesize_spoken_corpus(tmp_path / "c", words=words, voices=VOICES, per_speaker=24, seed=0))
    fe = transformers.WhisperFeatureExtractor(feature_size=20, sampling_rate=16000, hop_length=160, chunk_length=1,
                                              n_fft=400)
    x = fe([r["audio"].numpy() for r in recs], sampling_rate=16000, return_tensors="pt").input_features
    y = torch.tensor([words.index(r["text"].lower()) for r in recs])
    held = torch.tensor([(int(r["id"].rsplit("-", 1)[1]) // len(words)) % 2 == 1 for r in recs])

    def make():
        torch.manual_seed(0)
        cfg = transformers.WhisperConfig(num_mel_bins=20, encoder_layers=2, d_model=64, encoder_attention_heads=4,
                                         encoder_ffn_dim=128, max_source_positions=50, num_labels=len(words),
                                         classifier_proj_size=32)
        return transformers.WhisperForAudioClassification(cfg)

    loader = lambda m: DataLoader(TensorDataset(x[m], y[m]), batch_size=32, shuffle=True,  # noqa: E731
                                  generator=torch.Generator().manual_seed(0))
    fg = (y == 1) & ~held
    train = lambda m: train_classifier(make(), loader(m), epochs=120, lr=3e-3).eval()  # noqa: E731
    original, retrained = train(~held), train(~held & (y != 1))

    def accs(model):
        with torch.no_grad():
            ok = model(x[held]).logits.argmax(1) == y[held]
        return float(ok[y[held] == 1].float().mean()), float(ok[y[held] != 1].float().mean())

    # the adapter's per-sample loss is the model's own cross-entropy
    a = wrap(original)
    with torch.no_grad():
        own = original(x[:8], labels=y[:8]).loss
        assert torch.allclose(a.per_sample_loss((x[:8], y[:8])).mean(), own, atol=1e-5)
    before = accs(original)
    assert before[0] >= 0.8 and before[1] >= 0.8 and accs(retrained)[0] == 0.0
    u = MultimodalUnlearner.from_model(original)
    assert isinstance(u, AudioUnlearner)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u.fit(loader(fg), loader(~held & ~fg), progress=False)
    f_acc, o_acc = accs(u.model)
    # forgotten as by retraining; the other words kept
    assert f_acc <= accs(retrained)[0] + 0.1 and o_acc >= min(before[1], accs(retrained)[1]) - 0.1
    assert accs(original) == before  # the user's model is untouched


def test_the_corpus_script(tmp_path):
    import subprocess
    import sys

    run = lambda *a: subprocess.run([sys.executable, "-m", "erasus.data.spoken", *a], capture_output=True,  # noqa: E731
                                    text=True)
    ok = run(str(tmp_path / "c"), "--words", "one,two", "--voices", "en-us+m1", "--per-speaker", "2")
    assert ok.returncode == 0 and "2 utterances by 1 speakers" in ok.stdout, ok.stderr
    assert [r["text"] for r in speech_corpus(tmp_path / "c")] == ["ONE", "TWO"]
    again = run(str(tmp_path / "c"), "--words", "one,two", "--voices", "en-us+m1", "--per-speaker", "2")
    assert again.returncode == 2 and "pass --overwrite" in again.stderr
