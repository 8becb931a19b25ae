"""TOFU with NPO and SimNPO: unlearn one fictitious author's question/answer pairs from a
causal LM and judge each result with the TOFU protocol (forget quality, model utility, ROUGE,
PrivLeak) against a model never trained on that author.

    python examples/language_models/tofu_npo_simnpo.py [--out DIR]   # a few minutes on a CPU
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import out_dir  # noqa: E402
from _tiny_tofu import tiny_tofu  # noqa: E402

from erasus import LLMUnlearner  # noqa: E402
from erasus.evaluation import UnlearningBenchmark  # noqa: E402
from erasus.models import QACollator  # noqa: E402
from erasus.models.causal_lm import qa_loader  # noqa: E402

out = out_dir(__doc__.splitlines()[0])
req, tok, finetuned, retrained = tiny_tofu()
coll = QACollator(tok, max_length=96)
forget, retain = qa_loader(req.forget, coll, batch_size=20), qa_loader(req.retain, coll, batch_size=20)
bench = UnlearningBenchmark(protocol="tofu")
print("finetuned:", bench.evaluate(finetuned, forget_data=req, gold_model=retrained, tokenizer=tok).verdict)
for strategy in ("npo", "simnpo"):
    llm = LLMUnlearner(finetuned, strategy=strategy, tokenizer=tok)
    llm.fit(forget, retain, epochs=5, progress=False)
    report = bench.evaluate(llm.model, forget_data=req, gold_model=retrained, tokenizer=tok)
    print(f"\n== {strategy} ==\n{report.summary()}")
    llm.save_pretrained(out / strategy)
print(f"\nmodels saved under {out}")
