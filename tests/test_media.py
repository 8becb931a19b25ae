"""Audio and video classifiers (Hugging Face Wav2Vec2 and VideoMAE built from small configs):
tones of four pitches, clips of a square moving in four directions. The default strategy,
called bare, must forget one class as a model retrained without it does and keep the others."""
import warnings

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from erasus.core.exceptions import ConfigError
from erasus.data import synthetic
from erasus.models.training import train_classifier
from erasus.unlearners import AudioUnlearner, MultimodalUnlearner, VideoUnlearner

transformers = pytest.importorskip("transformers")


def tones(n_per, seed):
    return synthetic.tones(n_per, seed)


def clips(n_per, seed):
    """(N, frames 4, 3, 16, 16): a bright 4×4 square moving down, up, right or left."""
    return synthetic.moving_clips(None, n_per=n_per, seed=seed)


def audio_model():
    torch.manual_seed(0)
    cfg = transformers.Wav2Vec2Config(vocab_size=10, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                      intermediate_size=64, conv_dim=(32, 32), conv_stride=(5, 2), conv_kernel=(10, 3),
                                      num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                                      classifier_proj_size=16, num_labels=4)
    return transformers.Wav2Vec2ForSequenceClassification(cfg)


def video_model():
    torch.manual_seed(0)
    cfg = transformers.VideoMAEConfig(image_size=16, patch_size=4, num_channels=3, num_frames=4, tubelet_size=2,
                                      hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                      num_labels=4, use_mean_pooling=True)
    return transformers.VideoMAEForVideoClassification(cfg)


def accuracy(model, x, y):
    with torch.no_grad():
        return float((model(x).logits.argmax(1) == y).float().mean())


CASES = {"audio": (tones, audio_model, AudioUnlearner, 15), "video": (clips, video_model, VideoUnlearner, 40)}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_the_default_strategy_forgets_a_class_like_retraining(kind, tmp_path):
    data, make, unlearner, epochs = CASES[kind]
    x, y = data(64, 0)
    xt, yt = data(32, 1)
    train = lambda keep: train_classifier(make(), DataLoader(TensorDataset(x[keep], y[keep]), batch_size=32,
                                                                shuffle=True), epochs=epochs, lr=3e-3)
    keep = y != 0
    original, retrained = train(torch.ones_like(keep)), train(keep)
    f, o = yt == 0, yt != 0
    assert accuracy(original, xt[f], yt[f]) > 0.9 and accuracy(retrained, xt[f], yt[f]) < 0.1
    u = MultimodalUnlearner.from_model(original)
    assert type(u) is unlearner
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u.fit(DataLoader(TensorDataset(x[~keep], y[~keep]), batch_size=32, shuffle=True),
              DataLoader(TensorDataset(x[keep], y[keep]), batch_size=32, shuffle=True), progress=False)
    # the rule stops once the training clips of the class are no longer predicted; on unseen
    # items a few may still be (2 of 32 video clips, measured): within 10% as the retrained model's
    assert accuracy(u.model, xt[f], yt[f]) <= 0.1
    assert accuracy(u.model, xt[o], yt[o]) >= accuracy(retrained, xt[o], yt[o]) - 0.05
    path = u.save_pretrained(tmp_path / "unlearned")
    back = type(original).from_pretrained(path)
    with torch.no_grad():
        assert torch.allclose(back(xt[:8]).logits, u.model(xt[:8]).logits, atol=1e-5)
    assert u.result_.strategy in (path / "README.md").read_text()
    with pytest.raises(FileExistsError):
        u.save_pretrained(path)


def test_dict_batches_keyed_by_the_models_input_name_run_as_tuples():
    """Hugging Face audio data sets give dicts of ``input_values`` (Wav2Vec2; ``input_features``
    for spectrogram models) and ``labels``: the adapter reads the model's own input name, so the
    run equals the one on ``(x, y)`` tuples, weight for weight. (It refused the keys.)"""
    x, y = tones(8, 0)
    model = audio_model()
    runs = []
    for as_dict in (False, True):
        data = ([{"input_values": a, "labels": b} for a, b in zip(x, y)] if as_dict else TensorDataset(x, y))
        forget = [i for i in range(len(y)) if y[i] == 0]
        retain = [i for i in range(len(y)) if y[i] != 0]
        sub = lambda idx: DataLoader(torch.utils.data.Subset(data, idx), batch_size=8)  # noqa: E731
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runs.append(AudioUnlearner(model, strategy="negative_gradient").fit(
                sub(forget), sub(retain), max_steps=3, stopping="none", progress=False).model)
    for (k, a), b in zip(runs[0].state_dict().items(), runs[1].state_dict().values()):
        assert torch.equal(a, b), k
    assert any(not torch.equal(a, b) for a, b in zip(runs[0].state_dict().values(), model.state_dict().values()))


def test_the_media_unlearners_refuse_other_families():
    with pytest.raises(ConfigError, match="audio"):
        AudioUnlearner(torch.nn.Linear(3, 2))
    with pytest.raises(ConfigError, match="video"):
        VideoUnlearner(audio_model())


def spoken(n_per, seed, words=4):
    """Log-mel-like features (8 bins × 32 frames) whose class lights two bins; the transcript
    of class c is one word (token 3 + c) and the end token (2)."""
    return synthetic.spoken_records(n_per, seed, words)


def whisper():
    torch.manual_seed(0)
    cfg = transformers.WhisperConfig(vocab_size=7, num_mel_bins=8, encoder_layers=1, decoder_layers=1, d_model=32,
                                     encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                     decoder_ffn_dim=64, max_source_positions=16, max_target_positions=8,
                                     pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                                     suppress_tokens=None, begin_suppress_tokens=None)
    return transformers.WhisperForConditionalGeneration(cfg)


def first_word_accuracy(model, records):
    from erasus.models import wrap

    a = wrap(model)
    batch = {"input_features": torch.stack([r["input_features"] for r in records]),
             "labels": torch.stack([r["labels"] for r in records])}
    with torch.no_grad():
        return float((a.logits(batch)[:, 0].argmax(-1) == batch["labels"][:, 0]).float().mean())


def test_whisper_forgets_a_word_like_retraining():
    from erasus.models import SpeechSeq2SeqAdapter, wrap
    from erasus.models.training import train_steps

    train, test = spoken(64, 0), spoken(32, 1)
    forget = [r for r in train if int(r["labels"][0]) == 3]
    retain = [r for r in train if int(r["labels"][0]) != 3]

    def fit(records):
        m = whisper()
        a = wrap(m)
        assert isinstance(a, SpeechSeq2SeqAdapter)
        m.train()
        train_steps(a.loss, list(m.parameters()),
                    DataLoader(records, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0)),
                    steps=300, lr=3e-3)
        return m.eval()

    original, retrained = fit(train), fit(retain)
    t_forget = [r for r in test if int(r["labels"][0]) == 3]
    t_other = [r for r in test if int(r["labels"][0]) != 3]
    assert first_word_accuracy(original, t_forget) > 0.9 and first_word_accuracy(retrained, t_forget) < 0.1
    u = MultimodalUnlearner.from_model(original)
    assert type(u) is AudioUnlearner
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u.fit(DataLoader(forget, batch_size=32, shuffle=True), DataLoader(retain, batch_size=32, shuffle=True),
              progress=False)
    assert first_word_accuracy(u.model, t_forget) <= 0.05
    assert first_word_accuracy(u.model, t_other) >= first_word_accuracy(retrained, t_other) - 0.05
    from erasus.core.exceptions import DataError

    with pytest.raises(DataError, match="overlap"):  # records compared by content, not by a missing question
        u.fit(DataLoader(forget, batch_size=32), DataLoader(retain + forget[:1], batch_size=32), progress=False)


def test_the_speech_adapter_loss_is_the_models_own_loss():
    from erasus.models import wrap

    records = spoken(4, 0)
    batch = {"input_features": torch.stack([r["input_features"] for r in records]),
             "labels": torch.stack([r["labels"] for r in records])}
    m = whisper().eval()
    with torch.no_grad():  # equal transcript lengths: the mean of per-sample means is the token mean
        assert torch.allclose(wrap(m).per_sample_loss(batch).mean(), m(**batch).loss, atol=1e-5)
