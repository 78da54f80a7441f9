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
§3, and its edge values in ``tests/kernels/test_activations.py``. Adding an optimizer:
one :class:`Optimizer` row, its ``<name>_step`` and its branch of ``optimizer_step`` in
each backend, docs/spec.md §5, and its PyTorch twin in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "Activation",
    "Loss",
    "Optimizer",
    "Hyper",
    "ACTIVATIONS",
    "LOSSES",
    "OPTIMIZERS",
    "activation",
    "activation_codes",
    "optimizer",
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


# The kernels' ``hyper`` vector, one float64 per slot: the optimizer's own
# hyperparameters (each row says which of its hyperparameters fills h0, h1, eps and
# eps_inside_sqrt), then the two every optimizer has. The kernels read a slot at its
# index here (``codes.HYPER_<SLOT>``, ``HYPER_<SLOT>`` in codes.pxi).
HYPER_SLOTS = ("h0", "h1", "eps", "eps_inside_sqrt", "weight_decay", "clip_norm")


@dataclass(frozen=True)
class Hyper:
    """One hyperparameter of an optimizer: constructor argument, attribute, kernel
    argument (in the row's order) and slot of the kernels' ``hyper`` vector.

    Attributes
    ----------
    name : str
        The argument and attribute name (``beta1``).
    slot : str
        Its slot in :data:`HYPER_SLOTS` (h0, h1, eps or eps_inside_sqrt).
    default : float or bool
        The constructor's default; a bool default makes it a flag (0.0 or 1.0 in
        ``hyper``).
    low, high : float or None
        The valid range (None: unbounded); ``low_open`` / ``high_open`` exclude the
        bound itself.
    """

    name: str
    slot: str
    default: float | bool
    low: float | None = 0.0
    high: float | None = None
    low_open: bool = False
    high_open: bool = False


@dataclass(frozen=True)
class Optimizer:
    """One optimizer of the fused update kernels.

    Attributes
    ----------
    name, code : str, int
        The public name (``get_optimizer``, the estimators' ``optimizer=``) and the
        kernels' code.
    cls : str
        The name of its class in ``fastnn.optim`` (and ``fastnn``).
    formula : str
        The update in words (the class's and the checked method's docstrings;
        docs/spec.md §5 is the contract).
    states : tuple of str
        The per-parameter state buffers, in the order the kernels take them.
    hypers : tuple of Hyper
        Its own hyperparameters, in the order of the constructor and of the
        ``<name>_step`` kernels (after ``lr``).
    lr, weight_decay : float
        The defaults of the learning rate and of the weight decay.
    step : bool
        The kernels take the step count t >= 1 (bias corrections), before ``lr``.
    decoupled : bool
        ``weight_decay`` is decoupled (AdamW: theta -= lr wd theta) rather than L2.
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
    cls: str
    formula: str
    states: tuple[str, ...] = ()
    hypers: tuple[Hyper, ...] = ()
    lr: float = 0.01
    weight_decay: float = 0.0
    step: bool = False
    decoupled: bool = False
    scale_free: bool = False
    estimator: dict[str, str] = field(default_factory=dict)

    @property
    def hyper(self) -> dict[str, str]:
        """Slot -> hyperparameter name, for the slots this optimizer fills."""
        return {h.slot: h.name for h in self.hypers}

    @property
    def kernel(self) -> str:
        """The name of its update kernel in every backend (and of Backend's checked
        method)."""
        return f"{self.name}_step"


_MOMENTUM = Hyper("momentum", "h0", 0.9, 0.0, 1.0, high_open=True)
_DAMPENING = Hyper("dampening", "h1", 0.0, 0.0, 1.0)
_RHO = Hyper("rho", "h0", 0.9, 0.0, 1.0, high_open=True)
_BETA1 = Hyper("beta1", "h0", 0.9, 0.0, 1.0, high_open=True)
_BETA2 = Hyper("beta2", "h1", 0.999, 0.0, 1.0, high_open=True)
_INSIDE = Hyper("eps_inside_sqrt", "eps_inside_sqrt", False)


def _eps(default):
    return Hyper("eps", "eps", default, 0.0, low_open=True)


_ADAM_ESTIMATOR = {"beta1": "beta_1", "beta2": "beta_2", "eps": "epsilon*"}

OPTIMIZERS: tuple[Optimizer, ...] = (
    Optimizer("sgd", 0, "SGD", "theta -= lr g"),
    Optimizer(
        "momentum",
        1,
        "Momentum",
        "v = momentum v + (1 - dampening) g; theta -= lr v",
        ("velocity",),
        (_MOMENTUM, _DAMPENING),
        estimator={"momentum": "momentum"},
    ),
    Optimizer(
        "nesterov",
        2,
        "Nesterov",
        "v = momentum v + (1 - dampening) g; theta -= lr (g + momentum v)",
        ("velocity",),
        (_MOMENTUM, _DAMPENING),
        estimator={"momentum": "momentum"},
    ),
    Optimizer(
        "adagrad",
        3,
        "Adagrad",
        "G += g^2; theta -= lr g / (sqrt(G) + eps), or lr g / sqrt(G + eps)",
        ("sum_sq",),
        (_eps(1e-10), _INSIDE),
        scale_free=True,
        estimator={"eps": "epsilon*"},
    ),
    Optimizer(
        "rmsprop",
        4,
        "RMSProp",
        "s = rho s + (1 - rho) g^2; theta -= lr g / (sqrt(s) + eps), or lr g / sqrt(s + eps)",
        ("sq_avg",),
        (_RHO, _eps(1e-8), _INSIDE),
        scale_free=True,
        estimator={"eps": "epsilon*"},
    ),
    Optimizer(
        "adam",
        5,
        "Adam",
        "m = beta1 m + (1 - beta1) g; v = beta2 v + (1 - beta2) g^2; "
        "theta -= lr m_hat / (sqrt(v_hat) + eps), m_hat = m / (1 - beta1^t), "
        "v_hat = v / (1 - beta2^t)",
        ("m", "v"),
        (_BETA1, _BETA2, _eps(1e-8)),
        lr=1e-3,
        step=True,
        scale_free=True,
        estimator=_ADAM_ESTIMATOR,
    ),
    Optimizer(
        "adamw",
        6,
        "AdamW",
        "theta -= lr weight_decay theta (decoupled decay), then the Adam update",
        ("m", "v"),
        (_BETA1, _BETA2, _eps(1e-8)),
        lr=1e-3,
        weight_decay=0.01,
        step=True,
        decoupled=True,
        scale_free=True,
        estimator={**_ADAM_ESTIMATOR, "weight_decay": "alpha"},
    ),
    Optimizer(
        "adamax",
        7,
        "Adamax",
        "m = beta1 m + (1 - beta1) g; u = max(beta2 u, abs(g) + eps); "
        "theta -= (lr / (1 - beta1^t)) m / u (Adam in the infinity norm)",
        ("m", "u"),
        (_BETA1, _BETA2, _eps(1e-8)),
        lr=2e-3,
        step=True,
        scale_free=True,
        estimator=_ADAM_ESTIMATOR,
    ),
)


def _by_name(table, what):
    out = {row.name: row for row in table}
    codes = [row.code for row in table]
    if codes != list(range(len(table))) or len(out) != len(table):
        raise AssertionError(f"the {what} table must number its rows 0, 1, 2... by name")
    return out


_ACTIVATIONS = _by_name(ACTIVATIONS, "activation")
_by_name(LOSSES, "loss")
_OPTIMIZERS = _by_name(OPTIMIZERS, "optimizer")
for _row in OPTIMIZERS:
    if len(_row.states) > 2 or {h.slot for h in _row.hypers} - set(HYPER_SLOTS[:4]):
        raise AssertionError(f"optimizer {_row.name}: at most 2 states, slots h0..eps_inside_sqrt")
del _row


def activation(name: str) -> Activation:
    """The row of activation ``name``; ValueError naming the known ones otherwise."""
    row = _ACTIVATIONS.get(name) if isinstance(name, str) else None
    if row is None:
        raise ValueError(f"activation must be one of {list(_ACTIVATIONS)}, got {name!r}")
    return row


def optimizer(name: str) -> Optimizer:
    """The row of optimizer ``name``; ValueError naming the known ones otherwise."""
    row = _OPTIMIZERS.get(name) if isinstance(name, str) else None
    if row is None:
        raise ValueError(f"optimizer must be one of {list(_OPTIMIZERS)}, got {name!r}")
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
    lines.append("cdef enum:  # the slots of hyper (indices)")
    lines += [f"    HYPER_{slot.upper()} = {i}" for i, slot in enumerate(HYPER_SLOTS)]
    lines.append("")
    lines.append("cdef enum:")
    lines.append(f"    N_ACTIVATIONS = {len(ACTIVATIONS)}")
    lines.append(f"    N_LOSSES = {len(LOSSES)}")
    lines.append(f"    N_OPTIMIZERS = {len(OPTIMIZERS)}")
    lines.append(f"    N_HYPER = {len(HYPER_SLOTS)}")
    return "\n".join(lines) + "\n"


def c_codes() -> str:
    """The text of ``_kernels/fastnn_codes.h``: the activation codes as C macros."""
    lines = [f"/* {_HEADER} */", "#ifndef FASTNN_CODES_H", "#define FASTNN_CODES_H"]
    lines += [f"#define FNN_{a.name.upper()} {a.code}" for a in ACTIVATIONS]
    lines.append("#endif")
    return "\n".join(lines) + "\n"
