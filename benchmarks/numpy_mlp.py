"""A hand-written NumPy MLP: the "what a user writes from the textbook" peer.

Forward, backward and Adam exactly as a course writes them (the textbook two-layer class,
generalised to any depth): ``@`` for products (NumPy's own BLAS), fresh arrays for
every intermediate, one Adam update per parameter array. It is a peer for
compare.py, not part of fastnn, and deliberately not optimised.
"""

from __future__ import annotations

import numpy as np


class TextbookMLP:
    """ReLU MLP with a softmax cross-entropy head, trained by Adam.

    Parameters
    ----------
    sizes : layer widths ``(n_in, hidden..., n_out)``.
    dtype : float32 or float64; every array stays in it.
    """

    def __init__(self, sizes, dtype=np.float32, lr=1e-3, beta1=0.9, beta2=0.999,
                 eps=1e-8, seed=0):
        rng = np.random.default_rng(seed)
        self.dtype = np.dtype(dtype)
        self.W = [(rng.standard_normal((i, o)) * np.sqrt(2.0 / i)).astype(dtype)
                  for i, o in zip(sizes[:-1], sizes[1:])]
        self.b = [np.zeros(o, dtype) for o in sizes[1:]]
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.t = 0
        self.m = [np.zeros_like(p) for p in self.W + self.b]
        self.v = [np.zeros_like(p) for p in self.W + self.b]

    def forward(self, X):
        """Logits of X (m, n_in); keeps each layer's input and pre-activation."""
        self.inputs, self.zs = [], []
        a = X
        for k, (W, b) in enumerate(zip(self.W, self.b)):
            self.inputs.append(a)
            z = a @ W + b
            self.zs.append(z)
            a = np.maximum(z, 0) if k < len(self.W) - 1 else z
        return a

    def loss(self, logits, Y):
        """Mean cross-entropy against one-hot Y; keeps the softmax probabilities."""
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        self.probs = e / e.sum(axis=1, keepdims=True)
        return -np.sum(Y * np.log(self.probs + 1e-12)) / Y.shape[0]

    def backward(self, Y):
        """Gradients of the mean cross-entropy w.r.t. every W and b."""
        dz = (self.probs - Y) / Y.shape[0]
        dW, db = [None] * len(self.W), [None] * len(self.W)
        for k in reversed(range(len(self.W))):
            dW[k] = self.inputs[k].T @ dz
            db[k] = dz.sum(axis=0)
            if k > 0:
                dz = (dz @ self.W[k].T) * (self.zs[k - 1] > 0)
        self.grads = dW + db

    def step(self):
        """One Adam update of every parameter array, bias-corrected."""
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        for k, (p, g) in enumerate(zip(self.W + self.b, self.grads)):
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * g ** 2
            m_hat = self.m[k] / (1 - b1 ** self.t)
            v_hat = self.v[k] / (1 - b2 ** self.t)
            p -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)

    def train_step(self, X, Y):
        """Forward, loss, backward and Adam on one batch; returns the loss."""
        loss = self.loss(self.forward(X), Y)
        self.backward(Y)
        self.step()
        return loss


class TextbookAdam:
    """Adam on one flat parameter buffer, written as the textbook writes it."""

    def __init__(self, param, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        self.p = param
        self.m = np.zeros_like(param)
        self.v = np.zeros_like(param)
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.t = 0

    def step(self, g):
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        self.m = b1 * self.m + (1 - b1) * g
        self.v = b2 * self.v + (1 - b2) * g ** 2
        m_hat = self.m / (1 - b1 ** self.t)
        v_hat = self.v / (1 - b2 ** self.t)
        self.p -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


class TextbookMomentum:
    """SGD with heavy-ball momentum on one flat buffer: v = mu v + g; p -= lr v."""

    def __init__(self, param, lr=1e-3, momentum=0.9):
        self.p = param
        self.v = np.zeros_like(param)
        self.lr, self.mu = lr, momentum

    def step(self, g):
        self.v = self.mu * self.v + g
        self.p -= self.lr * self.v
