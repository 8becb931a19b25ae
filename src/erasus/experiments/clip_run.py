"""What ``erasus unlearn --config`` does with a ``family: clip`` config (:mod:`.configs`): load
a CLIP model with its tokenizer (and image processor, where its folder has one), read the forget
and retain image-caption pairs, unlearn with :class:`~erasus.unlearners.VLMUnlearner`, measure
retrieval recall and caption accuracy before and after, and save the model with its card."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from ..core.exceptions import ConfigError


def load_clip(path):
    """``(CLIPModel, tokenizer, image processor or None)`` from a folder or Hub name; weights
    through safetensors where the checkpoint has them."""
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    try:
        model = CLIPModel.from_pretrained(path, use_safetensors=None)
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"model.path {path}: could not load a CLIPModel and its tokenizer ({e}).") from e
    try:
        proc = CLIPImageProcessor.from_pretrained(path)
    except (OSError, ValueError):
        proc = None  # no preprocessor_config.json: images in [0, 1] at data.image_size
    return model, tok, proc


def run_clip(cfg: Dict[str, Any], out: Optional[str] = None, progress: bool = True) -> dict:
    """Unlearn the config's forget pairs and save the model in ``out`` (or ``output.dir``).
    Returns ``{"dir", "result", "recall"}``: :meth:`VLMUnlearner.evaluate`'s rows for the
    original and the unlearned model, retrieval recall@k within each set and
    ``*_zero_shot_acc``, the share of images whose own caption scores highest among every
    distinct caption of both sets (recall within a set of one concept's identical captions
    cannot fall; this can)."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from ..data.folders import image_captions
    from ..unlearners import VLMUnlearner
    from .config_run import saved_model_folder

    out, overwrite = saved_model_folder(cfg, out)
    m, d, s = cfg["model"], cfg["data"], cfg["strategy"]
    model, tok, proc = load_clip(m["path"])

    read = {part: image_captions(d[f"{part}_images"], d[f"{part}_captions"], tok, size=d["image_size"],
                                 max_length=d["max_length"], image_processor=proc)
            for part in ("forget", "retain") if d[f"{part}_images"] is not None}
    # every distinct caption is a class: an image is matched when its own caption scores highest
    captions = sorted({c for _, _, caps in read.values() for c in caps})
    index = {c: i for i, c in enumerate(captions)}
    prompts = tok(captions, padding="max_length", max_length=d["max_length"], truncation=True,
                  return_tensors="pt").input_ids

    def loader(part, labelled=False, seed=0):
        x, ids, caps = read[part]
        data = TensorDataset(x, torch.tensor([index[c] for c in caps])) if labelled else TensorDataset(x, ids)
        return DataLoader(data, batch_size=d["batch_size"], shuffle=not labelled,
                          generator=torch.Generator().manual_seed(seed))

    retain = loader("retain", seed=d["seed"] + 1) if "retain" in read else None
    kwargs = {k: v for k, v in s.items() if k != "name"}
    unl = VLMUnlearner(model, strategy=s["name"], strategy_kwargs=kwargs or None, class_prompts=prompts,
                       device=m["device"])
    result = unl.fit(loader("forget", seed=d["seed"]), retain, progress=progress, seed=d["seed"])
    recall = unl.evaluate(loader("forget", seed=d["seed"]), retain,
                          zero_shot={part: loader(part, labelled=True) for part in read})
    unl.save_with = tuple(x for x in (tok, proc) if x is not None)
    path = unl.save_pretrained(out, overwrite=overwrite)
    return {"dir": Path(path), "result": result, "recall": recall}
