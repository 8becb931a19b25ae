"""Speech: an audio classifier forgets one spoken word. The corpus is real synthesised speech
(four digit words said by eight eSpeak NG voices, written in the LibriSpeech layout and read back
as a user's own corpus would be), the model a ``WhisperForAudioClassification`` trained here on
Whisper's log-mel features. Real use: ``AutoModelForAudioClassification.from_pretrained(...)``
and ``speech_corpus("LibriSpeech/train-clean-100")``.

    python examples/audio/spoken_word_removal.py          # about half a minute on a CPU; needs espeak-ng
"""
import sys
from pathlib import Path

import torch
import transformers
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import out_dir  # noqa: E402
from erasus.data.folders import speech_corpus  # noqa: E402
from erasus.data.spoken import VOICES, synthesize_spoken_corpus  # noqa: E402
from erasus.models.training import train_classifier  # noqa: E402
from erasus.unlearners import MultimodalUnlearner  # noqa: E402

out = out_dir(__doc__)
words = ("one", "two", "three", "four")
corpus = synthesize_spoken_corpus(out / "digits", words=words, voices=VOICES, per_speaker=24, seed=0)
recs = speech_corpus(corpus)                          # {"audio", "text", "speaker", "id"} records, 16 kHz
features = transformers.WhisperFeatureExtractor(feature_size=20, chunk_length=1)
x = features([r["audio"].numpy() for r in recs], sampling_rate=16000, return_tensors="pt").input_features
y = torch.tensor([words.index(r["text"].lower()) for r in recs])
test = torch.tensor([int(r["id"].rsplit("-", 1)[1]) // 4 % 2 == 1 for r in recs])   # half of each word held out

torch.manual_seed(0)
model = transformers.WhisperForAudioClassification(transformers.WhisperConfig(
    num_mel_bins=20, encoder_layers=2, d_model=64, encoder_attention_heads=4, encoder_ffn_dim=128,
    max_source_positions=50, num_labels=len(words), classifier_proj_size=32))
loader = lambda m: DataLoader(TensorDataset(x[m], y[m]), batch_size=32, shuffle=True)  # noqa: E731
model = train_classifier(model, loader(~test), epochs=120, lr=3e-3).eval()


def accuracy(m):
    with torch.no_grad():
        ok = m(x[test]).logits.argmax(1) == y[test]
    return {w: round(float(ok[y[test] == k].float().mean()), 2) for k, w in enumerate(words)}


two = (y == 1) & ~test
audio = MultimodalUnlearner.from_model(model)         # -> AudioUnlearner, default strategy
audio.fit(loader(two), loader(~test & ~two), progress=False)
print("held-out accuracy before:", accuracy(model))
print("held-out accuracy after: ", accuracy(audio.model), "(forgotten word 'two')")
audio.save_pretrained(out / "model")
print("saved to", out / "model")
