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

# SPEC's default alpha for the activations that take one; ignored by the others.
DEFAULT_ALPHA: dict[str, float] = {"leaky_relu": 0.01, "elu": 1.0}
