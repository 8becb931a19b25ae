"""Forgetting from audio, video and speech models built here, against retraining.

No audio or video data set can be downloaded here, so the data are made on the machine. Speech
is real synthesised speech: the ten digit words spoken by eight eSpeak NG voices (the
``espeak-ng`` program; ``erasus.data.spoken``, rate and pitch drawn per utterance from the
seed), written as a LibriSpeech-style corpus and read back through
``erasus.data.folders.speech_corpus``. A Wav2Vec2 audio classifier learns the spoken word from
the waveform (forget one word); a Whisper model transcribes utterances of one to three digit
words from log-mel features (forget one speaker: every utterance of one voice, the deletion
request a speaker makes). Fashion-MNIST images sliding across short clips train a VideoMAE
video classifier (the label is the garment; forget one class). Models are small
``transformers`` configurations trained from scratch. Per seed: the original model, a model
retrained without the forget set, and the generic strategies at their defaults, called bare
(``fit(forget, retain)``) and, for the classifiers, with held-out data (half of the test split).

Reported per family and method: for the classifiers, forget accuracy (% of the forgotten
word's or class's test items still recognised) and accuracy on the other classes' test items;
for Whisper, word error rate (``jiwer``) on the forgotten speaker's held-out utterances and on
the other speakers'; the average gap to the retrained model over those two (points), and time
against retraining.

    python benchmarks/audio_video.py            # 3 seeds, about ten minutes on 2 CPU cores
    python benchmarks/audio_video.py --small    # a smoke run (not a result)
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

HERE = Path(__file__).resolve().parent
METHODS = ["wga", "negative_gradient", "simnpo", "scrub", "saliency_unlearning", "gradient_ascent"]


MELS = 20  # log-mel bins of the Whisper feature extractor both speech models read


def log_mel(records, seconds: int) -> torch.Tensor:
    """Whisper's log-mel features (``MELS`` bins, 10 ms hop) of ``records``' audio, padded or cut
    to ``seconds``: ``(N, MELS, 100 * seconds)``."""
    import transformers

    fe = transformers.WhisperFeatureExtractor(feature_size=MELS, sampling_rate=16000, hop_length=160,
                                              chunk_length=seconds, n_fft=400)
    return fe([r["audio"].numpy() for r in records], sampling_rate=16000, return_tensors="pt").input_features


def audio_model(classes: int):
    """An audio classifier (``WhisperForAudioClassification``: Whisper's encoder, mean-pooled, and
    a linear head; one of ``AutoModelForAudioClassification``'s models) on one-second log-mel
    features. A Wav2Vec2 classifier of the same size on the raw waveform stayed at 20% held-out
    accuracy on this corpus (the waveform front end needs pretraining); this one reaches ~90%."""
    import transformers

    cfg = transformers.WhisperConfig(num_mel_bins=MELS, encoder_layers=2, d_model=64, encoder_attention_heads=4,
                                     encoder_ffn_dim=128, max_source_positions=50, num_labels=classes,
                                     classifier_proj_size=32)
    return transformers.WhisperForAudioClassification(cfg)


def video_model(classes: int):
    import transformers

    cfg = transformers.VideoMAEConfig(image_size=16, patch_size=4, num_channels=3, num_frames=4, tubelet_size=2,
                                      hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                                      num_labels=classes, use_mean_pooling=True)
    return transformers.VideoMAEForVideoClassification(cfg)


CHUNK_S = 3  # the speech-to-text model's windows: 3 s (300 frames), room for three digit words


def whisper_model(vocab: int):
    import transformers

    cfg = transformers.WhisperConfig(vocab_size=vocab, num_mel_bins=MELS, encoder_layers=2, decoder_layers=1,
                                     d_model=64, encoder_attention_heads=4, decoder_attention_heads=4,
                                     encoder_ffn_dim=128, decoder_ffn_dim=128, max_source_positions=50 * CHUNK_S,
                                     max_target_positions=8, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                     decoder_start_token_id=1, suppress_tokens=None, begin_suppress_tokens=None)
    return transformers.WhisperForConditionalGeneration(cfg)


def spoken(seed: int, small: bool, words_per_utterance=(1, 1)):
    """``(records, held-out mask)``: the digit words spoken by eSpeak NG voices, synthesised into
    a temporary LibriSpeech-style folder and read back; half of each speaker's utterances of
    each word (or half of its utterances) are held out."""
    import tempfile

    from erasus.data.folders import speech_corpus
    from erasus.data.spoken import DIGITS, VOICES, synthesize_spoken_corpus

    voices, per = (VOICES[:4], 20) if small else (VOICES, 60)
    with tempfile.TemporaryDirectory() as tmp:
        recs = speech_corpus(synthesize_spoken_corpus(Path(tmp) / "digits", DIGITS, voices, per_speaker=per,
                                                      words_per_utterance=words_per_utterance, seed=seed))
    k = torch.tensor([int(r["id"].rsplit("-", 1)[1]) for r in recs])
    return recs, (k // len(DIGITS)) % 2 == 1 if words_per_utterance == (1, 1) else k % 2 == 1


def tensor_task(kind: str, seed: int, small: bool):
    """``(train (x, y), test (x, y), model factory, epochs)`` for the audio or video family."""
    from erasus.data.synthetic import moving_clips

    if kind == "audio":
        from erasus.data.spoken import DIGITS

        recs, held = spoken(seed, small)
        x = log_mel(recs, 1)
        y = torch.tensor([DIGITS.index(r["text"].lower()) for r in recs])
        return (x[~held], y[~held]), (x[held], y[held]), lambda: audio_model(len(DIGITS)), 2 if small else 120
    from erasus.data.vision import load_fashion_mnist

    x, y = load_fashion_mnist(train=True, n=300 if small else 3000, seed=seed).tensors
    xt, yt = load_fashion_mnist(train=False, n=200 if small else 1000, seed=seed).tensors
    return (moving_clips(x, y, seed=seed), moving_clips(xt, yt, seed=seed + 100), lambda: video_model(10),
            2 if small else 30)


def run_tensor_family(kind, seed, args, rows):
    from erasus.models.training import train_classifier
    from erasus.unlearners import MultimodalUnlearner

    (x, y), (xt, yt), make, epochs = tensor_task(kind, seed, args.small)
    forget_class = args.forget
    fg, ft = y == forget_class, yt == forget_class
    half = torch.arange(len(yt)) % 2 == 0  # held-out data: half of the test split; the rest evaluates
    loader = lambda xs, ys, shuffle=True: DataLoader(TensorDataset(xs, ys), batch_size=64, shuffle=shuffle,  # noqa: E731
                                                     generator=torch.Generator().manual_seed(seed))

    def accs(model):
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(xb).logits.argmax(1) for xb in xt[~half].split(256)])
        ok = pred == yt[~half]
        return {"forget_acc": float(ok[ft[~half]].float().mean()), "other_acc": float(ok[~ft[~half]].float().mean())}

    def trained(keep):
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        m = train_classifier(make(), loader(x[keep], y[keep]), epochs=epochs, lr=3e-3, seed=seed)
        return m, time.perf_counter() - t0

    original, _ = trained(torch.ones_like(fg))
    retrained, retrain_s = trained(~fg)
    ref = accs(retrained)
    rows.append({"family": FAMILIES[kind], "seed": seed, "method": "original", "call": "-", **accs(original)})
    rows.append({"family": FAMILIES[kind], "seed": seed, "method": "retrain", "call": "-", "time_s": retrain_s, **ref})
    for name in args.methods.split(","):
        for call in ("bare", "holdout"):
            t1 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                u = MultimodalUnlearner.from_model(original, strategy=name)
                u.fit(loader(x[fg], y[fg]), loader(x[~fg], y[~fg]),
                      loader(xt[half], yt[half], False) if call == "holdout" else None, progress=False)
            dt = time.perf_counter() - t1
            rows.append({"family": FAMILIES[kind], "seed": seed, "method": name, "call": call, "time_s": dt,
                         "speedup": retrain_s / dt, **accs(u.model)})
    for r in rows[-2 - 2 * len(args.methods.split(",")):]:
        r["avg_gap"] = 50 * (abs(r["forget_acc"] - ref["forget_acc"]) + abs(r["other_acc"] - ref["other_acc"]))
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}, flush=True)


def run_whisper(seed, args, rows):
    from erasus.data.spoken import DIGITS
    from erasus.metrics.speech import word_error_rate
    from erasus.models import wrap
    from erasus.models.causal_lm import word_tokenizer
    from erasus.models.training import train_steps
    from erasus.unlearners import MultimodalUnlearner

    fam = FAMILIES["speech"]
    recs, held = spoken(seed, args.small, words_per_utterance=(1, 3))
    tok = word_tokenizer([" ".join(DIGITS)])  # <pad> 0, <unk> 1 (the decoder's start), <eos> 2, the words
    feats = log_mel(recs, CHUNK_S)
    items = []
    for r, f in zip(recs, feats):
        ids = tok(r["text"].lower()).input_ids + [tok.eos_token_id]
        items.append({"input_features": f, "labels": torch.tensor(ids + [-100] * (6 - len(ids)))})
    speaker = str(args.forget % len({r["speaker"] for r in recs}))
    is_f = [r["speaker"] == speaker for r in recs]
    pick = lambda f, h: [it for it, fi, hi in zip(items, is_f, held.tolist()) if fi == f and hi == h]  # noqa: E731
    forget, retain, f_test, r_test = pick(True, False), pick(False, False), pick(True, True), pick(False, True)
    loader = lambda rs: DataLoader(rs, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(seed))  # noqa: E731

    def fit(rs):
        torch.manual_seed(seed)
        m = whisper_model(len(tok))
        t0 = time.perf_counter()
        m.train()
        train_steps(wrap(m).loss, list(m.parameters()), loader(rs), 20 if args.small else 1200, 1e-3)
        return m.eval(), time.perf_counter() - t0

    def wers(model):
        return {key: word_error_rate(model, rs, tok, start_token=1, end_token=2, max_new_tokens=6)
                for key, rs in (("forget_wer", f_test), ("other_wer", r_test))}

    original, _ = fit(forget + retain)
    retrained, retrain_s = fit(retain)
    ref = wers(retrained)
    rows.append({"family": fam, "seed": seed, "method": "original", "call": "-", **wers(original)})
    rows.append({"family": fam, "seed": seed, "method": "retrain", "call": "-", "time_s": retrain_s, **ref})
    for name in [m for m in args.methods.split(",") if m not in ("scrub", "saliency_unlearning")]:  # classifier-only
        t1 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            u = MultimodalUnlearner.from_model(original, strategy=name)
            u.fit(loader(forget), loader(retain), progress=False)
        dt = time.perf_counter() - t1
        rows.append({"family": fam, "seed": seed, "method": name, "call": "bare", "time_s": dt,
                     "speedup": retrain_s / dt, **wers(u.model)})
    for r in [r for r in rows if r["family"] == fam and r["seed"] == seed]:
        r["avg_gap"] = 50 * (abs(r["forget_wer"] - ref["forget_wer"]) + abs(r["other_wer"] - ref["other_wer"]))
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}, flush=True)


FAMILIES = {"audio": "audio (Whisper encoder classifier: forget one spoken word)", "video": "video (VideoMAE: forget one class)",
            "speech": "speech (Whisper: forget one speaker)"}


def metric_keys(rows_of_family):
    return ("forget_wer", "other_wer") if "forget_wer" in rows_of_family[0] else ("forget_acc", "other_acc")


def markdown(meta, rows) -> str:
    def pm(vals, k=100):
        v = np.asarray([x for x in vals if x is not None], dtype=float)
        return f"{k * v.mean():.1f} ± {k * v.std():.1f}" if len(v) else "-"

    lines = ["# Forgetting from audio, video and speech models built here", "",
             f"Command: `{meta['command']}`; CPU, torch {meta['torch']}, {meta['threads']} threads; "
             f"{meta['total_min']:.1f} min.", "",
             "Speech is synthesised offline by eSpeak NG: the ten digit words spoken by eight voices, rate and pitch "
             "drawn per utterance (`erasus.data.spoken`), read back as a LibriSpeech-style corpus; the video clips are "
             "Fashion-MNIST images sliding across frames. forget acc: % of the forgotten word's or class's held-out "
             "items still recognised; other acc: % on the other classes' held-out items; forget WER / other WER: word "
             "error rate (%) of greedy transcripts of the forgotten speaker's held-out utterances and of the other "
             "speakers'; avg gap: mean |difference| to the retrained model over the two (points); bare: "
             "`fit(forget, retain)`, holdout: with held-out data. Mean ± std over seeds.", ""]
    for fam in dict.fromkeys(r["family"] for r in rows):
        fr = [r for r in rows if r["family"] == fam]
        fk, ok = metric_keys(fr)
        name = {"forget_acc": "forget acc", "other_acc": "other acc", "forget_wer": "forget WER",
                "other_wer": "other WER"}
        lines += [f"## {fam}", "", f"| method | call | {name[fk]} | {name[ok]} | avg gap | time (s) |",
                  "|---|---|---|---|---|---|"]
        for key in dict.fromkeys((r["method"], r["call"]) for r in fr):
            rs = [r for r in fr if (r["method"], r["call"]) == key]
            t = [r["time_s"] for r in rs if "time_s" in r]
            lines.append(f"| {key[0]} | {key[1]} | {pm([r[fk] for r in rs])} | {pm([r[ok] for r in rs])} | "
                         f"{pm([r['avg_gap'] for r in rs], 1)} | {np.mean(t) if t else 0:.1f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    from erasus.core.registry import get
    from erasus.utils.io import write_results

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--forget", type=int, default=3,
                   help="the word (audio), class (video) and speaker (speech, modulo the number of voices) to forget")
    p.add_argument("--families", default="audio,video,speech")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--small", action="store_true", help="a few items and steps: checks the pipeline, not a result")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--name", default="audio_video")
    from erasus.experiments.benchargs import parse_benchmark_args
    from erasus.experiments.tracking import track_results

    args = parse_benchmark_args(p, argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for m in args.methods.split(","):
        get("strategy", m)  # an unknown name fails before any training
    t0 = time.perf_counter()
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for fam in args.families.split(","):
            if fam == "speech":
                run_whisper(seed, args, rows)
            else:
                run_tensor_family(fam, seed, args, rows)
    meta = {"command": "python benchmarks/audio_video.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "total_min": (time.perf_counter() - t0) / 60, "args": vars(args)}
    md = markdown(meta, rows)
    written = write_results(args.out, args.name, meta, rows, md)
    track_results(args, args.name, meta, rows, [written, written.with_suffix('.json')])
    print(md)


if __name__ == "__main__":
    main()
