"""Amnesiac unlearning (Graves, Nagisetty & Ganesh, AAAI 2021) and its training-time recorder."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional

import torch

from ..core.exceptions import ConfigError, DataError
from ..core.registry import register
from ..core.strategy import LossStrategy, LossStrategyConfig
from ..utils.data import IndexedDataset, root_indices  # noqa: F401  (re-exported)
from ..utils.io import atomic_write_text, load_state_dict, save_state_dict

INDEX = "amnesiac_index.json"


class AmnesiacRecorder:
    """Training-time callback for :class:`Amnesiac`: saves the parameter update of each
    training batch that contains a tracked sample.

        rec = AmnesiacRecorder(model, "runs/amnesiac", track_ids=sensitive_ids)
        loader = DataLoader(IndexedDataset(train), batch_size=128, shuffle=True)
        for batch in loader:
            rec.before_step()
            loss = ...; opt.zero_grad(); loss.backward(); opt.step()
            rec.after_step(batch)          # batch[-1] holds the dataset indices
        rec.close()

    or ``train_classifier(model, loader, recorder=rec)``. ``track_ids``: the dataset
    indices whose batches are kept (the samples that may later be deleted); ``None`` keeps
    every batch, which costs one model-sized file per step (the paper's storage caveat).
    Updates are written as safetensors files with an index mapping each to its batch's ids.
    """

    def __init__(self, model: torch.nn.Module, save_dir, track_ids: Optional[Iterable[int]] = None):
        self.model = model
        self.dir = Path(save_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if (self.dir / INDEX).exists():
            raise ConfigError(f"{self.dir} already holds recorded updates ({INDEX}); expected an empty directory, "
                              "so that an earlier run's records are never overwritten.")
        self.track = None if track_ids is None else set(int(i) for i in track_ids)
        self.entries: List[dict] = []
        self._before = None
        self.steps = 0

    def before_step(self) -> None:
        self._before = {n: p.detach().clone() for n, p in self.model.named_parameters()}

    def after_step(self, batch) -> None:
        if self._before is None:
            raise RuntimeError("AmnesiacRecorder.after_step called without before_step.")
        ids = batch[-1] if isinstance(batch, (tuple, list)) else batch["index"]
        ids = [int(i) for i in torch.as_tensor(ids).flatten().tolist()]
        self.steps += 1
        if self.track is None or self.track.intersection(ids):
            delta = {n: (p.detach() - self._before[n]).cpu().contiguous() for n, p in self.model.named_parameters()}
            name = f"update_{self.steps:07d}.safetensors"
            save_state_dict(delta, self.dir / name)
            self.entries.append({"file": name, "step": self.steps, "ids": ids})
        self._before = None

    def close(self) -> Path:
        """Write the index (atomically) and return its path."""
        path = self.dir / INDEX
        atomic_write_text(path, json.dumps({"steps": self.steps, "tracked": None if self.track is None else
                                            sorted(self.track), "updates": self.entries}))
        return path


@dataclass
class AmnesiacConfig(LossStrategyConfig):
    """``updates_dir``: the directory an :class:`AmnesiacRecorder` wrote while the model was
    trained (required); ``lr`` 1e-3 (Adam) and at most ``epochs`` = 10 forget-set-sized
    passes of retain batches for the repair fine-tuning (calibrated stopping applies)."""

    updates_dir: str = ""
    lr: float = 1e-3
    epochs: float = 10


@register("strategy", "amnesiac", aliases=("amnesiac_unlearning",))
class Amnesiac(LossStrategy):
    """Amnesiac unlearning: undo the training updates that saw the forget data, then repair.

    Graves, Nagisetty & Ganesh, "Amnesiac Machine Learning", AAAI 2021. During training,
    :class:`AmnesiacRecorder` stores the parameter update ``Δθ_b`` of every batch ``b``
    holding a sample that may later be deleted. Unlearning subtracts ``Σ Δθ_b`` over the
    batches that held any forget sample, then fine-tunes on the retain set to repair the
    collateral damage (the paper's "amnesiac unlearning" with repair). Forget samples are
    matched by dataset index: the forget loader's dataset must be a ``Subset`` (or chain of
    them) of the dataset the recorder indexed. Practical when deletions are few relative to
    the number of batches: a random 10% of a dataset touches almost every batch.
    """

    config_class = AmnesiacConfig
    needs_retain = True
    needs_training_records = True  # it cannot run on a model trained without an AmnesiacRecorder

    def setup(self, forget_loader, retain_loader):
        c = self.config
        if not c.updates_dir:
            raise ConfigError("amnesiac: expected updates_dir, the directory an AmnesiacRecorder wrote during "
                              "training (see erasus.strategies.amnesiac.AmnesiacRecorder).")
        index_path = Path(c.updates_dir) / INDEX
        if not index_path.exists():
            raise DataError(f"amnesiac: no recorded updates at {index_path}. Expected the directory of an "
                            "AmnesiacRecorder that was closed (recorder.close()) after training.")
        index = json.loads(index_path.read_text())
        forget_ids = set(root_indices(forget_loader.dataset).tolist())
        if index["tracked"] is not None:
            untracked = forget_ids - set(index["tracked"])
            if untracked:
                raise DataError(f"amnesiac: {len(untracked)} forget samples (e.g. {sorted(untracked)[:5]}) were not "
                                "tracked by the recorder, so their updates were not kept. Expected track_ids to "
                                "include every sample that may be deleted.")
        hits = [e for e in index["updates"] if forget_ids.intersection(e["ids"])]
        if not hits:
            raise DataError("amnesiac: no recorded batch contains a forget sample. Expected the forget loader's "
                            "dataset to be a Subset of the dataset the recorder indexed.")
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for e in hits:
                for n, d in load_state_dict(Path(c.updates_dir) / e["file"]).items():
                    if n in params and params[n].requires_grad:  # frozen parameters stay as they are
                        params[n].sub_(d.to(params[n].device, params[n].dtype))
        self.removed = (len(hits), index["steps"])

    def retain_step(self, batch, batch_idx):
        return self.adapter.loss(batch)

    def unlearn(self, model, forget_loader, retain_loader=None, holdout_loader=None, **kwargs):
        result = super().unlearn(model, forget_loader, retain_loader, holdout_loader, **kwargs)
        n, total = getattr(self, "removed", (0, 0))
        result.stop.message = f"subtracted {n} of {total} recorded batch updates, then repaired: {result.stop.message}"
        return result
