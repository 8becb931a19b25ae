"""Differentially private training through Opacus, so unlearning starts from a model whose
(ε, δ) is known."""
from .dp import DPTrainingResult, train_dp

__all__ = ["DPTrainingResult", "train_dp"]
