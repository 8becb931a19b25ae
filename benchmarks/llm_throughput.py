"""Throughput of the LLM unlearning loop: tokens/s and model FLOPs utilisation.

NPO with a retain NLL term on TOFU forget10 / retain90, the same model, batch size, steps
and precision in two loops:

* **plain**: a PyTorch loop as one would write it first: shuffled batches padded to
  ``--max-length``, the reference model's log-likelihoods computed every step, AdamW,
  gradient clipping;
* **erasus**: ``LLMUnlearner(model, strategy="npo").fit(...)`` on ``qa_loader`` batches
  (records tokenised once; bucketed lengths, so few batch shapes; ``--max-tokens`` for a
  token budget per batch), the reference's log-likelihoods computed once before the first
  step and the reference freed, logits only at answer tokens, one host synchronisation per
  10 steps, bf16 autocast on a GPU.

Each loop is timed three ways: **start-up** (from the call until its first training step
starts: copies, the reference pass, tokenising once for Erasus), **steady state** (tokens
per second over the steps after the first 10%), and the **whole run** (tokens over the time
from the call to the end, start-up included; Erasus' includes building its loaders). Tokens
are the real (unpadded) answer-and-prompt tokens of the forget and retain batches that the
trained model sees. FLOPs are counted as 6·N per trained
token plus 2·N per reference-model token (N: parameters without the position table; the
tied token embedding is counted once, as the output projection), attention's own FLOPs and
padding excluded, so utilisation is of useful work. Model FLOPs utilisation is reported
where the accelerator's peak is known (``--peak-tflops``, or the bf16 dense peak of a
recognised GPU); on a CPU the table gives the achieved TFLOP/s only.

    python benchmarks/llm_throughput.py                      # tiny GPT-2, CPU-sized, 300 steps
    python benchmarks/llm_throughput.py --preset 120m        # ~120M parameters (GPU)
    python benchmarks/llm_throughput.py --preset 1b          # ~1B parameters (GPU)

Results: ``benchmarks/results/llm_throughput-<preset>-<cpu|cuda>.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import copy
import os
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
    """Counts the real tokens of every forward of a model's backbone (and of its deep copies,
    which inherit the hook), with gradients (trained) and without (reference, evaluation), and
    when each trained forward was launched."""

    def __init__(self):
        self.trained = self.reference = 0
        self.log = []  # (time, trained tokens so far) at each trained forward

    def __deepcopy__(self, memo):  # copies of the model (the caller's copy, the reference) share the count
        return self

    def __call__(self, module, args, kwargs):
        mask = kwargs.get("attention_mask")
        ids = kwargs.get("input_ids", args[0] if args else None)
        n = int(mask.sum()) if mask is not None else ids.numel()
        if torch.is_grad_enabled():
            self.log.append((time.perf_counter(), self.trained))
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

    fi, ri = cycle(forget), cycle(retain)
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
        float(loss.detach())  # one host sync per step, as one logs a loss


def timed(name, run, model, n_params, peak, padded, warmup_share=0.1):
    """Run ``run()`` with a token counter on ``model``'s backbone; the row of timings."""
    counter = TokenCounter()
    handle = getattr(model, "base_model", model).register_forward_pre_hook(counter, with_kwargs=True)
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t0 = time.perf_counter()
    run()
    sync()
    t_end = time.perf_counter()
    handle.remove()
    log = counter.log
    steps = len(log) // 2  # one forget and one retain forward per step
    w = 2 * max(1, int(warmup_share * steps))  # the first trained forward of the steady part
    t_first, (t_w, tok_w) = log[0][0], log[w]
    steady = (counter.trained - tok_w) / (t_end - t_w)
    whole = t_end - t0
    flops = lambda tok, ref: 6 * n_params * tok + 2 * n_params * ref  # noqa: E731
    tflops_steady = flops(counter.trained - tok_w, 0) / (t_end - t_w) / 1e12
    return {"loop": name, "startup_s": t_first - t0, "seconds": whole, "tokens": counter.trained,
            "reference_tokens": counter.reference, "tokens_per_s": counter.trained / whole,
            "steady_tokens_per_s": steady, "achieved_tflops": flops(counter.trained, counter.reference) / whole / 1e12,
            "steady_tflops": tflops_steady, "mfu": (tflops_steady / peak) if peak else None,
            "pad_fraction": padded}


def main(argv=None):
    from erasus.data.datasets.tofu import tofu_request
    from erasus.experiments import hardware, run_meta
    from erasus.models.causal_lm import QACollator, gpt2_lm, qa_loader, tofu_texts, word_tokenizer
    from erasus.unlearners import LLMUnlearner
    from erasus.utils.io import write_results

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=None,
                   help="Erasus batches of about this many padded tokens instead of --batch-size sequences")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--compile", action="store_true", help="Erasus with torch.compile (TrainerConfig.compile)")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--peak-tflops", type=float, default=None, help="the accelerator's peak, for utilisation")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--device", default="auto", help="auto (the GPU where one is visible), cpu, cuda or cuda:N")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--name", default=None, help="results file name (default llm_throughput-<preset>-<cpu|cuda>)")
    from erasus.experiments.benchargs import benchmark_device, parse_benchmark_args
    from erasus.experiments.tracking import track_results

    args = parse_benchmark_args(p, argv)
    torch.set_num_threads(args.threads)
    device = benchmark_device(p, args.device)

    req = tofu_request("forget10")
    tok = word_tokenizer(tofu_texts(req))
    n_layer, n_embd, n_head = PRESETS[args.preset]
    model = gpt2_lm(tok, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=args.max_length).to(device)
    n_params = flop_params(model)
    peak = peak_tflops(args)
    bf16 = device.type == "cuda"
    print(f"{args.preset}: {n_params / 1e6:.1f}M parameters on {hardware(device)}; {args.steps} steps of "
          f"{args.batch_size} forget + {args.batch_size} retain sequences", flush=True)

    # plain: padded to max_length, shuffled, tokenised by its collator on every batch
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
    held = {"plain": copy.deepcopy(model)}
    rows = [timed("plain (padded to max length, reference every step)",
                  lambda: plain_loop(held["plain"], forget_plain, retain_plain, args.steps, args.lr, 0.1, device,
                                     autocast), held["plain"], n_params, peak, None)]
    rows[0]["pad_fraction"] = 1 - rows[0]["tokens"] / (2 * args.steps * args.batch_size * args.max_length)
    held.clear()  # free the plain loop's model before the next run
    print(f"plain: {rows[0]['tokens_per_s']:,.0f} tokens/s", flush=True)

    size = {"max_tokens": args.max_tokens} if args.max_tokens else {"batch_size": args.batch_size}
    built = {}

    def erasus_run():
        built["forget"] = qa_loader(req.forget.records, QACollator(tok, max_length=args.max_length), seed=0, **size)
        built["retain"] = qa_loader(req.retain.records, QACollator(tok, max_length=args.max_length), seed=0, **size)
        built["res"] = LLMUnlearner(model, strategy="npo", strategy_kwargs={"lr": args.lr}).fit(
            built["forget"], built["retain"], max_steps=args.steps, max_epochs=None, stopping="none", progress=False,
            compile=args.compile)

    rows.append(timed("erasus (tokenised once, bucketed, cached reference, answer-only logits"
                      + (", compiled)" if args.compile else ")"), erasus_run, model,
                      n_params, peak, None))
    padded = [0, 0]
    for loader in (built["forget"], built["retain"]):
        for b in loader:
            padded[0] += b["attention_mask"].numel()
            padded[1] += int(b["attention_mask"].sum())
    rows[1]["pad_fraction"] = 1 - padded[1] / padded[0]
    print(f"erasus: {rows[1]['tokens_per_s']:,.0f} tokens/s", flush=True)
    for r in rows:
        r["speedup_vs_plain"] = r["tokens_per_s"] / rows[0]["tokens_per_s"]
        r["steady_speedup_vs_plain"] = r["steady_tokens_per_s"] / rows[0]["steady_tokens_per_s"]

    meta = run_meta(Path(__file__).name, argv, hardware=hardware(device), preset=args.preset, params=n_params,
                    precision="bf16 autocast" if bf16 else "fp32", peak_tflops=peak, steps=args.steps,
                    batch_size=args.batch_size, max_tokens=args.max_tokens, max_length=args.max_length,
                    compile=args.compile)
    name = args.name or f"llm_throughput-{args.preset}-{device.type}"
    batches = (f"batches of about {args.max_tokens} padded tokens for Erasus, {args.batch_size} sequences for the "
               "plain loop" if args.max_tokens else f"{args.batch_size} forget and {args.batch_size} retain sequences")
    lines = [f"# LLM unlearning throughput ({args.preset}, {device.type})", "",
             f"`{meta['command']}` on {meta['date']}: **{meta['hardware']}**, torch {meta['torch']}, "
             f"{meta['precision']}. GPT-2 architecture, {n_params / 1e6:.1f}M parameters (FLOP count), TOFU "
             f"forget10/retain90, NPO + retain NLL, {args.steps} steps of {batches} (max length {args.max_length}).",
             "",
             "Start-up: from the call to the first training step. Steady: tokens/s after the first 10% of the steps. "
             "Whole run: tokens over the whole time, start-up included. TFLOP/s (steady): 6·N per trained token "
             "(attention and padding excluded). Reference tokens: the frozen reference's forwards (Erasus: one pass "
             "over the forget set before the first step). Pad fraction: share of the batch tensors that is "
             "padding. MFU: steady TFLOP/s / peak " + (f"({peak:g} TFLOP/s)." if peak else "(no peak known here: "
                                                        "pass --peak-tflops)."), "",
             "| loop | start-up s | steady tokens/s | whole-run tokens/s | speed-up (whole / steady) | "
             "reference tokens | TFLOP/s (steady) | MFU | pad fraction |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        lines.append(f"| {r['loop']} | {r['startup_s']:.2f} | {r['steady_tokens_per_s']:,.0f} | "
                     f"{r['tokens_per_s']:,.0f} | {r['speedup_vs_plain']:.2f}x / {r['steady_speedup_vs_plain']:.2f}x | "
                     f"{r['reference_tokens']:,} | {r['steady_tflops']:.4f} | {mfu} | {r['pad_fraction']:.2f} |")
    md = "\n".join(lines) + "\n"
    written = write_results(args.out, name, meta, rows, md)
    track_results(args, name, meta, rows, [written, written.with_suffix('.json')])
    print("\n" + md)


if __name__ == "__main__":
    main()
