"""Stage 1: coreset selectors. Each module registers its selectors on import."""
from .basic import FullSelector, RandomSelector
from .geometry import HerdingSelector, KCenterSelector, KMeansPPSelector
from .gradient import ActiveLearningSelector, EL2NSelector, GradientNormSelector
from .ensemble import VotingSelector, WeightedFusionSelector
from .dynamics import ForgettingEventsSelector, LossAccumulationSelector, TrainingDynamicsRecorder
from .submodular import CraigSelector, GradMatchSelector, SubmodularSelector
from .valuation import (AutoSelector, DataShapleySelector, GlisterSelector, RepresenterSelector,
                        ValuationNetworkSelector, knn_shapley)
from .influence import CheckpointRecorder, InfluenceSelector, TracInSelector
from .discovery import Discovery, discover

CRAIGSelector = CraigSelector  # the specification's name

__all__ = ["CRAIGSelector", "discover", "Discovery", "AutoSelector", "DataShapleySelector", "GlisterSelector", "RepresenterSelector",
           "ValuationNetworkSelector", "knn_shapley", "VotingSelector", "WeightedFusionSelector", "GradMatchSelector", "ForgettingEventsSelector", "LossAccumulationSelector", "TrainingDynamicsRecorder", "CraigSelector", "SubmodularSelector", "KMeansPPSelector", "ActiveLearningSelector", "CheckpointRecorder", "InfluenceSelector", "TracInSelector", "EL2NSelector", "FullSelector", "GradientNormSelector", "HerdingSelector", "KCenterSelector",
           "RandomSelector"]
