"""Run the published reference code of the language-model and LiRA metrics on the committed
fixture (``tests/data/lm_fixture``, built by ``scripts/build_lm_fixture.py``) and write what it
computes to ``tests/data/lm_reference_values.json``; ``tests/test_lm_reference.py`` checks that
Erasus computes the same values.

    python scripts/lm_reference_values.py --repos DIR

``DIR`` holds checkouts of the reference repositories (the commits are recorded in the
output; the values in the repository were computed at):

================== ==================================== ==========================================
folder             repository                           what runs
================== ==================================== ==========================================
``muse_bench``     github.com/swj0419/muse_bench        ``eval.eval_model``: VerbMem, KnowMem
                                                        (forget, retain), PrivLeak; the PrivLeak
                                                        AUCs of ``metrics/privleak.eval``
``mink-plus-plus`` github.com/zjysteven/mink-plus-plus  the scoring loop of ``run.py`` (LOSS, zlib,
                                                        Min-K%, Min-K%++ per text)
``open-unlearning`` github.com/locuslab/open-unlearning ``MinKProbAttack``, ``MinKPlusPlusAttack``,
                                                        ``evaluate_probability`` on QA batches,
                                                        ``privleak``
``tofu``           github.com/locuslab/tofu             ``get_batch_loss`` on
                                                        ``convert_raw_data_to_model_format``,
                                                        ``eval_rouge_recall``,
                                                        ``aggregate_eval_stat.get_model_utility``
                                                        and ``get_forget_quality``
``privacy``        github.com/tensorflow/privacy        ``research/mi_lira_2021/plot.py``:
                                                        ``generate_ours`` (online, fixed variance
                                                        or not), ``generate_ours_offline``
================== ==================================== ==========================================

The reference code is imported from those checkouts (modules it imports but these
functions do not use — hydra, omegaconf, datasets, pandas, natsort, matplotlib — are
replaced by empty stand-ins); nothing of it is copied into Erasus.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parents[1]
FIXTURE = HERE / "tests" / "data" / "lm_fixture"
MODEL_CONFIGS = {"question_start_tag": "Question: ", "question_end_tag": "\nAnswer:", "answer_tag": " "}


def stub(name: str, **attrs) -> None:
    """An empty stand-in for a module the reference code imports but does not use here."""
    if name in sys.modules:
        return
    try:
        importlib.import_module(name)
        return
    except ImportError:
        pass
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sub = ".".join(parts[:i])
        if sub not in sys.modules:
            mod = types.ModuleType(sub)
            mod.__path__ = []
            sys.modules[sub] = mod
    for k, v in attrs.items():
        setattr(sys.modules[name], k, v)


def load_file(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def commit(path: Path) -> str:
    marker = path / "COMMIT"
    if marker.exists():
        return marker.read_text().strip()
    try:
        return subprocess.check_output(["git", "-C", str(path), "rev-parse", "HEAD"], text=True).strip()
    except Exception:  # noqa: BLE001  (a plain copy of the repository: say so)
        return "unknown (no git metadata; put the commit in a COMMIT file)"


def fixture():
    from transformers import AutoTokenizer, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(FIXTURE / "tokenizer")
    models = {n: GPT2LMHeadModel.from_pretrained(FIXTURE / n).eval() for n in ("original", "gold")}
    data = json.loads((FIXTURE / "data.json").read_text())
    return tok, models, data


# ---------------------------------------------------------------------------------------
def muse(root: Path, tok, models, data) -> dict:
    """MUSE's ``eval_model``. At the recorded commit ``metrics/privleak.eval`` stops at
    ``log['forget'].keys()`` (``log['forget']`` is a list of per-text dicts), so its AUC table
    is rebuilt here from the same file's ``eval_data`` and ``sweep`` exactly as that function
    would, with the score names read from the first record; ``eval_model`` is then run with it."""
    had_pandas = "pandas" in sys.modules
    stub("pandas", DataFrame=object)  # eval.py imports it for writing CSV files only
    sys.path.insert(0, str(root.parent))
    ev = importlib.import_module(f"{root.name}.eval")
    pl = importlib.import_module(f"{root.name}.metrics.privleak")
    if not had_pandas and getattr(sys.modules.get("pandas"), "__file__", None) is None:
        del sys.modules["pandas"]  # scikit-learn looks for a real pandas once one is imported

    def privleak_eval(forget_data, retain_data, holdout_data, model, tokenizer):
        log = {s: pl.eval_data(d, model, tokenizer) for s, d in
               (("forget", forget_data), ("retain", retain_data), ("holdout", holdout_data))}
        auc = {}
        for split0 in ("forget", "retain", "holdout"):
            for split1 in ("forget", "retain", "holdout"):
                for ppl_type in [k for k in log["forget"][0] if k != "text"]:
                    nonmember = [d[ppl_type] for d in log[split0]]
                    member = [d[ppl_type] for d in log[split1]]
                    y = np.array([0] * len(nonmember) + [1] * len(member))
                    auc[f"{split0}_{split1}_{ppl_type}"] = pl.sweep(np.array(nonmember + member), y)[2]
        return auc, log

    ev.eval_privleak = privleak_eval
    out = {}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        files = {"verbmem_forget_file": data["verbmem"], "privleak_forget_file": data["text_forget"],
                 "privleak_retain_file": data["text_retain"], "privleak_holdout_file": data["text_holdout"],
                 "knowmem_forget_qa_file": data["knowmem_forget"], "knowmem_forget_qa_icl_file": data["knowmem_forget_icl"],
                 "knowmem_retain_qa_file": data["knowmem_retain"], "knowmem_retain_qa_icl_file": data["knowmem_retain_icl"]}
        for k, v in files.items():
            (d / f"{k}.json").write_text(json.dumps(v))
        paths = {k: str(d / f"{k}.json") for k in files}
        aucs = {}
        for name, model in models.items():
            auc, _ = privleak_eval(data["text_forget"], data["text_retain"], data["text_holdout"], model, tok)
            aucs[name] = {k: float(auc[k]) for k in ("forget_holdout_Min-40%", "forget_holdout_Min-20%",
                                                      "forget_holdout_PPL", "forget_holdout_PPL/zlib")}
        ev.AUC_RETRAIN = {"forget_holdout_Min-40%": aucs["gold"]["forget_holdout_Min-40%"]}
        for name, model in models.items():
            res = ev.eval_model(model, tok, metrics=["verbmem_f", "privleak", "knowmem_f", "knowmem_r"], **paths)
            out[name] = {k: float(v) for k, v in res.items()} | {"auc": aucs[name]}
    return out


def minkpp(root: Path, tok, models, data) -> dict:
    """The scoring loop of run.py, executed as written for each text (its model / data
    loading and argument parsing are not run)."""
    src = (root / "run.py").read_text()
    start = src.index("    text = d['input']")
    end = src.index("# compute metrics")
    body = "\n".join(line[4:] if line.startswith("    ") else line for line in src[start:end].splitlines())
    code = compile(body, str(root / "run.py"), "exec")
    import torch.nn.functional as F
    import zlib

    out = {}
    for name, model in models.items():
        from collections import defaultdict

        scores = defaultdict(list)
        for text in data["text_forget"] + data["text_holdout"]:
            ns = {"d": {"input": text}, "tokenizer": tok, "model": model, "torch": torch, "np": np, "F": F,
                  "zlib": zlib, "scores": scores}
            with torch.no_grad():
                exec(code, ns)
        out[name] = {k: [float(x) for x in scores[k]] for k in ("loss", "zlib", "mink_0.4", "mink++_0.4", "mink_0.2")}
    return out


def open_unlearning(root: Path, tok, models, data) -> dict:
    stub("omegaconf", OmegaConf=object)
    stub("data.utils", IGNORE_INDEX=-100)
    for pkg in ("evals", "evals.metrics", "evals.metrics.mia"):
        mod = types.ModuleType(pkg)
        mod.__path__ = [str(root / "src" / pkg.replace(".", "/"))]
        sys.modules[pkg] = mod
    import logging

    stub("evals.metrics.base", unlearning_metric=lambda name: (lambda f: f), logger=logging.getLogger("ref"))
    utils = load_file("evals.metrics.utils", root / "src/evals/metrics/utils.py")
    load_file("evals.metrics.mia.all_attacks", root / "src/evals/metrics/mia/all_attacks.py")
    mk = load_file("evals.metrics.mia.min_k", root / "src/evals/metrics/mia/min_k.py")
    mkpp = load_file("evals.metrics.mia.min_k_plus_plus", root / "src/evals/metrics/mia/min_k_plus_plus.py")
    priv = load_file("evals.metrics.privacy", root / "src/evals/metrics/privacy.py")
    from erasus.models.causal_lm import QACollator

    coll = QACollator(tok, max_length=128)
    records = data["qa_forget"] + data["qa_holdout"]
    out = {}
    for name, model in models.items():
        a = object.__new__(mk.MinKProbAttack)
        a.model = model
        a.setup(k=0.4)
        b = object.__new__(mkpp.MinKPlusPlusAttack)
        b.model = model
        b.setup(k=0.4)
        min_k, min_k_pp, loss = [], [], []
        for i in range(0, len(records), 4):
            batch = coll(records[i:i + 4])
            batch = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}
            min_k += [float(a.compute_score(v)) for v in a.compute_batch_values(batch)]
            min_k_pp += [float(b.compute_score(v)) for v in b.compute_batch_values(batch)]
            loss += [float(r["avg_loss"]) for r in utils.evaluate_probability(model, batch)]
        out[name] = {"min_k": min_k, "min_k_pp": min_k_pp, "loss": loss}
    out["privleak"] = {"auc_unlearned": 0.93, "auc_retrained": 0.55,
                       "value": float(priv.privleak(None, pre_compute={"forget": {"agg_value": 0.93}},
                                                    reference_logs={"retain_model_logs": {"retain": {"agg_value": 0.55}}},
                                                    ref_value=0.5)["agg_value"])}
    return out


def tofu(root: Path, tok, models, data) -> dict:
    import logging

    stub("datasets")
    stub("natsort", natsorted=sorted)
    stub("omegaconf", OmegaConf=object)
    stub("hydra", main=lambda **kw: (lambda f: f))
    stub("evaluate")
    logging.getLogger("absl").setLevel(logging.WARNING)
    sys.path.insert(0, str(root))
    dm = importlib.import_module("data_module")
    agg = importlib.import_module("aggregate_eval_stat")
    eu = importlib.import_module("evaluate_util")
    from erasus.evaluation.tofu import generate_answers

    def avg_losses(model, pairs):
        out = []
        for q, a in pairs:
            ids, labels, att = dm.convert_raw_data_to_model_format(tok, 128, q, a, MODEL_CONFIGS)
            with torch.no_grad():
                logits = model(input_ids=ids[None], attention_mask=att[None]).logits
            n = int((labels != -100).sum())
            out.append(float(dm.get_batch_loss(logits, labels[None])[0]) / n)
        return out

    splits = {"eval_log_forget.json": (data["qa_forget"], "paraphrased_answer"),
              "eval_log.json": (data["qa_retain"], "paraphrased_answer"),
              "eval_real_author_wo_options.json": (data["world"][:3], "answer"),
              "eval_real_world_wo_options.json": (data["world"][3:], "answer")}
    results, gens = {}, {}
    for name, model in models.items():
        res = {}
        for split, (recs, base) in splits.items():
            gen = generate_answers(model, tok, [r["question"] for r in recs])
            gens.setdefault(name, {})[split] = gen
            rouge = eu.eval_rouge_recall(gen, [r["answer"] for r in recs], list(range(len(recs))))
            gt = avg_losses(model, [(r["question"], r["answer"]) for r in recs])
            para = avg_losses(model, [(r["question"], r[base]) for r in recs])
            pert = [avg_losses(model, [(r["question"], p) for p in r["perturbed_answer"]]) for r in recs]
            res[split] = {"avg_gt_loss": dict(enumerate(gt)), "avg_paraphrased_loss": dict(enumerate(para)),
                          "average_perturb_loss": dict(enumerate(pert)), "rougeL_recall": rouge["rougeL_recall"]}
        results[name] = res
    out = {}
    for name in models:
        mu = agg.get_model_utility(results[name])
        out[name] = {k: float(v) for k, v in mu.items()}
    out["original"]["Forget Quality"] = float(agg.get_forget_quality(results["original"], results["gold"])["Forget Quality"])
    out["generations"] = gens
    return out


def lira(root: Path) -> dict:
    stub("matplotlib")
    stub("matplotlib.pyplot")
    import matplotlib

    matplotlib.rcParams = {}
    plot = load_file("lira_plot", root / "research/mi_lira_2021/plot.py")
    rng = np.random.default_rng(0)
    n_models, n_samples = 8, 20
    keep = np.zeros((n_models, n_samples), dtype=bool)
    for j in range(n_samples):
        keep[rng.permutation(n_models)[: n_models // 2], j] = True
    scores = rng.normal(size=(n_models, n_samples, 1)) + 1.5 * keep[..., None]
    check_keep = rng.random((1, n_samples)) < 0.5
    check_scores = rng.normal(size=(1, n_samples, 1)) + 1.5 * check_keep[..., None]
    out = {"keep": keep.tolist(), "scores": scores[..., 0].tolist(), "check_keep": check_keep[0].tolist(),
           "check_scores": check_scores[0, :, 0].tolist()}
    for key, fn, fix in (("online", plot.generate_ours, False), ("online_fixed", plot.generate_ours, True),
                         ("offline", plot.generate_ours_offline, False),
                         ("offline_fixed", plot.generate_ours_offline, True)):
        pred, _ = fn(keep, scores, check_keep, check_scores, fix_variance=fix)
        # plot.py's sweep ranks samples by -prediction: the member score is -prediction
        out[key] = [float(-p) for p in np.asarray(pred).ravel()]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repos", required=True, help="folder with the reference checkouts (see the docstring)")
    ap.add_argument("--out", default=str(HERE / "tests" / "data" / "lm_reference_values.json"))
    args = ap.parse_args()
    repos = Path(args.repos)
    torch.set_num_threads(1)
    tok, models, data = fixture()
    out = {"sources": {}}
    for folder, key, fn in (("muse_bench", "muse", muse), ("mink-plus-plus", "minkpp", minkpp),
                            ("open-unlearning", "open_unlearning", open_unlearning), ("tofu", "tofu", tofu)):
        out["sources"][key] = {"folder": folder, "commit": commit(repos / folder)}
        out[key] = fn(repos / folder, tok, models, data)
        print(f"{key}: done", flush=True)
    out["sources"]["lira"] = {"folder": "privacy", "commit": commit(repos / "privacy")}
    out["lira"] = lira(repos / "privacy")
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
