"""Throughput of the LLM unlearning loop: tokens/s and model FLOPs utilisation.

NPO with a retain NLL term on TOFU forget10 / retain90, the same model, batch size, steps
and precision in two loops:

* **plain**: a PyTorch loop as one would write it first: shuffled batches padded to
  ``--max-length``, the reference model's log-likelihoods computed every step, AdamW,
  gradient clipping;
* **erasus**: ``LLMUnlearner(model, strategy="npo").fit(...)`` on ``qa_loader`` batches
  (length-grouped, padded to each batch's longest sequence), the reference held once in
  eval mode without optimiser state, bf16 autocast on a GPU.

Tokens are the real (unpadded) answer-and-prompt tokens of the forget and retain batches
that the trained model sees per second of loop time. FLOPs are counted as 6·N per trained
token plus 2·N per reference-model token (N: parameters without the position table; the
tied token embedding is counted once, as the output projection), attention's own FLOPs and
padding excluded, so utilisation is of useful work. Model FLOPs utilisation is reported
where the accelerator's peak is known (``--peak-tflops``, or the bf16 dense peak of a
recognised GPU); on a CPU the table gives the achieved TFLOP/s only.

    python benchmarks/llm_throughput.py                      # tiny GPT-2, CPU-sized
    python benchmarks/llm_throughput.py --preset 120m        # ~120M parameters (GPU)
    python benchmarks/llm_throughput.py --preset 1b          # ~1B parameters (GPU)
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

PRESETS = {"tiny": (4, 128, 4), "120m": (12, 768, 12), "1b": (24, 2048, 16)}  # layers, width, heads
# dense bf16 peaks (TFLOP/s) of accelerators recognised by name
PEAKS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}


def hardware() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads of {os.cpu_count()} cores"


def peak_tflops(args) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        for key, v in PEAKS.items():
            if key in name:
                return v
    return None


def flop_params(model) -> int:
    n = sum(p.numel() for p in model.parameters())
    wpe = getattr(getattr(model, "transformer", None), "wpe", None)
    return n - (wpe.weight.numel() if wpe is not None else 0)


class TokenCounter:
    """Counts the real tokens of every forward of a model (and its deep copies, which
    inherit the hook): with gradients (trained) and without (reference, evaluation)."""

    def __init__(self):
        self.trained = self.reference = 0

    def __deepcopy__(self, memo):  # copies of the model (the caller's copy, the reference) share the count
        return self

    def __call__(self, module, args, kwargs):
        mask = kwargs.get("attention_mask")
        n = int(mask.sum()) if mask is not None else kwargs["input_ids"].numel()
        if torch.is_grad_enabled():
            self.trained += n
        else:
            self.reference += n


def seq_nll(model, b):
    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1]
    labels = b["labels"][:, 1:]
    tok = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=-100,
                          reduction="none").view(labels.shape)
    return tok.sum(1), (labels != -100).sum(1)


def plain_loop(model, forget, retain, steps, lr, beta, device, autocast):
    """NPO + retain NLL, written plainly: fixed-length padding, reference forward each step."""
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    from erasus.utils.data import cycle

    tokens = ref_tokens = 0
    fi, ri = cycle(forget), cycle(retain)
    t0 = time.perf_counter()
    for _ in range(steps):
        fb, rb = next(fi), next(ri)
        fb = {k: v.to(device) for k, v in fb.items() if torch.is_tensor(v)}
        rb = {k: v.to(device) for k, v in rb.items() if torch.is_tensor(v)}
        with autocast():
            nll, _ = seq_nll(model, fb)
            with torch.no_grad():
                ref_nll, _ = seq_nll(ref, fb)
            npo = -(2.0 / beta) * F.logsigmoid(-beta * (ref_nll - nll)).mean()
            r_nll, r_n = seq_nll(model, rb)
            loss = npo + (r_nll.sum() / r_n.sum())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        float(loss.detach())  # one host sync per step, as the trainer's logging does
        n_f, n_r = int(fb["attention_mask"].sum()), int(rb["attention_mask"].sum())
        tokens += n_f + n_r
        ref_tokens += n_f
    return time.perf_counter() - t0, tokens, ref_tokens


def row(name, seconds, tokens, ref_tokens, n_params, peak, padded=None):
    flops = 6 * n_params * tokens + 2 * n_params * ref_tokens
    tflops = flops / seconds / 1e12
    return {"loop": name, "seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
            "reference_tokens": ref_tokens, "achieved_tflops": tflops,
            "mfu": (tflops / peak) if peak else None, "pad_fraction": padded}


def main(argv=None):
    from erasus.data.datasets.tofu import tofu_request
    from erasus.experiments import run_meta
    from erasus.models.causal_lm import QACollator, gpt2_lm, qa_loader, tofu_texts, word_tokenizer
    from erasus.unlearners import LLMUnlearner
    from erasus.utils.io import atomic_write_text

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--peak-tflops", type=float, default=None, help="the accelerator's peak, for utilisation")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--name", default=None, help="results file name (default llm_throughput-<preset>-<cpu|gpu>)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    req = tofu_request("forget10")
    tok = word_tokenizer(tofu_texts(req))
    n_layer, n_embd, n_head = PRESETS[args.preset]
    model = gpt2_lm(tok, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=args.max_length).to(device)
    n_params = flop_params(model)
    peak = peak_tflops(args)
    bf16 = device.type == "cuda"
    print(f"{args.preset}: {n_params / 1e6:.1f}M parameters on {hardware()}; {args.steps} steps of "
          f"{args.batch_size} forget + {args.batch_size} retain sequences", flush=True)

    # plain: padded to max_length, shuffled
    coll = QACollator(tok, max_length=args.max_length)

    def pad_full(records):
        b = coll(records)
        extra = args.max_length - b["input_ids"].size(1)
        if extra > 0:
            b["input_ids"] = F.pad(b["input_ids"], (0, extra), value=coll.pad_id)
            b["attention_mask"] = F.pad(b["attention_mask"], (0, extra), value=0)
            b["labels"] = F.pad(b["labels"], (0, extra), value=-100)
        return b

    g = torch.Generator().manual_seed(0)
    forget_plain = DataLoader(req.forget.records, batch_size=args.batch_size, shuffle=True, collate_fn=pad_full,
                              generator=g)
    retain_plain = DataLoader(req.retain.records, batch_size=args.batch_size, shuffle=True, collate_fn=pad_full,
                              generator=g)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else (
        lambda: torch.autocast("cpu", enabled=False))
    m_plain = copy.deepcopy(model)
    s_plain, t_plain, r_plain = plain_loop(m_plain, forget_plain, retain_plain, args.steps, args.lr, 0.1, device,
                                           autocast)
    del m_plain
    rows = [row("plain (padded to max length)", s_plain, t_plain, r_plain, n_params, peak,
                1 - t_plain / (2 * args.steps * args.batch_size * args.max_length))]
    print(f"plain: {t_plain / s_plain:,.0f} tokens/s", flush=True)

    forget = qa_loader(req.forget.records, QACollator(tok, max_length=args.max_length), args.batch_size, seed=0)
    retain = qa_loader(req.retain.records, QACollator(tok, max_length=args.max_length), args.batch_size, seed=0)
    padded = [0, 0]
    for loader in (forget, retain):
        for b in loader:
            padded[0] += b["attention_mask"].numel()
            padded[1] += int(b["attention_mask"].sum())
    counter = TokenCounter()
    handle = model.register_forward_pre_hook(counter, with_kwargs=True)
    res = LLMUnlearner(model, strategy="npo", strategy_kwargs={"lr": args.lr}).fit(
        forget, retain, max_steps=args.steps, max_epochs=None, stopping="none", progress=False)
    handle.remove()
    s = res.timings["loop_s"]
    rows.append(row("erasus (length-grouped, trainer)", s, counter.trained, counter.reference, n_params, peak,
                    1 - padded[1] / padded[0]))
    print(f"erasus: {counter.trained / s:,.0f} tokens/s", flush=True)
    for r in rows:
        r["speedup_vs_plain"] = r["tokens_per_s"] / rows[0]["tokens_per_s"]

    meta = run_meta(Path(__file__).name, argv, hardware=hardware(), preset=args.preset, params=n_params,
                    precision="bf16 autocast" if bf16 else "fp32", peak_tflops=peak, steps=args.steps,
                    batch_size=args.batch_size, max_length=args.max_length)
    name = args.name or f"llm_throughput-{args.preset}-{device.type}"
    lines = [f"# LLM unlearning throughput ({args.preset}, {device.type})", "",
             f"`{meta['command']}` on {meta['date']}: **{meta['hardware']}**, torch {meta['torch']}, "
             f"{meta['precision']}. GPT-2 architecture, {n_params / 1e6:.1f}M parameters (FLOP count), TOFU "
             f"forget10/retain90, NPO + retain NLL, {args.steps} steps of {args.batch_size} forget and "
             f"{args.batch_size} retain sequences (max length {args.max_length}).", "",
             "Tokens: real tokens trained on per second of loop time. TFLOP/s: 6·N per trained token + 2·N per "
             "reference token (attention and padding excluded). Pad fraction: share of the batch tensors that is "
             "padding. MFU: achieved / peak " + (f"({peak:g} TFLOP/s)." if peak else "(no peak known here: "
                                                   "pass --peak-tflops)."), "",
             "| loop | tokens/s | speed-up | TFLOP/s | MFU | pad fraction |", "|---|---|---|---|---|---|"]
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        lines.append(f"| {r['loop']} | {r['tokens_per_s']:,.0f} | {r['speedup_vs_plain']:.2f}x | "
                     f"{r['achieved_tflops']:.4f} | {mfu} | {r['pad_fraction']:.2f} |")
    md = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{name}.json", json.dumps({"meta": meta, "rows": rows}, indent=2))
    atomic_write_text(out / f"{name}.md", md)
    print("\n" + md)


if __name__ == "__main__":
    main()
