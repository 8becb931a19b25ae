"""Stage 2: unlearning strategies. Each module registers its strategy on import."""
from .gradient_ascent import GradientAscent, GradientAscentConfig
from .negative_gradient import NegativeGradient, NegativeGradientConfig
from .scrub import SCRUB, SCRUBConfig
from .ssd import SelectiveSynapticDampening, SSDConfig

__all__ = [
    "GradientAscent", "GradientAscentConfig", "NegativeGradient", "NegativeGradientConfig",
    "SCRUB", "SCRUBConfig", "SelectiveSynapticDampening", "SSDConfig",
]
