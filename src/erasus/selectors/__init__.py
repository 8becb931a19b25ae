"""Stage 1: coreset selectors. Each module registers its selectors on import."""
from .basic import FullSelector, RandomSelector
from .geometry import HerdingSelector, KCenterSelector
from .gradient import EL2NSelector, GradientNormSelector

__all__ = ["EL2NSelector", "FullSelector", "GradientNormSelector", "HerdingSelector", "KCenterSelector",
           "RandomSelector"]
