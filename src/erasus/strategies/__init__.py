"""Stage 2: unlearning strategies. Each module registers its strategy on import."""
from .amnesiac import Amnesiac, AmnesiacConfig, AmnesiacRecorder, IndexedDataset
from .bad_teacher import BadTeacher, BadTeacherConfig
from .embedding_alignment import EmbeddingAlignment, EmbeddingAlignmentConfig
from .boundary import BoundaryExpand, BoundaryExpandConfig, BoundaryShrink, BoundaryShrinkConfig
from .diffusion import (ESD, SLD, UCE, AdvUnlearn, AdvUnlearnConfig, ConceptAblation, ConceptAblationConfig,
                        ESDConfig, SalUnGeneration, SalUnGenerationConfig, SLDConfig, UCEConfig)
from .composite import (AveragedUnlearning, EnsembleConfig, LayerFreezing, LayerFreezingConfig, MaskBased,
                        MaskBasedConfig, SequentialUnlearning)
from .fisher_forgetting import FisherForgetting, FisherForgettingConfig
from .gradient_ascent import GradientAscent, GradientAscentConfig
from .llm import RMU, ActivationSteering, DExperts, IdkDPO, IdkNLL, TaskVector, Undial
from .localized import AttentionSurgery, CausalTracingUnlearning, LocalizedConfig, causal_trace
from .token_masking import TokenMasking, TokenMaskingConfig
from .negative_gradient import NegativeGradient, NegativeGradientConfig
from .neuron_pruning import NeuronPruning, NeuronPruningConfig
from .preference import NPO, NPOConfig, SimNPO, SimNPOConfig, WGA, WGAConfig
from .relabel import RandomLabel, RandomLabelConfig, SalUnConfig, SaliencyUnlearning
from .retain_tuning import FineTune, FineTuneConfig, SparseAware, SparseAwareConfig
from .scrub import SCRUB, SCRUBConfig
from .vlm import (CLIPNullSpace, ContrastiveUnlearning, ContrastiveUnlearningConfig, ModalityDecoupling,
                  ModalityDecouplingConfig, NullSpaceConfig)
from .ssd import SelectiveSynapticDampening, SSDConfig

# the class names of Erasus's specification, for the same strategies
ModalityDecouplingStrategy = ModalityDecoupling
GradientAscentStrategy = GradientAscent
SCRUBStrategy = SCRUB
SelectiveSynapticDampeningStrategy = SelectiveSynapticDampening
ConceptErasureStrategy = ESD

__all__ = [
    "ModalityDecouplingStrategy", "GradientAscentStrategy", "SCRUBStrategy", "SelectiveSynapticDampeningStrategy",
    "ConceptErasureStrategy",
    "Amnesiac", "AmnesiacConfig", "AmnesiacRecorder", "IndexedDataset",
    "BadTeacher", "BadTeacherConfig", "BoundaryExpand", "BoundaryExpandConfig", "BoundaryShrink",
    "BoundaryShrinkConfig", "AveragedUnlearning", "EnsembleConfig", "LayerFreezing", "LayerFreezingConfig",
    "SequentialUnlearning", "MaskBased", "MaskBasedConfig", "FisherForgetting", "FisherForgettingConfig", "NeuronPruning", "NeuronPruningConfig",
    "GradientAscent", "GradientAscentConfig", "NegativeGradient", "NegativeGradientConfig",
    "NPO", "NPOConfig", "SimNPO", "SimNPOConfig", "WGA", "WGAConfig",
    "RandomLabel", "RandomLabelConfig", "SaliencyUnlearning", "SalUnConfig",
    "FineTune", "FineTuneConfig", "SparseAware", "SparseAwareConfig",
    "SCRUB", "SCRUBConfig", "SelectiveSynapticDampening", "SSDConfig",
    "IdkNLL", "IdkDPO", "Undial", "RMU", "TaskVector", "ActivationSteering", "DExperts", "TokenMasking", "TokenMaskingConfig",
    "AttentionSurgery", "CausalTracingUnlearning", "LocalizedConfig", "causal_trace",
    "EmbeddingAlignment", "EmbeddingAlignmentConfig", "ESD", "ESDConfig", "UCE", "UCEConfig", "SLD", "SLDConfig",
    "AdvUnlearn", "AdvUnlearnConfig", "SalUnGeneration", "SalUnGenerationConfig",
    "ModalityDecoupling", "ModalityDecouplingConfig", "CLIPNullSpace", "NullSpaceConfig", "ContrastiveUnlearning",
    "ContrastiveUnlearningConfig",
    "ConceptAblation", "ConceptAblationConfig",
]
