"""The fused-kernel executor: a model's training step as a plan of one-pass kernels.

Where the library has fused kernels (:func:`xpnet.backend.fused`: CuPy on a CUDA GPU),
:func:`xpnet.executors.make_step` returns a :class:`FusedPlan` instead of the plain
:class:`~xpnet.step.Step`. The plan is built from the model's chain of modules, layer by
layer ``Linear -> [BatchNorm1d] -> activation -> [Dropout]``, and runs the kernels over
the modules' own arrays: it reads their parameters and writes their caches and gradients
where their own code would, so that everything after a step (the optimizer, a checkpoint,
the module's ``backward`` called by hand) sees what the readable code leaves.

What the plan fuses, per layer (each kernel computes what the module's code computes;
``tests/test_fused.py`` compares them through the CPU emulation of the kernels, and the
GPU check on the device):

* a :class:`~xpnet.nn.Linear` layer's products on cuBLAS, its bias added in the pass that
  reads the product next (the activation's, or BatchNorm's), its bias gradient summed in
  the pass that writes the activation's gradient;
* :class:`~xpnet.nn.BatchNorm1d` in training: the statistics in one pass, the normalising
  pass applying the activation after it (neither ``Z + b`` nor ``BZ`` written out, so the
  layer's ``Z`` is None and its ``BZ`` too unless the activation keeps it), and its
  backward with the activation's in two passes;
* the activations Identity, ReLU, Sigmoid, Tanh and GELU, by their exact class (a
  subclass may compute something else: it runs its own code);
* :class:`~xpnet.nn.CrossEntropyLoss` of integer labels: the softmax, the loss and its
  gradient in one pass over the logits (no one-hot array: the loss's ``Y`` stays None,
  and the plan keeps the gradient);
* :class:`~xpnet.optim.SGD`'s update: one kernel per eight parameters on the optimizer's
  flat buffers, each gradient read where its layer wrote it.

A module the plan does not know (a subclass, a layer of one's own, the synchronised
BatchNorm of data-parallel runs, dropout) runs its own ``forward_unchecked`` and
``backward_unchecked`` in its place, and every other optimizer its own ``step``.
"""

from __future__ import annotations

from typing import Any

from ._typing import Array
from .errors import CallOrderError, XpnetValueError
from .nn import GELU, BatchNorm1d, CrossEntropyLoss, Identity, Linear, ReLU, Sigmoid, Tanh
from .optim import SGD
from .step import Step

__all__ = ["FUSED_ACTIVATIONS", "FusedPlan"]

#: The activations the kernels compute, by exact class (a subclass runs its own code).
FUSED_ACTIVATIONS = {
    Identity: "identity",
    ReLU: "relu",
    Sigmoid: "sigmoid",
    Tanh: "tanh",
    GELU: "gelu",
}


class FusedPlan(Step):
    """A :class:`~xpnet.step.Step` that runs a model's chain of modules as fused kernels.

    Built by :func:`xpnet.executors.make_step`; the phases are :class:`~xpnet.step.Step`'s.
    The plan is made once, from the modules the model holds, and made again when one of
    them is replaced (data-parallel runs swap their dropout layers in and out).

    Parameters
    ----------
    model : MLP
        The model.
    loss : Module
        Its loss.
    optimizer : Optimizer
        Its optimizer; :class:`~xpnet.optim.SGD` itself is moved to flat buffers here.
    ops : CupyFused
        The kernels (:func:`xpnet.backend.fused` of the model's library).
    """

    def __init__(self, model: Any, loss: Any, optimizer: Any, ops: Any) -> None:
        super().__init__(model, loss, optimizer)
        self.ops = ops
        self._fused_loss = type(loss) is CrossEntropyLoss
        self._fused_update = type(optimizer) is SGD
        if self._fused_update:
            optimizer.flat_buffers()  # now, not inside a CUDA graph's capture
        self._chain: tuple = ()
        self._layers: list[tuple] = []
        self._gradient: Array = None  # the loss's, where its kernel computed it
        self._out: Array = None

    def _modules(self):
        m = self.model
        return (*m.standardize_layers, *m.layers, *m.bn_layers, *m.f, *m.dropout_layers)

    def _build(self, chain):
        """One entry per layer: its modules, and what the kernels take of them."""
        m = self.model
        n_bn, n_drop = len(m.bn_layers), len(m.dropout_layers)
        self._layers = [
            (
                linear,
                type(linear) is Linear,
                m.bn_layers[i] if i < n_bn else None,
                i < n_bn and type(m.bn_layers[i]) is BatchNorm1d,
                f,
                FUSED_ACTIVATIONS.get(type(f)),
                m.dropout_layers[i] if i < n_drop else None,
            )
            for i, (linear, f) in enumerate(zip(m.layers, m.f, strict=True))
        ]
        self._chain = chain

    def forward(self, X: Array, y: Array) -> tuple[Array, Array]:
        """The model's output and the loss, as :meth:`Step.forward <xpnet.step.Step.forward>`.

        Parameters
        ----------
        X : array
            ``(N, F)`` features on the model's library and device.
        y : array
            The targets the loss takes.

        Returns
        -------
        out : array
            The model's output.
        loss : array
            0-d, on the device.
        """
        model = self.model
        chain = self._modules()
        if chain != self._chain:
            self._build(chain)
        A, xp = model.checked_input(X)
        if model.bn_layers and model.training:
            model.bn_layers[0].check_batch(A.shape[0])
        for scaling in model.standardize_layers:
            A = scaling.forward_unchecked(A, xp)
        for entry in self._layers:
            A = self._layer_forward(entry, A, xp)
        self._out = A
        if self._fused_loss and y.ndim == 1:
            loss = self.loss
            L, loss.softmax, self._gradient = self.ops.cross_entropy(A, y)
            loss.A, loss.Y = A, None
            return A, L
        self._gradient = None
        return A, self._loss_forward(A, y)

    def _layer_forward(self, entry, A, xp):
        linear, own_linear, bn, own_bn, f, kind, dropout = entry
        ops = self.ops
        if own_linear:  # the product; the bias is added by the next pass that reads it
            linear.A = A
            Z, b = ops.matmul(A, linear.W, trans_b=True), linear.b
        else:
            Z, b = linear.forward_unchecked(A, xp), None
        if bn is not None:
            if own_bn and bn.training:
                out = ops.batchnorm_forward(
                    Z, bn.BW, bn.Bb, bn.running_M, bn.running_V, bn.alpha, bn.eps,
                    bias=b, activation=kind,
                )  # fmt: skip
                bn._evaluated, bn.Z = False, None if b is not None else Z
                bn.M, bn.V, bn._inv_std, bn.NZ = out["M"], out["V"], out["inv_std"], out["NZ"]
                if kind is not None:  # the activation applied in the same pass
                    bn.BZ = out.get("Z")
                    A = _adopt(f, out)
                    return A if dropout is None else dropout.forward_unchecked(A, xp)
                Z = bn.BZ = out["BZ"]
            else:
                Z = bn.forward_unchecked(Z if b is None else Z + b.T, xp)
            b = None
        if kind is None or (kind == "identity" and b is None):
            A = f.forward_unchecked(Z if b is None else Z + b.T, xp)
        else:
            A = _adopt(f, ops.bias_activation(Z, b, kind))
        return A if dropout is None else dropout.forward_unchecked(A, xp)

    def backward(self, scale: float | None = None, *, input_grad: bool = False) -> Array | None:
        """Set every parameter's gradient from the last :meth:`forward`.

        Parameters
        ----------
        scale : float, optional
            Multiplies the loss's gradient (a process's share of a global batch).
        input_grad : bool
            Also return the gradient with respect to the input.

        Returns
        -------
        array or None
            ``dLdX`` with ``input_grad``, else None.

        Raises
        ------
        CallOrderError
            :meth:`forward` has not run.
        """
        if self._out is None:
            raise CallOrderError("FusedPlan.backward(): call forward(X, y) first")
        grad = self.loss.backward() if self._gradient is None else self._gradient
        dLdA = grad if scale is None else grad * scale
        xp = self._xp
        last = len(self._layers) - 1
        for i in range(last, -1, -1):
            dLdA = self._layer_backward(self._layers[i], dLdA, xp, i > 0 or input_grad)
        if not input_grad:
            return None
        for scaling in self.model.standardize_layers:
            dLdA = scaling.backward_unchecked(dLdA, xp)
        return dLdA

    def _layer_backward(self, entry, dLdA, xp, input_grad):
        linear, own_linear, bn, own_bn, f, kind, dropout = entry
        ops = self.ops
        if dropout is not None:
            dLdA = dropout.backward_unchecked(dLdA, xp)
        by_kernel = kind is not None and kind != "identity"
        sums = None  # the column sums of dLdZ, where a kernel summed them on its way
        if bn is None:
            if by_kernel:
                dLdZ, sums = ops.activation_backward_with_sums(kind, dLdA, **_caches(f))
            else:
                dLdZ = f.backward_unchecked(dLdA, xp)
        elif own_bn and not bn._evaluated and kind is not None and dLdA.shape[0] > 0:
            dLdZ, bn.dLdBW, bn.dLdBb, sums = ops.batchnorm_backward_activated(
                kind, dLdA, bn.NZ, bn.BW, bn._inv_std, **_caches(f)
            )
        else:
            if by_kernel:
                dLdBZ = ops.activation_backward(kind, dLdA, **_caches(f))
            else:
                dLdBZ = f.backward_unchecked(dLdA, xp)
            if own_bn and not bn._evaluated:
                dLdZ, bn.dLdBW, bn.dLdBb = ops.batchnorm_backward(dLdBZ, bn.NZ, bn.BW, bn._inv_std)
            else:
                dLdZ = bn.backward_unchecked(dLdBZ, xp)
        if not own_linear:
            return linear.backward_unchecked(dLdZ, xp, input_grad=input_grad)
        linear.dLdW = ops.matmul(dLdZ, linear.A, trans_a=True)
        linear.dLdb = (ops.column_sums(dLdZ) if sums is None else sums).T
        return ops.matmul(dLdZ, linear.W) if input_grad else None

    def update(self) -> None:
        """SGD's update in one kernel per eight parameters; another optimizer's own step.

        Raises
        ------
        CallOrderError
            A gradient is missing.
        XpnetValueError
            A gradient of another shape than its parameter (the kernel places each
            gradient by its size, so it is refused here).
        """
        opt = self.optimizer
        if not self._fused_update:
            opt.step()
            return
        grads = opt.gradients()
        P, V = opt.flat_buffers()
        for (name, p), g in zip(opt.params, grads, strict=True):
            if g.shape != p.value.shape:
                raise XpnetValueError(
                    f"SGD.step(): the gradient of {name} has shape {tuple(g.shape)}, "
                    f"the parameter {tuple(p.value.shape)}"
                )
        self.ops.sgd_update_group(
            P, V, grads, lr=opt.lr, momentum=opt.mu, weight_decay=opt.weight_decay,
            nesterov=opt.nesterov,
        )  # fmt: skip

    def correct(self, out: Array, y: Array) -> Array:
        """How many rows of ``out`` have their largest value at their label: one kernel.

        Parameters
        ----------
        out : array
            ``(N, C)`` scores.
        y : array
            ``(N,)`` integer labels.

        Returns
        -------
        array
            0-d, on the device.
        """
        if y.ndim != 1:
            return super().correct(out, y)
        return self.ops.count_correct(out, y)


def _caches(f):
    """An activation's caches by name, as its kernels take them."""
    return {name: getattr(f, name) for name in f.declared_caches}


def _adopt(f, out):
    """Set the activation's caches from a kernel's output; return its ``A``."""
    for name in f.declared_caches:
        setattr(f, name, out[name])
    return f.A
