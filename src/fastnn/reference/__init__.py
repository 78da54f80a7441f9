"""The pure NumPy reference: the formulas of docs/spec.md written literally.

It is one of fastnn's three backends (``fastnn.backend("numpy")``) and the yardstick
the Numba and Cython kernels are tested against. The functions here take their
outputs as arguments and do not validate; call them through ``fastnn.backend`` for
checked arguments and allocated outputs.
"""

from . import activations, csr, dense, losses, normalization, optimizers
from .activations import *  # noqa: F403
from .csr import *  # noqa: F403
from .dense import *  # noqa: F403
from .losses import *  # noqa: F403
from .normalization import *  # noqa: F403
from .optimizers import *  # noqa: F403

__all__ = [
    name
    for mod in (activations, dense, csr, losses, optimizers, normalization)
    for name in mod.__all__
]
