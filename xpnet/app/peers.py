"""The training steps the benchmarks time (``xpnet bench``): xpnet's and its peers'.

:class:`XpnetStep` is xpnet's step through its public API. Each peer runs the same
training step (forward, softmax cross-entropy, backward, SGD with momentum) on the same
arrays, so that timings compare like with like:

* :class:`NumpyStep`, a minimal hand-written NumPy step: the floor for any NumPy code;
* :class:`TorchStep`, PyTorch eager (``torch.nn`` + ``torch.optim.SGD``) on the CPU, or on
  a GPU, eager or compiled (``torch.compile(mode="reduce-overhead")``);
* :class:`SklearnStep`, scikit-learn's ``MLPClassifier.partial_fit`` (no BatchNorm);
* :class:`JaxStep`, a hand-written JAX step differentiated by ``jax.grad`` and compiled by
  ``jax.jit`` as one XLA computation: the floor for any JAX code.

They live here because this package is the only one that knows concrete libraries.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np

from .. import backend
from ..compiled import compiled_step
from ..executors import make_step
from ..models import MLP
from ..nn import CrossEntropyLoss
from ..optim import SGD

__all__ = ["GemmFloor", "JaxStep", "NumpyStep", "SklearnStep", "TorchStep", "XpnetStep"]


class XpnetStep:
    """One training step of xpnet through its public API: MLP, CrossEntropyLoss, SGD.

    Parameters
    ----------
    sizes : list of int
        Layer widths.
    X : numpy.ndarray
        The fixed batch of features, float32 or float64.
    y : numpy.ndarray
        Its class ids.
    batchnorm : bool
        BatchNorm1d before each hidden activation.
    lr, momentum : float
        SGD's hyperparameters.
    seed : int
        Seeds the initial parameters.
    xp : str
        The backend xpnet runs on.
    compile : bool
        Run the step as one compiled program (:func:`xpnet.compiled.compiled_step`, JAX).
    """

    name = "xpnet"

    def __init__(
        self, sizes, X, y, *, batchnorm=False, lr=0.01, momentum=0.9, seed=0, xp="numpy",
        compile=False,
    ):  # fmt: skip
        xp = backend.get(xp)
        self.model = MLP(
            sizes, batchnorm=batchnorm, xp=xp, seed=seed, dtype=backend.dtype_name(X.dtype)
        )
        self.loss = CrossEntropyLoss()
        self.opt = SGD(self.model, lr=lr, momentum=momentum)
        self.step = make_step(self.model, self.loss, self.opt)
        # as the other peers' steps: no count of right predictions, no gradients kept
        self._compiled = compiled_step(self.step, count=False, gradients=False) if compile else None
        self.xp = xp
        self.X, self.y = xp.asarray(X), xp.asarray(y)

    def __call__(self):
        loss = self.run(self.X, self.y)[0]
        backend.synchronize(loss)  # a library that returns before it computes (JAX)
        return loss

    def run(self, X, y):
        """One step on the batch ``X``, ``y`` as ``fit`` takes it (labels checked once).

        Parameters
        ----------
        X, y : array
            The batch, on the model's backend.

        Returns
        -------
        tuple of array
            The loss, 0-d.
        """
        if self._compiled is not None:
            return self._compiled(X, y)[:1]
        return (self.step(X, y)[1],)


def _init(sizes, seed, dtype):
    """Linear parameters like xpnet's: U(±1/sqrt(in)) from one seeded generator."""
    rng = np.random.default_rng(seed)
    params = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        bound = 1.0 / np.sqrt(fan_in)
        W = rng.uniform(-bound, bound, (fan_out, fan_in)).astype(dtype)
        b = rng.uniform(-bound, bound, (fan_out, 1)).astype(dtype)
        params.append((W, b[:, 0].copy()))
    return params


class NumpyStep:
    """A hand-written NumPy training step with the same math as xpnet (the floor).

    Parameters
    ----------
    sizes : list of int
        Layer widths.
    X : numpy.ndarray
        The fixed batch of features.
    y : numpy.ndarray
        Its class ids.
    batchnorm : bool
        BatchNorm1d before each hidden activation.
    lr, momentum : float
        SGD's hyperparameters.
    seed : int
        Seeds the initial parameters.
    """

    name = "numpy (hand)"

    def __init__(self, sizes, X, y, *, batchnorm=False, lr=0.01, momentum=0.9, seed=0):
        dtype = X.dtype
        self.X = X
        self.Y = np.eye(sizes[-1], dtype=dtype)[y]  # one-hot once
        self.lr, self.mu = lr, momentum
        self.params = [[W, b] for W, b in _init(sizes, seed, dtype)]
        self.bn = (
            [[np.ones(c, dtype), np.zeros(c, dtype)] for c in sizes[1:-1]] if batchnorm else []
        )
        self.running = [[np.zeros(c, dtype), np.ones(c, dtype)] for c in sizes[1:-1]]
        self.velocity = [np.zeros_like(p) for group in self.params + self.bn for p in group]

    def __call__(self):
        X, Y = self.X, self.Y
        n = X.shape[0]
        last = len(self.params) - 1
        acts, caches = [X], []
        A = X
        for i, (W, b) in enumerate(self.params):
            Z = A @ W.T + b
            if i < last:
                if self.bn:
                    gamma, beta = self.bn[i]
                    mean = Z.mean(axis=0)
                    D = Z - mean
                    var = (D * D).mean(axis=0)
                    inv = 1.0 / np.sqrt(var + 1e-8)
                    NZ = D * inv
                    caches.append((NZ, inv))
                    rm, rv = self.running[i]
                    rm *= 0.9
                    rm += 0.1 * mean
                    rv *= 0.9
                    rv += 0.1 * var
                    Z = gamma * NZ + beta
                A = np.maximum(Z, 0)
                acts.append(A)
        shifted = Z - Z.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        s = e.sum(axis=1, keepdims=True)
        loss = -(Y * (shifted - np.log(s))).sum() / n
        dZ = (e / s - Y) / n
        grads = [None] * len(self.params)
        bn_grads = [None] * len(self.bn)
        for i in range(last, -1, -1):
            W = self.params[i][0]
            grads[i] = (dZ.T @ acts[i], dZ.sum(axis=0))
            if i == 0:
                break
            dA = dZ @ W
            dZ = dA * (acts[i] > 0)
            if self.bn:
                NZ, inv = caches[i - 1]
                gamma = self.bn[i - 1][0]
                d_gamma, d_beta = (dZ * NZ).sum(axis=0), dZ.sum(axis=0)
                bn_grads[i - 1] = (d_gamma, d_beta)
                dZ = (dZ - d_beta / n - NZ * (d_gamma / n)) * (gamma * inv)
        flat = [g for pair in grads + bn_grads for g in pair]
        params = [p for group in self.params + self.bn for p in group]
        for p, g, v in zip(params, flat, self.velocity, strict=True):
            v *= self.mu
            v += g
            p -= self.lr * v
        return loss


class TorchStep:
    """PyTorch's step: ``torch.nn`` layers, ``cross_entropy``, ``optim.SGD``, eager or compiled.

    Parameters
    ----------
    sizes : list of int
        Layer widths.
    X : numpy.ndarray
        The fixed batch of features.
    y : numpy.ndarray
        Its class ids.
    batchnorm : bool
        BatchNorm1d before each hidden activation.
    lr, momentum : float
        SGD's hyperparameters.
    seed : int
        Seeds the initial parameters.
    threads : int, optional
        PyTorch's intra-op threads (default: PyTorch's own setting).
    device : str
        Where the model and the batch live (``"cuda"`` for the GPU benchmark).
    compile : bool
        Compile the step as a GPU user would: the model with
        ``torch.compile(mode="reduce-overhead")`` (Inductor's fused kernels, replayed as
        CUDA graphs) and the optimizer's update with ``torch.compile``. The first call
        compiles; PyTorch's compiled code of earlier steps is reset first, so that each
        size compiles afresh rather than exhausting PyTorch's recompilation limit.
    """

    name = "pytorch eager"

    def __init__(
        self,
        sizes,
        X,
        y,
        *,
        batchnorm=False,
        lr=0.01,
        momentum=0.9,
        seed=0,
        threads=None,
        device="cpu",
        compile=False,
    ):
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        self.torch = torch
        layers = []
        dtype = torch.from_numpy(X[:0]).dtype
        for i, (W, b) in enumerate(_init(sizes, seed, X.dtype)):
            lin = torch.nn.Linear(W.shape[1], W.shape[0], dtype=dtype)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(W))
                lin.bias.copy_(torch.from_numpy(b))
            layers.append(lin)
            if i < len(sizes) - 2:
                if batchnorm:
                    layers.append(
                        torch.nn.BatchNorm1d(W.shape[0], eps=1e-8, momentum=0.1, dtype=dtype)
                    )
                layers.append(torch.nn.ReLU())
        self.model = torch.nn.Sequential(*layers).to(device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=momentum)
        self.X = torch.from_numpy(X).to(device)
        self.y = torch.from_numpy(y.astype(np.int64)).to(device)
        self.compiled = compile
        self._forward, self._update = self.model, self.opt.step
        if compile:
            torch.compiler.reset()
            self._forward = torch.compile(self.model, mode="reduce-overhead")
            self._update = torch.compile(self.opt.step)

    def __call__(self):
        if self.compiled:  # a new iteration: the graphs' earlier outputs may be reused
            self.torch.compiler.cudagraph_mark_step_begin()
        self.opt.zero_grad(set_to_none=True)
        loss = self.torch.nn.functional.cross_entropy(self._forward(self.X), self.y)
        loss.backward()
        self._update()
        return loss


class JaxStep:
    """A hand-written JAX step under one ``jax.jit``: ``jax.grad``, SGD, state donated.

    The loss is written once and differentiated by JAX; the update is SGD with momentum;
    the whole step is one XLA computation (the floor for any JAX code).

    Parameters
    ----------
    sizes : list of int
        Layer widths.
    X : numpy.ndarray
        The fixed batch of features.
    y : numpy.ndarray
        Its class ids.
    batchnorm : bool
        BatchNorm1d before each hidden activation (batch statistics, running ones kept).
    lr, momentum : float
        SGD's hyperparameters.
    seed : int
        Seeds the initial parameters.
    """

    name = "jax.grad + jit"

    def __init__(self, sizes, X, y, *, batchnorm=False, lr=0.01, momentum=0.9, seed=0):
        import jax
        import jax.numpy as jnp

        params = [(jnp.asarray(W), jnp.asarray(b)) for W, b in _init(sizes, seed, X.dtype)]
        hidden = sizes[1:-1]
        bn = [(jnp.ones(c, X.dtype), jnp.zeros(c, X.dtype)) for c in hidden] if batchnorm else []
        running = [(jnp.zeros(c, X.dtype), jnp.ones(c, X.dtype)) for c in hidden]
        velocity = jax.tree.map(jnp.zeros_like, (params, bn))
        self.state = ((params, bn), velocity, running)
        self.X, self.Y = jnp.asarray(X), jnp.asarray(np.eye(sizes[-1], dtype=X.dtype)[y])

        self._step = jax.jit(functools.partial(_jax_step, lr, momentum), donate_argnums=(0,))

    def __call__(self):
        self.state, loss = self._step(self.state, self.X, self.Y)
        return loss.block_until_ready()


def _jax_loss(trained, X, Y):
    """The hand-written JAX step's loss, and the BatchNorm batch statistics it used."""
    import jax
    import jax.numpy as jnp

    params, bn = trained
    A, stats = X, []
    for i, (W, b) in enumerate(params):
        Z = A @ W.T + b
        if i == len(params) - 1:
            break
        if bn:
            mean, var = Z.mean(axis=0), Z.var(axis=0)
            stats.append((mean, var))
            Z = bn[i][0] * (Z - mean) / jnp.sqrt(var + 1e-8) + bn[i][1]
        A = jnp.maximum(Z, 0)
    log_p = jax.nn.log_softmax(Z, axis=1)
    return -(Y * log_p).sum() / X.shape[0], stats


def _jax_step(lr, momentum, state, X, Y):
    """One hand-written JAX step: jax.grad of the loss, SGD with momentum, running stats."""
    import jax

    trained, velocity, running = state
    (loss, stats), grads = jax.value_and_grad(_jax_loss, has_aux=True)(trained, X, Y)
    velocity = jax.tree.map(lambda v, g: momentum * v + g, velocity, grads)
    trained = jax.tree.map(lambda p, v: p - lr * v, trained, velocity)
    running = [
        (0.9 * rm + 0.1 * m, 0.9 * rv + 0.1 * v)
        for (rm, rv), (m, v) in zip(running, stats, strict=False)
    ] + running[len(stats) :]
    return (trained, velocity, running), loss


def _classifier(hidden, *, lr, momentum, batch_size, seed, **options):
    """scikit-learn's MLPClassifier set up like xpnet's SGD: ReLU, plain momentum, no L2."""
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(
        hidden_layer_sizes=tuple(hidden),
        activation="relu",
        solver="sgd",
        learning_rate_init=lr,
        momentum=momentum,
        nesterovs_momentum=False,
        alpha=0.0,
        batch_size=batch_size,
        random_state=seed,
        **options,
    )


class SklearnStep:
    """The scikit-learn step: ``MLPClassifier.partial_fit`` on one batch.

    SGD with momentum and no L2; scikit-learn has no BatchNorm.

    Parameters
    ----------
    sizes : list of int
        Layer widths.
    X : numpy.ndarray
        The fixed batch of features.
    y : numpy.ndarray
        Its class ids.
    batchnorm : bool
        BatchNorm1d before each hidden activation.
    lr, momentum : float
        SGD's hyperparameters.
    seed : int
        Seeds the initial parameters.
    """

    name = "scikit-learn"

    def __init__(self, sizes, X, y, *, batchnorm=False, lr=0.01, momentum=0.9, seed=0):
        if batchnorm:
            raise ValueError("scikit-learn's MLPClassifier has no BatchNorm")
        self.clf = _classifier(
            sizes[1:-1], lr=lr, momentum=momentum, batch_size=X.shape[0], seed=seed, shuffle=False
        )
        self.X, self.y = X, y
        self.classes = np.arange(sizes[-1])
        self.clf.partial_fit(X, y, classes=self.classes)

    def __call__(self):
        self.clf.partial_fit(self.X, self.y)


def sklearn_fit(X, y, *, hidden, epochs, batch_size, lr, momentum, seed=0):
    """Train scikit-learn's MLPClassifier like ``xpnet train`` trains.

    SGD with momentum, no L2 penalty, a fixed number of epochs.

    Parameters
    ----------
    X : numpy.ndarray
        Training features.
    y : numpy.ndarray
        Their class ids.
    hidden : tuple of int
        Hidden widths.
    epochs, batch_size : int
        As in ``xpnet train``.
    lr, momentum : float
        As in ``xpnet train``.
    seed : int
        Seeds the classifier.

    Returns
    -------
    seconds : float
        Time spent in ``fit``.
    predict : callable
        The fitted classifier's ``predict``.
    """
    import time
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    clf = _classifier(
        hidden,
        lr=lr,
        momentum=momentum,
        batch_size=batch_size,
        seed=seed,
        max_iter=epochs,
        n_iter_no_change=epochs + 1,
        tol=0.0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        clf.fit(X, y)
        seconds = time.perf_counter() - start
    return seconds, clf.predict


class GemmFloor:
    """The matrix products of a training step and nothing else: the floor for any step.

    Per Linear layer, the forward product ``A Wᵀ`` and the backward products ``dZᵀ A``
    (the weight gradient) and ``dZ W`` (the input gradient, skipped for the first layer,
    as training skips it), on arrays of one library and device.

    Parameters
    ----------
    sizes : list of int
        Layer widths.
    batch : int
        Rows of the batch.
    xp : namespace
        The Array API namespace to compute with.
    device : optional
        Its device.
    dtype : str
        ``"float32"`` or ``"float64"``.
    seed : int
        Seeds the random operands.
    matmul : callable, optional
        ``matmul(A, B, trans_a=False, trans_b=False)``: the products' routine (xpnet's own
        cuBLAS calls, :meth:`xpnet.backend.CupyFused.matmul`); default the library's ``@``.
    """

    name = "gemm floor"

    def __init__(self, sizes, batch, xp, *, device=None, dtype="float32", seed=0, matmul=None):
        rng = np.random.default_rng(seed)

        def _draw(*shape):
            return xp.asarray(rng.standard_normal(shape).astype(dtype), device=device)

        self.xp = xp
        self.acts = [_draw(batch, n) for n in sizes[:-1]]
        self.weights = [_draw(o, i) for i, o in itertools.pairwise(sizes)]
        self.grads = [_draw(batch, o) for o in sizes[1:]]
        self.matmul = matmul

    def __call__(self):
        if self.matmul is not None:
            return self._call_with(self.matmul)
        out = None
        for A, W in zip(self.acts, self.weights, strict=True):
            out = A @ W.T
        for i, (A, W, dZ) in enumerate(zip(self.acts, self.weights, self.grads, strict=True)):
            out = dZ.T @ A
            if i > 0:
                out = dZ @ W
        return out

    def _call_with(self, matmul):
        out = None
        for A, W in zip(self.acts, self.weights, strict=True):
            out = matmul(A, W, trans_b=True)
        for i, (A, W, dZ) in enumerate(zip(self.acts, self.weights, self.grads, strict=True)):
            out = matmul(dZ, A, trans_a=True)
            if i > 0:
                out = matmul(dZ, W)
        return out
