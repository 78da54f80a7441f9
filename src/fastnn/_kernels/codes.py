"""Integer codes the compiled kernels use for activation functions.

The public API names activations by string; the kernels branch on these codes.
``activations_cython.pxd`` declares the same values as a C enum (a test checks it).
"""

IDENTITY = 0
STEP = 1
SIGMOID = 2
TANH = 3
RELU = 4
LEAKY_RELU = 5
ELU = 6
SOFTMAX = 7

ACTIVATION_CODES: dict[str, int] = {
    "identity": IDENTITY,
    "step": STEP,
    "sigmoid": SIGMOID,
    "tanh": TANH,
    "relu": RELU,
    "leaky_relu": LEAKY_RELU,
    "elu": ELU,
    "softmax": SOFTMAX,
}

# The default alpha of the activations that take one (docs/spec.md §3); ignored by the
# others.
DEFAULT_ALPHA: dict[str, float] = {"leaky_relu": 0.01, "elu": 1.0}

# Losses of the whole-epoch training kernel (``train_epoch``).
LOSS_MSE = 0
LOSS_BINARY_CROSS_ENTROPY = 1
LOSS_CROSS_ENTROPY = 2  # float targets (one-hot or probabilities), (m, k)
LOSS_SPARSE_CROSS_ENTROPY = 3  # int64 class indices, (m,)

# Optimizers of the whole-epoch training kernel; ``hyper`` holds their settings as
# [h0, h1, eps, eps_inside_sqrt, weight_decay, clip_norm]:
#   momentum, nesterov: h0 = momentum, h1 = dampening;  rmsprop: h0 = rho;
#   adam, adamw: h0 = beta1, h1 = beta2.  clip_norm <= 0 means no clipping.
OPT_SGD = 0
OPT_MOMENTUM = 1
OPT_NESTEROV = 2
OPT_ADAGRAD = 3
OPT_RMSPROP = 4
OPT_ADAM = 5
OPT_ADAMW = 6

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
