"""One table per concept: the activations, losses and optimizers fastnn knows.

Everything else is derived from these tables: the integer codes the Numba kernels use
(``fastnn._kernels.codes``), the C enums of the Cython and C kernels (written at build
time by ``setup.py`` with :func:`cython_codes` and :func:`c_codes`), the names the
model, the estimators and the command line accept, the checked per-activation methods
of :class:`fastnn.Backend`, the initialiser ``init="auto"`` picks and the tolerances
the equivalence tests apply (docs/spec.md §11).

This module imports nothing from fastnn (``setup.py`` runs it on its own), and the
kernels never see a name: only the codes below.

Adding an activation (CONTRIBUTING.md has the checklist): one :class:`Activation` row
here, its formula in each backend (``reference/activations.py``,
``_kernels/activations_numba.py``, ``_kernels/activations_cython.pyx``), docs/spec.md
§3, and its edge values in ``tests/kernels/test_activations.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "Activation",
    "Loss",
    "Optimizer",
    "ACTIVATIONS",
    "LOSSES",
    "OPTIMIZERS",
    "activation",
    "activation_codes",
    "cython_codes",
    "c_codes",
]


@dataclass(frozen=True)
class Activation:
    """One activation function g and what the rest of fastnn needs to know of it.

    Attributes
    ----------
    name : str
        The public name (``MLP(activation=...)``, the estimators, the command line).
    code : int
        The kernels' integer code; codes are 0, 1, 2... in table order.
    formula, derivative : str
        g(z) and g'(z) in words, for the checked methods' docstrings (docs/spec.md §3
        is the contract).
    alpha : float or None
        The default of the activation's one parameter; None when it takes none.
    init : {"he", "xavier", "lecun"}
        The initialiser ``init="auto"`` uses for a layer with this activation.
    sklearn : str or None
        scikit-learn's name for it, where that differs ("logistic" for sigmoid).
    hidden : bool
        Offered for hidden layers by the estimators and the command line.
    from_output : bool
        The backward pass takes g' from the saved output a = g(z), not from z.
    rowwise : bool
        g couples the units of a row (softmax); the others are elementwise.
    ulp, derivative_ulp : int
        How far a compiled backend may be from the reference, in ULP of the result
        (0: bit for bit; docs/spec.md §11 gives each bound's reason), for g and for g'
        (``<name>_derivative``, taken from z).
    derivative_atol : int
        Where g' is a sum of terms of size about 1 that cancel, ULP of the result mean
        nothing: g' may also be within this many float64 unit roundoffs (2**-53).
    """

    name: str
    code: int
    formula: str
    derivative: str
    alpha: float | None = None
    init: str = "xavier"
    sklearn: str | None = None
    hidden: bool = True
    from_output: bool = False
    rowwise: bool = False
    ulp: int = 0
    derivative_ulp: int = 0
    derivative_atol: int = 0

    @property
    def backward_ulp(self) -> int:
        """ULP bound of ``activation_backward`` (da * g'): one more rounding than g'
        when g' comes from z through a transcendental; exact from the saved output."""
        if self.from_output or self.derivative_ulp == 0:
            return 0
        return self.derivative_ulp + 1


ACTIVATIONS: tuple[Activation, ...] = (
    Activation("identity", 0, "g(z) = z", "g'(z) = 1"),
    Activation("step", 1, "g(z) = 1 if z >= 0 else 0", "g'(z) = 0 (not trainable)", hidden=False),
    Activation(
        "sigmoid",
        2,
        "g(z) = 1 / (1 + e^-z), without overflow",
        "g'(z) = s (1 - s), s = sigmoid(z)",
        sklearn="logistic",
        from_output=True,
        ulp=2,
        derivative_ulp=2,
        derivative_atol=8,
    ),
    Activation(
        "tanh",
        3,
        "g(z) = tanh z",
        "g'(z) = 1 - tanh^2 z",
        from_output=True,
        ulp=2,
        derivative_ulp=2,
        derivative_atol=8,
    ),
    Activation("relu", 4, "g(z) = max(0, z)", "g'(z) = 1 if z > 0 else 0", init="he"),
    Activation(
        "leaky_relu",
        5,
        "g(z) = z if z > 0 else alpha z",
        "g'(z) = 1 if z > 0 else alpha",
        alpha=0.01,
        init="he",
    ),
    Activation(
        "elu",
        6,
        "g(z) = z if z > 0 else alpha (e^z - 1)",
        "g'(z) = 1 if z > 0 else alpha e^z",
        alpha=1.0,
        init="he",
        ulp=2,
        derivative_ulp=2,
    ),
    Activation(
        "softmax",
        7,
        "g(z)_j = e^(z_j - max z) / sum_i e^(z_i - max z), row-wise",
        "the row's Jacobian: dz = a (da - sum_j da_j a_j)",
        hidden=False,
        from_output=True,
        rowwise=True,
    ),
    Activation(
        "gelu",
        8,
        "g(z) = z Phi(z) = z erfc(-z / sqrt 2) / 2 (the exact form)",
        "g'(z) = Phi(z) + z phi(z), phi(z) = e^(-z^2 / 2) / sqrt(2 pi)",
        init="he",
        derivative_ulp=2,
        derivative_atol=16,
    ),
    Activation(
        "silu",
        9,
        "g(z) = z sigmoid(z) (swish)",
        "g'(z) = s + z s (1 - s), s = sigmoid(z)",
        init="he",
        ulp=4,
        derivative_ulp=4,
        derivative_atol=16,
    ),
    Activation(
        "selu",
        10,
        "g(z) = lambda z if z > 0 else lambda alpha (e^z - 1), fixed lambda and alpha",
        "g'(z) = lambda if z > 0 else lambda alpha e^z",
        init="lecun",
        ulp=2,
        derivative_ulp=2,
    ),
    Activation(
        "mish",
        11,
        "g(z) = z tanh(softplus(z)), softplus(z) = log(1 + e^z)",
        "g'(z) = t + z (1 - t^2) sigmoid(z), t = tanh(softplus(z))",
        init="he",
        ulp=8,
        derivative_ulp=8,
        derivative_atol=16,
    ),
)

# SELU's constants (Klambauer et al. 2017, as PyTorch writes them), float64.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


@dataclass(frozen=True)
class Loss:
    """One loss of the whole-epoch kernels.

    ``name`` is the model's loss name; ``sparse`` marks the variant that reads class
    indices (int64, shape (m,)) instead of float target rows.
    """

    name: str
    code: int
    sparse: bool = False


LOSSES: tuple[Loss, ...] = (
    Loss("mse", 0),
    Loss("binary_cross_entropy", 1),
    Loss("cross_entropy", 2),  # float targets: one-hot or probability rows (m, k)
    Loss("sparse_cross_entropy", 3, sparse=True),  # int64 class indices (m,)
    Loss("poisson", 4),  # log link: out = log of the predicted mean
)


@dataclass(frozen=True)
class Optimizer:
    """One optimizer of the fused update kernels.

    Attributes
    ----------
    name, code : str, int
    states : tuple of str
        The per-parameter state buffers, in the order the kernels take them.
    hyper : dict
        Which attribute of the Python optimizer fills each slot of the kernels' ``hyper``
        vector ``[h0, h1, eps, eps_inside_sqrt, weight_decay, clip_norm]`` (the last two
        are common to every optimizer and not listed).
    scale_free : bool
        The update is invariant to a scale of the gradient (undone by scaling eps),
        rather than proportional to it (undone by the learning rate).
    estimator : dict
        The optimizer's constructor arguments as the estimators fill them: the name of
        an estimator parameter; a name ending in "*" is multiplied by the gradient
        scale the estimators undo (scikit-learn's loss is half fastnn's MSE).
    """

    name: str
    code: int
    states: tuple[str, ...] = ()
    hyper: dict[str, str] = field(default_factory=dict)
    scale_free: bool = False
    estimator: dict[str, str] = field(default_factory=dict)


OPTIMIZERS: tuple[Optimizer, ...] = (
    Optimizer("sgd", 0),
    Optimizer(
        "momentum",
        1,
        ("velocity",),
        {"h0": "momentum", "h1": "dampening"},
        estimator={"momentum": "momentum"},
    ),
    Optimizer(
        "nesterov",
        2,
        ("velocity",),
        {"h0": "momentum", "h1": "dampening"},
        estimator={"momentum": "momentum"},
    ),
    Optimizer(
        "adagrad",
        3,
        ("sum_sq",),
        {"eps": "eps", "eps_inside_sqrt": "eps_inside_sqrt"},
        scale_free=True,
        estimator={"eps": "epsilon*"},
    ),
    Optimizer(
        "rmsprop",
        4,
        ("sq_avg",),
        {"h0": "rho", "eps": "eps", "eps_inside_sqrt": "eps_inside_sqrt"},
        scale_free=True,
        estimator={"eps": "epsilon*"},
    ),
    Optimizer(
        "adam",
        5,
        ("m", "v"),
        {"h0": "beta1", "h1": "beta2", "eps": "eps"},
        scale_free=True,
        estimator={"beta1": "beta_1", "beta2": "beta_2", "eps": "epsilon*"},
    ),
    Optimizer(
        "adamw",
        6,
        ("m", "v"),
        {"h0": "beta1", "h1": "beta2", "eps": "eps"},
        scale_free=True,
        estimator={
            "beta1": "beta_1",
            "beta2": "beta_2",
            "eps": "epsilon*",
            "weight_decay": "alpha",
        },
    ),
)

HYPER_SLOTS = ("h0", "h1", "eps", "eps_inside_sqrt", "weight_decay", "clip_norm")


def _by_name(table, what):
    out = {row.name: row for row in table}
    codes = [row.code for row in table]
    if codes != list(range(len(table))) or len(out) != len(table):
        raise AssertionError(f"the {what} table must number its rows 0, 1, 2... by name")
    return out


_ACTIVATIONS = _by_name(ACTIVATIONS, "activation")
_by_name(LOSSES, "loss")
_by_name(OPTIMIZERS, "optimizer")


def activation(name: str) -> Activation:
    """The row of activation ``name``; ValueError naming the known ones otherwise."""
    row = _ACTIVATIONS.get(name) if isinstance(name, str) else None
    if row is None:
        raise ValueError(f"activation must be one of {list(_ACTIVATIONS)}, got {name!r}")
    return row


def activation_codes() -> dict[str, int]:
    """Name -> code of every activation, in code order."""
    return {a.name: a.code for a in ACTIVATIONS}


# --- the codes for the compiled kernels ------------------------------------------------

_HEADER = "Generated by setup.py from src/fastnn/registry.py: edit the table there."


def _enums():
    return (
        ("ActivationCode", "", ACTIVATIONS),
        ("LossCode", "LOSS_", LOSSES),
        ("OptimizerCode", "OPT_", OPTIMIZERS),
    )


def cython_codes() -> str:
    """The text of ``_kernels/codes.pxi``: one Cython enum per table, and its size."""
    lines = [f"# {_HEADER}", ""]
    for enum, prefix, table in _enums():
        lines.append(f"cdef enum {enum}:")
        lines += [f"    {prefix}{row.name.upper()} = {row.code}" for row in table]
        lines.append("")
    lines.append("cdef enum:")
    lines.append(f"    N_ACTIVATIONS = {len(ACTIVATIONS)}")
    lines.append(f"    N_LOSSES = {len(LOSSES)}")
    lines.append(f"    N_OPTIMIZERS = {len(OPTIMIZERS)}")
    return "\n".join(lines) + "\n"


def c_codes() -> str:
    """The text of ``_kernels/fastnn_codes.h``: the activation codes as C macros."""
    lines = [f"/* {_HEADER} */", "#ifndef FASTNN_CODES_H", "#define FASTNN_CODES_H"]
    lines += [f"#define FNN_{a.name.upper()} {a.code}" for a in ACTIVATIONS]
    lines.append("#endif")
    return "\n".join(lines) + "\n"
