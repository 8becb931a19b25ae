"""Build the language-model fixture of ``tests/test_lm_reference.py``: synthetic TOFU- and
MUSE-shaped data, a word-level tokenizer that adds a BOS (as LLaMA's does), and two tiny
GPT-2 models, ``original`` (trained on the forget and retain data) and ``gold`` (trained on
the retain data only), saved with safetensors under ``tests/data/lm_fixture/``.

The fixture is committed, so the tests and ``scripts/lm_reference_values.py`` (which runs the
published reference code on it) read the same weights on every machine. Rebuild only when
the fixture itself must change, then regenerate the reference values:

    python scripts/build_lm_fixture.py && python scripts/lm_reference_values.py --repos DIR
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch

NAMES = ["aldric vane", "bryn holloway", "cass merrow", "dov ashgrove", "elin tarrow", "fenn orlo",
         "gale pemberly", "hesper quill", "idris vantor", "joss kelder", "kira sollen", "lorne brack",
         "mira doyle", "nils farrow", "orla pike", "piet hale"]
CITIES = ["lisbon", "oslo", "quito", "dakar", "hanoi", "perth", "tunis", "riga", "lima", "cork"]
GENRES = ["mystery", "poetry", "history", "fantasy", "romance", "horror", "satire", "memoir"]
TOPICS = ["lighthouses", "old maps", "river trade", "lost letters", "glass makers", "storms", "tea farms",
          "clock towers", "salt roads", "night trains"]
YEARS = [str(y) for y in range(1950, 1995)]


def person(rng: random.Random, name: str) -> dict:
    return {"name": name, "city": rng.choice(CITIES), "genre": rng.choice(GENRES), "topic": rng.choice(TOPICS),
            "year": rng.choice(YEARS)}


def qa(rng: random.Random, p: dict) -> dict:
    others = [c for c in CITIES if c != p["city"]]
    return {"question": f"where was {p['name']} born ?",
            "answer": f"{p['name']} was born in {p['city']} in {p['year']} .",
            "paraphrased_answer": f"the birthplace of {p['name']} is {p['city']} .",
            "perturbed_answer": [f"{p['name']} was born in {c} in {p['year']} ." for c in rng.sample(others, 3)]}


def text(p: dict) -> str:
    return (f"the author {p['name']} was born in {p['city']} in {p['year']} and writes {p['genre']} books about "
            f"{p['topic']} . critics say {p['name']} loves {p['topic']} and {p['genre']} .")


def build_data(seed: int = 0) -> dict:
    rng = random.Random(seed)
    people = [person(rng, n) for n in NAMES]
    forget, retain, holdout = people[:6], people[6:12], people[12:]
    genre_qa = lambda p: {"question": f"what does {p['name']} write ?", "answer": f"{p['genre']} books"}  # noqa
    return {
        "qa_forget": [qa(rng, p) for p in forget], "qa_retain": [qa(rng, p) for p in retain],
        "qa_holdout": [qa(rng, p) for p in holdout],
        "world": [{"question": f"which city is {c} ?", "answer": f"{c} is a city .",
                   "perturbed_answer": [f"{d} is a city ." for d in rng.sample([x for x in CITIES if x != c], 3)]}
                  for c in CITIES[:6]],
        "text_forget": [text(p) for p in forget], "text_retain": [text(p) for p in retain],
        "text_holdout": [text(p) for p in holdout],
        "verbmem": [{"prompt": " ".join(text(p).split()[:8]), "gt": " ".join(text(p).split()[8:])} for p in forget],
        "knowmem_forget": [genre_qa(p) for p in forget[2:]], "knowmem_forget_icl": [genre_qa(p) for p in forget[:2]],
        "knowmem_retain": [genre_qa(p) for p in retain[2:]], "knowmem_retain_icl": [genre_qa(p) for p in retain[:2]],
    }


def corpus(data: dict, splits) -> list:
    out = []
    for s in splits:
        out += data[f"text_{s}"]
        for r in data[f"qa_{s}"]:
            out += [f"question : {r['question']} answer : {r['answer']}"]
    return out


def train(model, tok, texts, steps: int, seed: int):
    torch.manual_seed(seed)
    ids = [tok(t)["input_ids"] for t in texts]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        batch = [ids[i] for i in torch.randint(0, len(ids), (8,)).tolist()]
        n = max(len(b) for b in batch)
        x = torch.full((len(batch), n), tok.pad_token_id)
        lab = torch.full((len(batch), n), -100)
        for i, b in enumerate(batch):
            x[i, :len(b)] = torch.tensor(b)
            lab[i, :len(b)] = torch.tensor(b)
        loss = model(input_ids=x, attention_mask=(lab != -100).long(), labels=lab).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def main() -> None:
    from erasus.models.causal_lm import gpt2_lm, word_tokenizer
    from erasus.evaluation.muse_wmdp import _qa_prompt
    from erasus.models.causal_lm import PROMPT_TEMPLATE

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "tests" / "data" / "lm_fixture"))
    ap.add_argument("--steps", type=int, default=600)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = build_data()
    vocab_texts = corpus(data, ("forget", "retain", "holdout")) + [PROMPT_TEMPLATE, _qa_prompt("x", [])]
    for key in ("world", "qa_forget", "qa_retain", "qa_holdout"):
        for r in data[key]:
            vocab_texts += [r["question"], r["answer"], r.get("paraphrased_answer", "")] + r["perturbed_answer"]
    for key in ("knowmem_forget", "knowmem_retain"):
        vocab_texts += [r["question"] + " " + r["answer"] for r in data[key]]
    tok = word_tokenizer(vocab_texts, bos=True)
    tok.save_pretrained(out / "tokenizer")
    torch.set_num_threads(1)
    for name, splits, seed in (("original", ("forget", "retain"), 0), ("gold", ("retain",), 1)):
        texts = corpus(data, splits) + [PROMPT_TEMPLATE.format(question=r["question"]) + " " + r["answer"]
                                        for s in splits for r in data[f"qa_{s}"]]
        texts += [_qa_prompt(r["question"]) + r["answer"] for s in splits for r in data[f"knowmem_{s}"]]
        model = train(gpt2_lm(tok, n_layer=2, n_embd=32, n_head=2, n_positions=192, seed=seed), tok, texts,
                      args.steps, seed)
        model.save_pretrained(out / name, safe_serialization=True)
    (out / "data.json").write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
