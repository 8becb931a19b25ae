"""Saving an unlearned Hugging Face model with its model card (language-model, audio, video
and vision-language unlearners; the diffusion unlearner saves its own parts)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Union

from ..core.exceptions import ConfigError


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("erasus")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "(development)"


class SavesPretrained:
    """``model_card()`` and ``save_pretrained(path)`` for an unlearner whose ``model`` is a
    Hugging Face ``PreTrainedModel``. ``card_title``: the card's heading; ``card_tags``: its
    tags after ``erasus, machine-unlearning``; ``save_with``: what else goes in the folder."""

    card_title = "Unlearned model"
    card_tags: tuple = ()
    #: objects saved beside the model (a tokenizer, an image processor): each one's ``save_pretrained``
    save_with: tuple = ()

    def model_card(self) -> str:
        r = self.result_
        if r is None:
            raise ConfigError("Nothing to describe yet: call fit() first.")
        return "\n".join([
            "---", f"tags: [{', '.join(('erasus', 'machine-unlearning') + tuple(self.card_tags))}]", "---", "",
            f"# {self.card_title}", "",
            f"Produced with Erasus {_version()} on {time.strftime('%Y-%m-%d')} from `{type(self.model).__name__}`.", "",
            f"- method: `{r.strategy}`", f"- steps: {r.steps}; stopped: {r.stop_reason}", "",
            "## Configuration", "", "```json", json.dumps(r.config, indent=1, default=str), "```", ""]) + "\n"

    def save_pretrained(self, path: Union[str, Path], overwrite: bool = False) -> Path:
        """The model (``save_pretrained``, safetensors) and ``README.md`` (the model card),
        written atomically (:func:`erasus.utils.io.replace_dir`); an existing non-empty ``path``
        is replaced only with ``overwrite=True``. The model's own ``from_pretrained`` loads it."""
        from ..utils.io import replace_dir

        card = self.model_card()
        if not hasattr(self.model, "save_pretrained"):
            raise ConfigError(f"{type(self.model).__name__} has no save_pretrained (not a Hugging Face model): save "
                              "its state_dict with safetensors.torch.save_file instead.")

        def build(tmp: Path) -> None:
            self.model.save_pretrained(tmp, safe_serialization=True)
            for extra in self.save_with:
                extra.save_pretrained(tmp)
            (tmp / "README.md").write_text(card)

        return replace_dir(build, Path(path), overwrite=overwrite)
