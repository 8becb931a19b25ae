"""Verification: statistical tests (``UnlearningVerifier``) and certified removal
(``CertifiedLogisticRegression`` + ``CertifiedRemovalVerifier``, Guo et al. 2020) and
``TheoreticalBounds`` (bounds with stated assumptions)."""
from .bounds import Bound, TheoreticalBounds
from .certified_removal import CertifiedLogisticRegression, CertifiedRemovalVerifier
from .suite import SuiteReport, UnlearningVerificationSuite
from .verifier import UnlearningVerifier, VerificationReport

__all__ = ["SuiteReport", "UnlearningVerificationSuite", "Bound", "TheoreticalBounds", "CertifiedLogisticRegression", "CertifiedRemovalVerifier", "UnlearningVerifier", "VerificationReport"]
