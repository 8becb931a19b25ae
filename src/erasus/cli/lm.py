"""``erasus unlearn-lm``: unlearn question/answer pairs from a Hugging Face causal LM.

Runs on one process, or data-parallel on several under ``accelerate launch``::

    erasus unlearn-lm --model finetuned/ --tofu forget10 --strategy npo --out unlearned/
    accelerate launch --multi_gpu --num_processes 2 -m erasus unlearn-lm --model finetuned/ ...

(``--multi_gpu`` selects accelerate's torchrun launcher; on a machine without GPUs the
processes join a gloo process group on the CPU.)

Every process loads the model and sees the same batches; each trains on its share of
every batch and gradients are averaged (``erasus.core.trainer``), so with batch sizes
divisible by the number of processes the run follows the one-process loss. Only rank 0
writes the model (``save_pretrained`` + model card) and the loss history.
"""
from __future__ import annotations

import json
import os
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("unlearn-lm", help="unlearn question/answer pairs from a causal LM (accelerate-ready)")
    p.add_argument("--model", required=True, help="a local folder or Hub name (AutoModelForCausalLM)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the model's)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--tofu", help="TOFU forget split (forget01/05/10): its retain split is the retain data")
    src.add_argument("--forget", help='JSON list of {"question", "answer"} to forget')
    p.add_argument("--retain", help="JSON list of retain pairs (with --forget)")
    p.add_argument("--tofu-dir", default=None, help="folder of TOFU JSON files (default: $ERASUS_TOFU_DIR, else the copy shipped with Erasus)")
    p.add_argument("--strategy", default="npo")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters only (merged into the saved model)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="folder for the unlearned model (must not exist or be empty)")
    p.add_argument("--history", default=None, help="write the loss per step as JSON here (must not exist)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder and --history file")
    p.set_defaults(func=run)


def _pairs(path) -> list:
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "question" in r and "answer" in r for r in rows):
        from ..core.exceptions import DataError

        raise DataError(f"{path}: expected a JSON list of objects with 'question' and 'answer'.")
    return rows


def _check_args(args):
    """Everything that can be wrong with the arguments, checked before the model is loaded
    (loading a real model takes minutes; training, hours): the output paths, the strategy,
    the data and the model path. Returns ``(forget records, retain records)``."""
    from ..core.exceptions import ConfigError, DataError
    from ..core.registry import get, resolve

    if args.out:
        out = Path(args.out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
            raise ConfigError(f"--out {out} exists and is not an empty folder: choose a new folder or pass --overwrite.")
        parent = out.parent if not out.exists() else out
        while not parent.exists():
            parent = parent.parent
        if not os.access(parent, os.W_OK):
            raise ConfigError(f"--out {out}: cannot write under {parent}; choose a writable folder.")
    if args.history and Path(args.history).exists() and not args.overwrite:
        raise ConfigError(f"--history {args.history} exists: choose a new file or pass --overwrite.")
    name = resolve("strategy", args.strategy)  # unknown names: the list of known ones and the closest match
    supports = getattr(get("strategy", name), "supports", ("*",))
    if "*" not in supports and "causal_lm" not in supports:
        raise ConfigError(f"--strategy {args.strategy}: supports {supports}, not causal language models. "
                          "`erasus list` shows which strategies do.")
    if args.tofu:
        from ..data.datasets.tofu import tofu_request

        req = tofu_request(args.tofu, root=args.tofu_dir)
        forget, retain = req.forget.records, req.retain.records
    else:
        if args.forget and not Path(args.forget).is_file():
            raise DataError(f"--forget {args.forget}: no such file.")
        if args.retain and not Path(args.retain).is_file():
            raise DataError(f"--retain {args.retain}: no such file.")
        forget, retain = _pairs(args.forget), _pairs(args.retain) if args.retain else None
        if retain:
            key = lambda r: (r["question"], r["answer"])  # noqa: E731
            both = {key(r) for r in forget} & {key(r) for r in retain}
            if both:
                raise DataError(f"{len(both)} forget pair(s) also appear in --retain (e.g. {next(iter(both))[0]!r}): "
                                "expected disjoint sets.")
    model = str(args.model)
    looks_local = model.startswith((".", "/", "~")) or model.endswith("/") or model.count("/") > 1 or "\\" in model
    if looks_local and not Path(model).expanduser().exists():
        raise ConfigError(f"--model {model}: no such folder. Expected a local folder with a saved model, or a "
                          "Hugging Face Hub name such as 'org/model'.")
    return forget, retain


def run(args) -> int:
    import torch

    from ..models.causal_lm import QACollator, qa_loader
    from ..unlearners.llm_unlearner import LLMUnlearner, load_causal_lm
    from ..utils.io import atomic_write_text

    forget, retain = _check_args(args)
    device = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched by accelerate launch / torchrun
        import torch.distributed as dist

        if not dist.is_initialized():
            try:
                from accelerate import PartialState

                PartialState()  # joins the process group the launcher set up
            except ImportError:
                pass
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    rank = int(os.environ.get("RANK", "0"))
    model, tok = load_causal_lm(args.model, None)
    if args.tokenizer:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(args.tokenizer)
    if tok is None:
        from ..core.exceptions import ConfigError

        raise ConfigError(f"No tokenizer found with {args.model}; pass --tokenizer.")
    alt = None
    if args.strategy in ("idk", "dpo"):
        from ..data.datasets.tofu import load_idk

        alt = load_idk(args.tofu_dir)
    # tokenised once, batches of a few bucketed shapes (every process builds the same batches)
    mk = lambda rows, a, s: qa_loader(rows, QACollator(tok, max_length=args.max_length, alt_answers=a),  # noqa: E731
                                      args.batch_size, seed=s)
    kwargs = {k: v for k, v in (("lr", args.lr),) if v is not None}
    llm = LLMUnlearner(model, strategy=args.strategy, tokenizer=tok, strategy_kwargs=kwargs or None,
                       lora=True if args.lora else None, inplace=True, device=device)
    trainer = {k: v for k, v in (("epochs", args.epochs), ("max_steps", args.max_steps)) if v is not None}
    if args.max_steps is not None:
        trainer["min_steps"] = 0
    res = llm.fit(mk(forget, alt, args.seed), mk(retain, None, args.seed + 1) if retain else None,
                  progress=rank == 0, seed=args.seed, **trainer)
    if rank == 0:
        print(f"{res.strategy}: {res.steps} steps, {res.timings.get('total_s', 0.0):.1f}s; {res.stop_reason}")
        if args.history:
            atomic_write_text(args.history, json.dumps({"loss": res.history.get("loss", []),
                                                        "world_size": int(os.environ.get("WORLD_SIZE", "1"))}))
        if args.out:
            print(f"saved to {llm.save_pretrained(args.out, overwrite=args.overwrite)}")
    return 0
