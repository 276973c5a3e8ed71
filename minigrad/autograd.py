"""Reverse mode: ``Tensor.backward`` and :func:`grad`, over the tape that ``minigrad.entries`` keeps.

Every differentiable op that touches a tensor which requires grad records a
:class:`TapeEntry` on its output: the op, its inputs and its parameters.  That is
enough to re-run the op (``entry.op.forward(*input arrays, **entry.params)``) and to
differentiate it.  Following ``_entry.inputs`` from a tensor walks the tape
backwards; sorting those entries gives the Wengert list that produced it (:func:`tape`).

Reverse mode walks that list from the outputs to the leaves.  Each tensor on the way
has one cotangent that sums the terms arriving from the ops that used it (a Tensor while
there is one term, a :class:`_Cotangent` from the second on); when the walk reaches the
tensor its sum is complete, and each input of the op that made it gets a term: the op's
vector-Jacobian product (VJP) rule applied to the sum.
VJP rules are written with minigrad ops, so with ``create_graph=True`` the backward
pass is itself recorded and can be differentiated again (Hessian-vector products).

The walk is iterative (a sort, never recursion), so a graph 100,000 ops deep
back-propagates in time linear in its size.
"""
from __future__ import annotations

import numpy as np

from .entries import CLOCK, check_versions, topological_order
from .modes import MODE, check_finite
from .tensor import Tensor


def _on_path(order: list, targets) -> set:
    """The tensors of ``order`` from which some target is reachable: the only ones ``grad`` must visit."""
    on_path = set()
    for t in order:  # inputs come first, so each tensor's inputs are decided before it
        if t in targets or (t._entry is not None and any(x in on_path for x in t._entry.inputs)):
            on_path.add(t)
    return on_path


class _Cotangent:
    """The cotangent of one tensor, summed as its terms arrive during the sweep.

    A term is a Tensor (what a VJP rule returns) or, when no graph is being built, what an
    op's ``lazy_vjp`` adds itself: a slice cotangent is added straight into a dense buffer
    of ours (:meth:`buffer`: backprop through ``x[t]`` for every step t costs O(slice), not
    a full-size scatter), and a term ``left.T @ right`` is kept as its factors
    (:meth:`add_outer`) and all of them are summed in ONE matmul over their stacked rows (a
    weight used at every time step gets its gradient as hand-written BPTT computes it).
    """

    __slots__ = ("like", "dense", "owned", "lefts", "rights", "outer_size")

    def __init__(self, like, first=None, second=None, create_graph: bool = False):
        self.like = like  # the tensor whose cotangent this is: its shape and dtype
        self.dense = first  # Tensor: the sum of the dense terms so far
        self.owned = False  # whether ``dense`` is a buffer of ours, to add into in place
        self.lefts = None  # the factors of deferred outer terms, if any
        if second is not None:
            self.add(second, create_graph)

    def add(self, g, create_graph: bool):
        if self.dense is None:
            self.dense = g
        elif create_graph:
            self.dense = self.dense + g  # recorded: the sum is differentiated too
        elif self.owned:
            self.dense._data += g._data
        else:  # the first sum allocates a buffer of our own; later ones reuse it
            self.dense = Tensor._from_array(self.dense._data + g._data)
            self.owned = True

    def buffer(self) -> np.ndarray:
        """The dense sum as an array we may write into (zeros if there is none yet)."""
        if not self.owned:
            like = self.like._data
            data = np.zeros(like.shape, like.dtype) if self.dense is None else np.array(self.dense._data, dtype=like.dtype)
            self.dense, self.owned = Tensor._from_array(data), True
        return self.dense._data

    def add_outer(self, left: np.ndarray, right: np.ndarray):
        """Add the term ``left.T @ right``, kept as its factors until :meth:`total`."""
        if self.lefts is None:
            self.lefts, self.rights, self.outer_size = [], [], 0
        self.lefts.append(left)
        self.rights.append(right)
        self.outer_size += left.size + right.size
        if self.outer_size >= _OUTER_BUDGET:
            self._sum_outer()

    def _sum_outer(self):
        lefts, rights = self.lefts, self.rights
        self.lefts = None
        left = lefts[0] if len(lefts) == 1 else np.concatenate(lefts)
        right = rights[0] if len(rights) == 1 else np.concatenate(rights)
        total = (left.T @ right).astype(self.like._data.dtype, copy=False)  # a fresh array: ours to add into
        if self.dense is not None:
            total += self.dense._data
        self.dense, self.owned = Tensor._from_array(total), True

    def total(self):
        """The complete sum (a Tensor), or None if no term arrived."""
        if self.lefts is not None:
            self._sum_outer()
        return self.dense


# Stacked outer factors are summed once they hold this many elements, which bounds the memory
# they keep alive (16 MB in float32) while each matmul still has thousands of rows.
_OUTER_BUDGET = 1 << 22


def _add_term(cotangents: dict, x, g, create_graph: bool):
    """Add the dense term ``g`` to the cotangent of ``x``.

    ``cotangents[x]`` is a Tensor while ``x`` has one term, a :class:`_Cotangent` from the second on.
    """
    total = cotangents.get(x)
    if total is None:
        cotangents[x] = g
    elif type(total) is _Cotangent:
        total.add(g, create_graph)
    else:
        cotangents[x] = _Cotangent(x, total, g, create_graph)


def backward_pass(outputs, seeds, retain_graph: bool, create_graph: bool, inputs=None, stop_at_inputs: bool = False):
    """The reverse-mode sweep from ``outputs``, seeded with the cotangents ``seeds``.

    With ``inputs=None`` gradients are accumulated into the ``.grad`` of leaves
    (``Tensor.backward``); otherwise the cotangents reaching ``inputs`` are
    returned in a list (:func:`grad`), ``None`` where none arrived, and only the
    part of the graph that leads to them is walked.  An input computed from another
    passes its cotangent on to it (total derivatives, as PyTorch), unless
    ``stop_at_inputs``: then the inputs are taken as independent (partial derivatives:
    what a compiled program or a checkpoint, whose inputs these are, must return).
    """
    order = topological_order(outputs)
    requested = None if inputs is None else {}
    for k, x in enumerate(inputs or ()):  # the same tensor may be asked for at several positions
        requested.setdefault(x, []).append(k)
    on_path = None if inputs is None else _on_path(order, requested)
    results = None if inputs is None else [None] * len(inputs)
    cotangents = {}
    for out, g in zip(outputs, seeds):
        _add_term(cotangents, out, g, create_graph)

    previous_mode = MODE.get()
    anomaly = previous_mode.anomaly
    # record the VJPs only to build a graph; their results are checked below in anomaly mode,
    # naming the op whose backward failed
    MODE.set(previous_mode.replace(grad_enabled=create_graph, anomaly=False))
    lazy = not (create_graph or anomaly)  # lazy terms only when no graph is built
    try:
        while order:  # popped, so that a tensor backward has passed is freed (the loss, the products)
            t, gx = order.pop(), None
            g = cotangents.pop(t, None)
            if type(g) is _Cotangent:
                g = g.dense if g.lefts is None else g.total()
            if g is None:
                continue
            if t._hooks:
                g = _run_hooks(t, g)
            entry = t._entry
            if requested is not None and t in requested:
                for k in requested[t]:
                    results[k] = g
                if stop_at_inputs:
                    continue
            elif entry is None:
                if inputs is None:
                    _accumulate_leaf_grad(t, g, create_graph)
                continue
            if t._retains_grad and inputs is None:
                t.grad = g if create_graph else g.detach()
            if entry is None or (on_path is not None and t not in on_path):
                continue
            if entry.clock != CLOCK.tick:  # something changed in place since the op ran
                check_versions(t, entry)
            op, xs, params = entry.op, entry.inputs, entry.params
            walked = False  # whether backward went through this entry (a requested tensor's may stay)
            for i, x in enumerate(xs):
                if not x._requires_grad or (on_path is not None and x not in on_path):
                    continue
                walked = True
                if lazy and op.lazy_vjp is not None:
                    total = cotangents.get(x)
                    if type(total) is not _Cotangent:
                        total = cotangents[x] = _Cotangent(x, total)
                    if op.lazy_vjp(total, i, g, t, *xs, **params):
                        continue
                gx = op.vjps[i](g, t, *xs, **params)
                if gx is None:  # a compiled run's input that no path reaches (as eager's, unused)
                    continue
                if gx._data.dtype is not x._data.dtype and gx._data.dtype != x._data.dtype:
                    gx = gx.astype(x._data.dtype)  # e.g. the float32 input of a float64 op
                if anomaly:
                    check_finite(gx._data, f"backward (cotangent of input {i})", op.name, entry.created_at)
                if x in cotangents:
                    _add_term(cotangents, x, gx, create_graph)
                else:  # the first term, kept as it is: most tensors are used once
                    cotangents[x] = gx
            if walked and not retain_graph:  # free what backward used; not the graph behind a requested tensor
                entry.inputs = entry.params = None
    finally:
        MODE.set(previous_mode)
    return results


def _run_hooks(t, g):
    """Apply ``t``'s hooks in order; a hook may return a replacement cotangent of the same shape and dtype.

    Raises RuntimeError naming the tensor for a replacement of another shape or dtype (as PyTorch's
    "hook ... has changed the size of value").
    """
    for hook in list(t._hooks.values()):
        replaced = hook(g)
        if replaced is None:
            continue
        data = replaced._data if isinstance(replaced, Tensor) else np.asarray(replaced)
        if data.shape != g._data.shape or data.dtype != g._data.dtype:
            raise RuntimeError(
                f"register_hook: a hook on the tensor of shape {t.shape} (dtype {t.dtype}) returned a gradient "
                f"of shape {data.shape} and dtype {data.dtype}; a hook may replace the gradient only by one of "
                f"shape {g._data.shape} and dtype {g._data.dtype}")
        g = replaced if isinstance(replaced, Tensor) else Tensor._from_array(data)
    return g


def _accumulate_leaf_grad(t, g, create_graph: bool):
    if create_graph or (t.grad is not None and t.grad.requires_grad):
        t.grad = g if t.grad is None else t.grad + g
    elif t.grad is None:  # copy: cotangents may alias one another or a broadcast view
        t.grad = Tensor._from_array(np.array(g._data, copy=True))
    else:
        t.grad._data += g._data


# --------------------------------------------------------------------------- entry points
def seed_cotangents(where: str, outputs, grad_outputs) -> list:
    """Check ``outputs`` and build their seed cotangents (ones for size-1 outputs)."""
    seeds = []
    for k, out in enumerate(outputs):
        if not isinstance(out, Tensor):
            raise TypeError(f"{where}: outputs must be Tensors; got {type(out).__name__}")
        if not out.requires_grad:
            raise RuntimeError(
                f"{where}: output {k} (shape {out.shape}) does not require grad and has no tape: "
                "did an input set requires_grad=True, and was it computed outside no_grad()?"
            )
        g = None if grad_outputs is None else grad_outputs[k]
        if g is None:
            if out._data.size != 1:
                raise ValueError(
                    f"{where}: output {k} has shape {out.shape}; a gradient can be created implicitly only for "
                    "a single-element output; pass grad= (a cotangent of that shape)"
                )
            g = Tensor._from_array(np.ones_like(out._data))
        else:
            g = g if isinstance(g, Tensor) else Tensor._from_array(np.asarray(g, dtype=out._data.dtype))
            if g.shape != out.shape:
                raise ValueError(f"{where}: grad for output {k} has shape {g.shape}, expected {out.shape}")
        seeds.append(g)
    return seeds


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False):
    """Gradients of ``outputs`` with respect to ``inputs``, without touching ``.grad``.

    Matches ``torch.autograd.grad``: ``outputs`` and ``inputs`` are Tensors or
    sequences of them; ``grad_outputs`` the cotangents (omit for size-1 outputs);
    ``retain_graph`` defaults to ``create_graph``.  Returns a tuple with one
    Tensor per input, shaped like that input.

    Raises:
        RuntimeError: an input does not require grad, or is not reached from the
            outputs and ``allow_unused`` is False (then its entry is None).
    """
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    if grad_outputs is not None:
        if isinstance(grad_outputs, Tensor) or not isinstance(grad_outputs, (list, tuple)):
            grad_outputs = [grad_outputs]
        grad_outputs = list(grad_outputs)
        if len(grad_outputs) != len(outputs):
            raise ValueError(f"grad: got {len(grad_outputs)} grad_outputs for {len(outputs)} outputs")
    for k, x in enumerate(inputs):
        if not isinstance(x, Tensor) or not x.requires_grad:
            raise RuntimeError(f"grad: input {k} does not require grad")
    seeds = seed_cotangents("grad", outputs, grad_outputs)
    retain = create_graph if retain_graph is None else retain_graph
    results = backward_pass(outputs, seeds, retain, create_graph, inputs=inputs)
    for k, g in enumerate(results):
        if g is None and not allow_unused:
            raise RuntimeError(
                f"grad: input {k} (shape {inputs[k].shape}) is not used to compute the outputs; "
                "pass allow_unused=True to get None for it"
            )
        if g is not None and not create_graph:
            results[k] = g.detach()
    return tuple(results)


def backward(self, grad=None, retain_graph: bool = False, create_graph: bool = False):
    """Accumulate d(self)/d(leaf) into every leaf's ``.grad`` (``torch.Tensor.backward``).

    Args:
        grad: the cotangent (same shape as self); may be omitted for a size-1 output.
        retain_graph: keep the tape for another backward; otherwise its saved values are freed.
        create_graph: record the backward pass too, so the gradients can be differentiated.

    Raises:
        RuntimeError: self does not require grad, or the graph was already freed.
        ValueError: ``grad`` is missing for a non-scalar output or has the wrong shape.
    """
    seeds = seed_cotangents("backward", [self], None if grad is None else [grad])
    backward_pass([self], seeds, retain_graph or create_graph, create_graph)


Tensor.backward = backward  # reverse mode builds on the Tensor, so it gives the Tensor its method
