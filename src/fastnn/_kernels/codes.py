"""Integer codes the compiled kernels use, derived from ``fastnn.registry``.

The public API names activations, losses and optimizers by string; the kernels branch
on these codes. The Cython and C kernels get the same values from ``codes.pxi`` and
``fastnn_codes.h``, which ``setup.py`` writes from the same tables (a test compares
the built modules with this one).
"""

from .. import registry as _registry

ACTIVATION_CODES: dict[str, int] = _registry.activation_codes()
N_ACTIVATIONS = len(ACTIVATION_CODES)

# Module-level names for the kernels (IDENTITY, RELU, ..., LOSS_MSE, OPT_ADAM, ...), one
# per table row; Numba reads them as compile-time constants.
globals().update({a.name.upper(): a.code for a in _registry.ACTIVATIONS})
globals().update({f"LOSS_{x.name.upper()}": x.code for x in _registry.LOSSES})
globals().update({f"OPT_{o.name.upper()}": o.code for o in _registry.OPTIMIZERS})
N_LOSSES = len(_registry.LOSSES)
N_OPTIMIZERS = len(_registry.OPTIMIZERS)

# The default alpha of the activations that take one (docs/spec.md §3).
DEFAULT_ALPHA: dict[str, float] = {
    a.name: a.alpha for a in _registry.ACTIVATIONS if a.alpha is not None
}

# Per code: the activation's backward takes g' from the saved output (1) or from z (0);
# the number of state buffers of each optimizer.
FROM_OUTPUT = tuple(int(a.from_output) for a in _registry.ACTIVATIONS)
N_STATES = tuple(len(o.states) for o in _registry.OPTIMIZERS)
# Per optimizer code: 1 when its weight decay is decoupled (AdamW), not an L2 term of the
# loss (so a weighted batch does not scale it by m / S).
DECOUPLED = tuple(int(o.decoupled) for o in _registry.OPTIMIZERS)

# ``hyper`` of the whole-epoch kernel: [h0, h1, eps, eps_inside_sqrt, weight_decay,
# clip_norm] (registry.HYPER_SLOTS); the optimizers' rows say what fills h0 and h1.
N_HYPER = len(_registry.HYPER_SLOTS)
# HYPER_H0, HYPER_H1, HYPER_EPS, ...: the index of each slot (Numba constants).
globals().update({f"HYPER_{s.upper()}": i for i, s in enumerate(_registry.HYPER_SLOTS)})

# ``stats`` written by ``train_epoch``: indices, and the values of STAT_STATUS.
STAT_LOSS_SUM = 0  # sum over completed steps of batch loss * batch rows
STAT_CORRECT = 1  # rows predicted right (classification losses)
STAT_STEPS = 2  # optimizer steps completed
STAT_STATUS = 3
STAT_GRAD_NORM = 4  # global gradient norm of the last step (before clipping)
STAT_BAD_VALUE = 5  # the non-finite loss or norm that stopped the epoch
N_STATS = 6
STATUS_OK = 0
STATUS_LOSS_NOT_FINITE = 1
STATUS_GRAD_NOT_FINITE = 2


def __getattr__(name: str) -> int:
    """Only reached for a name no table defines (and tells type checkers that the
    generated names above are ints)."""
    raise AttributeError(f"fastnn._kernels.codes has no code {name!r}")
