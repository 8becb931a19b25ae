"""Parameter-efficient unlearning: NPO through LoRA adapters (peft) on the attention and MLP
projections of a causal LM; the adapters are merged into the saved model, and the base
weights outside them are untouched during training.

    python examples/language_models/lora_unlearning.py [--out DIR]   # a minute or two on a CPU
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import out_dir  # noqa: E402
from _tiny_tofu import tiny_tofu  # noqa: E402

from erasus import LLMUnlearner  # noqa: E402
from erasus.models import QACollator  # noqa: E402
from erasus.models.causal_lm import qa_loader  # noqa: E402

out = out_dir(__doc__.splitlines()[0])
req, tok, finetuned, _ = tiny_tofu()
coll = QACollator(tok, max_length=96)
forget = qa_loader(req.forget, coll, batch_size=20)
holdout = qa_loader(req.holdout, coll, batch_size=20, shuffle=False) if req.holdout else None
llm = LLMUnlearner(finetuned, strategy="npo", tokenizer=tok, lora={"rank": 8})
n_trainable = sum(p.numel() for p in llm.model.parameters() if p.requires_grad)
result = llm.fit(forget, qa_loader(req.retain, coll, batch_size=20), epochs=5, progress=False)
print(result.stop_reason)
print({k: round(v, 4) for k, v in llm.evaluate(forget, holdout_data=holdout).items() if isinstance(v, float)})
print(f"saved (LoRA merged): {llm.save_pretrained(out / 'npo-lora')}")
