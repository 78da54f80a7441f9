"""fastnn: fast CPU training of dense neural networks.

The compiled core (Numba and Cython kernels) sits under a thin Python API; a pure
NumPy reference (``fastnn.reference``) defines what every kernel computes.

>>> import fastnn
>>> k = fastnn.backend()          # the fastest backend that is built
>>> k.name in fastnn.available_backends()
True
"""

from . import optim as _optim
from . import registry as registry  # the tables of activations, losses, optimizers

# fastnn.tabular, the command line's saved tabular model, registers its kind with io.
from . import tabular  # noqa: F401
from ._backend import (
    BACKENDS,
    Backend,
    BuildWarning,
    available_backends,
    backend,
    default_backend_name,
)
from ._backend import warn_if_unbuilt as _warn_if_unbuilt
from .io import ModelFileError, load, save
from .io import register_kind as _register_kind
from .layers import BatchNorm, Dense, Dropout
from .model import MLP
from .optim import (
    SGD,
    Adagrad,
    Adam,
    AdamW,
    DivergenceError,
    Momentum,
    Nesterov,
    Optimizer,
    RMSProp,
)
from .schedules import (
    Constant,
    Cosine,
    InverseScaling,
    LinearWarmup,
    ReduceOnPlateau,
    StepDecay,
)
from .training import Callback, EarlyStopping, History, ModelCheckpoint, fit

__version__ = "0.1.0"

__all__ = [
    "BatchNorm",
    "Dense",
    "Dropout",
    "BACKENDS",
    "Backend",
    "BuildWarning",
    "available_backends",
    "backend",
    "default_backend_name",
    "__version__",
    # training library
    "MLP",
    "fit",
    "History",
    "Callback",
    "EarlyStopping",
    "ModelCheckpoint",
    "Optimizer",
    "SGD",
    "Momentum",
    "Nesterov",
    "Adagrad",
    "RMSProp",
    "Adam",
    "AdamW",
    "DivergenceError",
    "Constant",
    "Cosine",
    "InverseScaling",
    "LinearWarmup",
    "ReduceOnPlateau",
    "StepDecay",
    "save",
    "load",
    "ModelFileError",
]

# Every optimizer class, those built from a registry row (optim.py) included.
for _cls in _optim.OPTIMIZERS.values():
    if _cls.__name__ not in __all__:
        globals()[_cls.__name__] = _cls
        __all__.append(_cls.__name__)
del _cls

# Saved estimators: their module is imported only when such a file is loaded, so
# scikit-learn stays an optional dependency. (fastnn.tabular registers its own kind
# when it is imported, above.)
_register_kind("mlp_classifier", "fastnn.estimators:_classifier_from_payload")
_register_kind("mlp_regressor", "fastnn.estimators:_regressor_from_payload")
del _register_kind

# The scikit-learn estimators are imported on first use: `import fastnn` must not
# import scikit-learn (an optional extra). They are left out of __all__ so that
# `from fastnn import *` does not need it either. The same for the ONNX export
# (onnx, onnxruntime and skl2onnx: the "onnx" extra); importing fastnn.onnx_export
# also registers the estimators with skl2onnx.
_LAZY = {
    "MLPClassifier": "estimators",
    "MLPRegressor": "estimators",
    "to_onnx": "onnx_export",
    "register_skl2onnx": "onnx_export",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fastnn' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"fastnn.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


_warn_if_unbuilt()
del _warn_if_unbuilt
