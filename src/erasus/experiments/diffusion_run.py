"""What ``erasus unlearn --config`` does with a ``family: diffusion`` config (:mod:`.configs`):
load the text-to-image model, erase the concept with :class:`~erasus.unlearners.DiffusionUnlearner`,
save it with its model card, and draw what the original and the erased model generate for the
erased and the preserved prompts (``samples.png`` in the saved folder)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional


def run_erase(cfg: Dict[str, Any], out: Optional[str] = None, progress: bool = True) -> dict:
    """Erase ``concept.prompts`` from ``model.path`` and save the result in ``out`` (or
    ``output.dir``). Returns ``{"dir", "result", "samples"}`` (``samples``: the picture's path,
    or None with ``sample.n: 0``)."""
    from ..unlearners import DiffusionUnlearner
    from .config_run import saved_model_folder

    out, overwrite = saved_model_folder(cfg, out)  # before a Stable Diffusion checkpoint takes its while to load
    m, c, s, smp = cfg["model"], cfg["concept"], cfg["strategy"], cfg["sample"]
    kwargs = {k: v for k, v in s.items() if k != "name"}
    unl = DiffusionUnlearner(m["path"], strategy=s["name"], strategy_kwargs=kwargs or None, device=m["device"])
    # erase's image check samples as the config's pictures do
    result = unl.erase(c["prompts"], anchor=c["anchor"], preserve=c["preserve"], progress=progress,
                       guidance_scale=smp["guidance_scale"], image_guard=c["image_guard"])
    path = unl.save_pretrained(out, overwrite=overwrite)
    samples = None
    if smp["n"]:
        from ..visualization.plots import _plt, generation_grid

        models = {"erased": unl.model}
        if unl.original_model is not unl.model:
            models = {"original": unl.original_model, **models}
        samples = Path(path) / "samples.png"
        fig = generation_grid(models, c["prompts"] + c["preserve"], samples, n=smp["n"], seed=smp["seed"],
                              steps=smp["steps"], guidance_scale=smp["guidance_scale"], overwrite=True)
        _plt().close(fig)
    return {"dir": Path(path), "result": result, "samples": samples}
