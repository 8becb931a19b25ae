"""Verification: statistical tests (``UnlearningVerifier``) and certified removal
(``CertifiedLogisticRegression`` + ``CertifiedRemovalVerifier``, Guo et al. 2020) and
``TheoreticalBounds`` (bounds with stated assumptions)."""
from .bounds import Bound, TheoreticalBounds
from .certified_removal import CertifiedLogisticRegression, CertifiedRemovalVerifier
from .verifier import UnlearningVerifier, VerificationReport

__all__ = ["Bound", "TheoreticalBounds", "CertifiedLogisticRegression", "CertifiedRemovalVerifier", "UnlearningVerifier", "VerificationReport"]
