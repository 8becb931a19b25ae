"""Stage 3: metrics. Each module registers its metrics on import."""
from .accuracy import AccuracyMetric
from .attacks import (CKAToGold, LastLayerRefit, LinearProbe, QuantizationAttack, RelearnAttack, attack_report,
                      linear_cka, refit_recovery,
                      quantize_weights, relearn)
from .clip import RetrievalMetric
from .context import EvalContext
from .gap import GoldGapMetric
from .lira import (ForgettingScore, ShadowModels, UnlearningShadows, forgetting_score, lira_scores,
                   logit_confidence, rmia_ratio, rmia_scores, roc_summary)
from .llm import (LMMembershipMetric, MemorizationMetric, PerplexityMetric, PrivLeakMetric, RougeMetric, attack_auc,
                  lm_token_stats, privleak)
from .mia import (ConfidenceMIAMetric, EntropyMIAMetric, LossMIAAccuracyMetric, LossMIAMetric, MIAEfficacyMetric, MIAMetric,
                  ModifiedEntropyMIAMetric, RMIAMetric)
from .suite import MetricSuite

__all__ = ["LMMembershipMetric", "MemorizationMetric", "PerplexityMetric", "RougeMetric", "privleak", "PrivLeakMetric", "attack_auc", "lm_token_stats", "RMIAMetric", "ForgettingScore", "ShadowModels", "UnlearningShadows", "forgetting_score",
    "lira_scores", "logit_confidence", "rmia_ratio", "rmia_scores", "roc_summary",
    "CKAToGold", "LastLayerRefit", "refit_recovery", "LinearProbe", "QuantizationAttack", "RelearnAttack", "attack_report", "linear_cka",
    "quantize_weights", "relearn","ConfidenceMIAMetric", "EntropyMIAMetric", "ModifiedEntropyMIAMetric", "AccuracyMetric", "EvalContext", "GoldGapMetric", "LossMIAAccuracyMetric", "LossMIAMetric", "MIAEfficacyMetric", "MetricSuite", "MIAMetric", "RetrievalMetric"]
