"""Forgetting one class from audio and video models built here, against retraining.

No audio or video data set can be downloaded here, so the data are made in code
(``erasus.data.synthetic``): ten tones (200 Hz to 3.2 kHz) for a Wav2Vec2 audio classifier,
Fashion-MNIST images sliding across short clips for a VideoMAE video classifier (the label is
the garment), and spoken-word-like spectrograms whose transcript is one word for a Whisper
model. Models are small ``transformers`` configurations trained from scratch. Per seed: the
original model, a model retrained without the forgotten class, and the generic strategies at
their defaults, called bare (``fit(forget, retain)``) and with held-out data (half of the test
split of the other classes and the forgotten one).

Reported per model family and method: forget accuracy (% of the forgotten class's test items
still recognised; for Whisper, first-word accuracy of its test utterances), accuracy on the
other classes' test items, the average gap to the retrained model over those two (points), and
time against retraining.

    python benchmarks/audio_video.py            # 3 seeds, a few minutes on 2 CPU cores
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


def audio_model(classes: int):
    import transformers

    cfg = transformers.Wav2Vec2Config(vocab_size=10, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                      intermediate_size=64, conv_dim=(32, 32), conv_stride=(5, 2), conv_kernel=(10, 3),
                                      num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                                      classifier_proj_size=16, num_labels=classes)
    return transformers.Wav2Vec2ForSequenceClassification(cfg)


def video_model(classes: int):
    import transformers

    cfg = transformers.VideoMAEConfig(image_size=16, patch_size=4, num_channels=3, num_frames=4, tubelet_size=2,
                                      hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                                      num_labels=classes, use_mean_pooling=True)
    return transformers.VideoMAEForVideoClassification(cfg)


def whisper_model(words: int):
    import transformers

    cfg = transformers.WhisperConfig(vocab_size=3 + words, num_mel_bins=2 * words, encoder_layers=1, decoder_layers=1,
                                     d_model=32, encoder_attention_heads=4, decoder_attention_heads=4,
                                     encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=16,
                                     max_target_positions=8, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                     decoder_start_token_id=1, suppress_tokens=None, begin_suppress_tokens=None)
    return transformers.WhisperForConditionalGeneration(cfg)


def tensor_task(kind: str, seed: int, small: bool):
    """``(train (x, y), test (x, y), model factory, epochs)`` for the audio or video family."""
    from erasus.data.synthetic import moving_clips, tones

    if kind == "audio":
        freqs = [200 * 2 ** (k / 2) for k in range(10)]
        n = 8 if small else 64
        return tones(n, seed, freqs), tones(n // 2, seed + 100, freqs), lambda: audio_model(10), 2 if small else 20
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
    rows.append({"family": kind, "seed": seed, "method": "original", "call": "-", **accs(original)})
    rows.append({"family": kind, "seed": seed, "method": "retrain", "call": "-", "time_s": retrain_s, **ref})
    for name in args.methods.split(","):
        for call in ("bare", "holdout"):
            t1 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                u = MultimodalUnlearner.from_model(original, strategy=name)
                u.fit(loader(x[fg], y[fg]), loader(x[~fg], y[~fg]),
                      loader(xt[half], yt[half], False) if call == "holdout" else None, progress=False)
            dt = time.perf_counter() - t1
            rows.append({"family": kind, "seed": seed, "method": name, "call": call, "time_s": dt,
                         "speedup": retrain_s / dt, **accs(u.model)})
    for r in rows[-2 - 2 * len(args.methods.split(",")):]:
        r["avg_gap"] = 50 * (abs(r["forget_acc"] - ref["forget_acc"]) + abs(r["other_acc"] - ref["other_acc"]))
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}, flush=True)


def run_whisper(seed, args, rows):
    from erasus.data.synthetic import spoken_records
    from erasus.models import wrap
    from erasus.models.training import train_steps
    from erasus.unlearners import MultimodalUnlearner

    words = 4
    train, test = spoken_records(8 if args.small else 64, seed, words), spoken_records(32, seed + 100, words)
    forget_token = 3 + args.forget % words
    is_f = lambda r: int(r["labels"][0]) == forget_token  # noqa: E731
    loader = lambda rs: DataLoader(rs, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(seed))  # noqa: E731

    def fit(rs):
        torch.manual_seed(seed)
        m = whisper_model(words)
        a = wrap(m)
        t0 = time.perf_counter()
        m.train()
        train_steps(a.loss, list(m.parameters()), loader(rs), 20 if args.small else 300, 3e-3)
        return m.eval(), time.perf_counter() - t0

    def accs(model):
        a = wrap(model)
        out = {}
        for key, rs in (("forget_acc", [r for r in test if is_f(r)]), ("other_acc", [r for r in test if not is_f(r)])):
            b = {"input_features": torch.stack([r["input_features"] for r in rs]),
                 "labels": torch.stack([r["labels"] for r in rs])}
            with torch.no_grad():
                out[key] = float((a.logits(b)[:, 0].argmax(-1) == b["labels"][:, 0]).float().mean())
        return out

    original, _ = fit(train)
    retrained, retrain_s = fit([r for r in train if not is_f(r)])
    ref = accs(retrained)
    rows.append({"family": "speech (Whisper)", "seed": seed, "method": "original", "call": "-", **accs(original)})
    rows.append({"family": "speech (Whisper)", "seed": seed, "method": "retrain", "call": "-", "time_s": retrain_s, **ref})
    for name in [m for m in args.methods.split(",") if m not in ("scrub", "saliency_unlearning")]:  # classifier-only
        t1 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            u = MultimodalUnlearner.from_model(original, strategy=name)
            u.fit(loader([r for r in train if is_f(r)]), loader([r for r in train if not is_f(r)]), progress=False)
        dt = time.perf_counter() - t1
        rows.append({"family": "speech (Whisper)", "seed": seed, "method": name, "call": "bare", "time_s": dt,
                     "speedup": retrain_s / dt, **accs(u.model)})
    for r in [r for r in rows if r["family"] == "speech (Whisper)" and r["seed"] == seed]:
        r["avg_gap"] = 50 * (abs(r["forget_acc"] - ref["forget_acc"]) + abs(r["other_acc"] - ref["other_acc"]))
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}, flush=True)


def markdown(meta, rows) -> str:
    def pm(vals, k=100):
        v = np.asarray([x for x in vals if x is not None], dtype=float)
        return f"{k * v.mean():.1f} ± {k * v.std():.1f}" if len(v) else "-"

    lines = ["# Forgetting one class from audio, video and speech models built here", "",
             f"Command: `{meta['command']}`; CPU, torch {meta['torch']}, {meta['threads']} threads; "
             f"{meta['total_min']:.1f} min.", "",
             "forget acc: % of the forgotten class's test items still recognised (Whisper: first-word accuracy); "
             "other acc: % on the other classes' test items; avg gap: mean |difference| to the retrained model over "
             "the two (points); bare: `fit(forget, retain)`, holdout: with held-out data. Mean ± std over seeds. The "
             "data are synthetic (`erasus.data.synthetic`): tones, Fashion-MNIST images sliding across clips, "
             "spectrogram-like records with one-word transcripts.", ""]
    for fam in dict.fromkeys(r["family"] for r in rows):
        lines += [f"## {fam}", "", "| method | call | forget acc | other acc | avg gap | time (s) |",
                  "|---|---|---|---|---|---|"]
        fr = [r for r in rows if r["family"] == fam]
        for key in dict.fromkeys((r["method"], r["call"]) for r in fr):
            rs = [r for r in fr if (r["method"], r["call"]) == key]
            t = [r["time_s"] for r in rs if "time_s" in r]
            lines.append(f"| {key[0]} | {key[1]} | {pm([r['forget_acc'] for r in rs])} | "
                         f"{pm([r['other_acc'] for r in rs])} | {pm([r['avg_gap'] for r in rs], 1)} | "
                         f"{np.mean(t) if t else 0:.1f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    from erasus.core.registry import get
    from erasus.utils.io import write_results

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--forget", type=int, default=3, help="the class to forget")
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
