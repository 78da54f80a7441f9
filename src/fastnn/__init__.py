"""fastnn: fast CPU training of dense neural networks.

The compiled core (Numba and Cython kernels) sits under a thin Python API; a pure
NumPy reference (``fastnn.reference``) defines what every kernel computes.

>>> import fastnn
>>> k = fastnn.backend()          # the fastest backend that is built
>>> k.name in fastnn.available_backends()
True
"""

from ._backend import (
    BACKENDS, Backend, BuildWarning, available_backends, backend, default_backend_name,
)
from ._backend import warn_if_unbuilt as _warn_if_unbuilt
from .io import ModelFileError, load, save
from .model import MLP
from .optim import (
    SGD, Adagrad, Adam, AdamW, DivergenceError, Momentum, Nesterov, Optimizer, RMSProp,
)
from .schedules import (
    Constant, Cosine, InverseScaling, LinearWarmup, ReduceOnPlateau, StepDecay,
)
from .training import Callback, EarlyStopping, History, ModelCheckpoint, fit

__version__ = "0.1.0"

__all__ = [
    "BACKENDS", "Backend", "BuildWarning", "available_backends", "backend",
    "default_backend_name", "__version__",
    # training library
    "MLP", "fit", "History", "Callback", "EarlyStopping", "ModelCheckpoint",
    "Optimizer", "SGD", "Momentum", "Nesterov", "Adagrad", "RMSProp", "Adam", "AdamW",
    "DivergenceError", "Constant", "Cosine", "InverseScaling", "LinearWarmup",
    "ReduceOnPlateau", "StepDecay", "save", "load", "ModelFileError",
]

_warn_if_unbuilt()
del _warn_if_unbuilt
