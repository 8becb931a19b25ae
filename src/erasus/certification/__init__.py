"""Verification: statistical tests (``UnlearningVerifier``) and certified removal
(``CertifiedLogisticRegression`` + ``CertifiedRemovalVerifier``, Guo et al. 2020)."""
from .certified_removal import CertifiedLogisticRegression, CertifiedRemovalVerifier
from .verifier import UnlearningVerifier, VerificationReport

__all__ = ["CertifiedLogisticRegression", "CertifiedRemovalVerifier", "UnlearningVerifier", "VerificationReport"]
