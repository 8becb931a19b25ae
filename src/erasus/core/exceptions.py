"""The exceptions of :mod:`erasus.exceptions`, under the path they were first published at."""
from ..exceptions import (ConfigError, DataError, DivergenceError, ErasusError, UnknownNameError,
                          UnsupportedModelError)

__all__ = ["ConfigError", "DataError", "DivergenceError", "ErasusError", "UnknownNameError",
           "UnsupportedModelError"]
