"""A run of a program as ONE tape entry: its packed outputs and its VJP (the generated backward, or the
program again as minigrad ops under ``create_graph``); the entries of loops and compiled calls.
"""
from __future__ import annotations

import numpy as np

from .. import autograd, entries, ops
from ..modes import MODE
from ..extend import Op, defvjp_argnum, primitive, trust
from ..tensor import Tensor
from .pytree import split_packed
from .codegen import Program
from .loops import _loops, _widen
from .donation import _recompute


class Run:
    """One run of a program, as one tape entry: its outputs packed in one array (``packed``), and
    what its VJP needs.  ``cotangent(i, g)`` is the entry's VJP for input ``i``: the generated
    backward computes the cotangents of all inputs at once, for the first input asked."""

    packed: np.ndarray
    out_shapes: list

    def cotangent(self, i: int, g: Tensor) -> Tensor:
        if self.cotangents is None or self.cotangents[0] is not g:
            if MODE.get().grad_enabled:  # create_graph: differentiate the eager loop, recorded
                self.cotangents = (g, self._eager_cotangents(g))
            else:
                self.cotangents = (g, [None if a is None else Tensor._from_array(a) for a in self._backward(g._data)])
        return self.cotangents[1][i]

    def _backward(self, packed_cotangent: np.ndarray) -> list:
        raise NotImplementedError

    def _eager_cotangents(self, g: Tensor) -> list:
        raise NotImplementedError


def _unreached(program: Program, n_inputs: int) -> set:
    """The inputs no path from the outputs reaches: their cotangent is None, as eager's graph gives."""
    returns = program.parts.backward_returns
    return set(range(n_inputs)) - set(program.differentiable) | {
        i for j, i in enumerate(program.differentiable) if returns[j] == "None"}


def record_run(op: Op, run: Run, inputs: tuple, differentiate: bool) -> list:
    """The outputs of ``run`` as tensors: ONE tape entry for the packed array, then a view per output."""
    packed = Tensor._from_op(op, run.packed, inputs, {"run": run}) if differentiate else \
        Tensor._from_array(run.packed)
    return split_packed(packed, run.out_shapes)


def _rows(factors, gxs: list, order, steps: slice) -> np.ndarray:
    """The outer-product factors of the loop's steps as rows: a list of them (put in ``order`` if
    given), or an int: x's cotangents, stacked (T, B, n) in ``gxs``, of which the loop ran ``steps``."""
    if isinstance(factors, int):
        return gxs[factors][steps].reshape(-1, gxs[factors].shape[-1])
    return np.concatenate(factors if order is None else [factors[k] for k in order])


class _Loop(Run):
    """One run of a compiled step over a sequence (:func:`scan`)."""

    def __init__(self, program, carry_tensors, x_tensors, captured, times, masks, residuals, stacks, ranks, packed,
                 out_shapes, donated):
        self.program, self.carry_tensors, self.x_tensors, self.captured = program, carry_tensors, x_tensors, captured
        self.times, self.masks, self.residuals, self.stacks, self.ranks = times, masks, residuals, stacks, ranks
        self.packed, self.out_shapes, self.n_carry = packed, out_shapes, len(carry_tensors)
        self.donated = donated  # the xs whose arrays hold stacks now (scan's donate_xs)
        self.cotangents = None  # (the packed cotangent they are for, one Tensor per input)

    def _backward(self, packed: np.ndarray) -> list:
        program, nc, nx = self.program, self.n_carry, len(self.x_tensors)
        parts = split_packed(packed, self.out_shapes)
        inputs = [t._data for t in self.carry_tensors + self.x_tensors + self.captured]
        differentiable = program.differentiable
        _, backward_loop, _, row_sums, _ = _loops(program, nc, nx, self.ranks, self.masks is not None)
        sums = [np.zeros(inputs[i].shape, inputs[i].dtype)
                if nc + nx <= i and j not in program.outer and j not in row_sums else None
                for j, i in enumerate(differentiable)]
        lefts, rights = [[] for _ in differentiable], [[] for _ in differentiable]
        gxs = [np.zeros(x.shape, x.dtype) for x in self.x_tensors]
        zeros = [np.zeros(c.shape, c.dtype) for c in self.carry_tensors]
        captured = [self.captured[k]._data for k in program.captured_read]
        residuals = list(self.residuals)  # the loop pops its copy: a retained graph runs backward again
        g_carry = backward_loop(self.times, parts[:nc], parts[nc:], residuals, self.stacks, captured, gxs,
                                self.masks, sums, lefts, rights, zeros)
        grads = list(g_carry) + gxs + [None] * len(self.captured)
        in_time_order = np.argsort(self.times[::-1], kind="stable")  # the backward loop ran reversed(times)
        steps = slice(min(self.times), max(self.times) + 1)  # all but the last step: a range
        rows = {("gxs", k): gx.reshape(-1, gx.shape[-1]) for k, gx in enumerate(gxs)}
        for j in program.outer:
            # in time order if the other factor is stacked in gxs (time order); else as the loop ran
            order = in_time_order if isinstance(lefts[j], int) or isinstance(rights[j], int) else None
            rows["lefts", j], rows["rights", j] = _rows(lefts[j], gxs, order, steps), _rows(rights[j], gxs, order, steps)
            grads[differentiable[j]] = rows["lefts", j].T @ rows["rights", j]
        for j, i in enumerate(differentiable):
            if i >= nc + nx and j not in program.outer:
                grads[i] = sums[j] if j not in row_sums else np.add.reduce(rows[row_sums[j][1]], axis=0)
        unreached = _unreached(program, len(inputs))
        if self.masks is not None:  # padding passes the carry's cotangent through to the initial carry
            unreached -= set(range(nc))
        return [None if i in unreached else np.zeros(x.shape, x.dtype) if g is None else g.astype(x.dtype, copy=False)
                for i, (g, x) in enumerate(zip(grads, inputs))]

    def _eager_cotangents(self, g: Tensor) -> list:
        """The step program run again as minigrad ops on this run's own inputs and captured tensors
        (never the step function: what it reads may have changed since), differentiated, recorded.
        A donated xs is recomputed from its tape entries, its array holding the loop's stacks now."""
        nc = self.n_carry
        carry, ys = list(self.carry_tensors), [[None] * shape[0] for shape in self.out_shapes[nc:]]
        xs = [_recompute(x, entries.owner(x._data)) if k in self.donated else x for k, x in enumerate(self.x_tensors)]
        for t in self.times:
            env = dict(zip(self.program.parts.input_names, carry + [x[t] for x in xs] + self.captured))
            results = _interpret(self.program, env)
            new, y = results[:nc], results[nc:]
            mask = None if self.masks is None else self.masks[t]
            if mask is not None:
                new = [ops.where(_widen(mask, n.ndim), n, o) for n, o in zip(new, carry)]
                y = [ops.where(_widen(mask, v.ndim), v, 0) for v in y]
            carry = new
            for k, v in enumerate(y):
                ys[k][t] = v
        missing = [Tensor._from_array(np.zeros(shape[1:], self.packed.dtype)) for shape in self.out_shapes[nc:]]
        outputs = carry + [ops.stack([v if v is not None else zero for v in steps]) for steps, zero in zip(ys, missing)]
        return _differentiate_eagerly(outputs, self.carry_tensors + xs + self.captured, split_packed(g, self.out_shapes))


def _interpret(program, env: dict) -> list:
    """Run a program's forward as minigrad ops (recorded) on the Tensors ``env`` binds to its inputs."""
    parts = program.parts
    for node in parts.forward_nodes:
        env[node.out] = node.op(*(env[a] for a in node.args), **node.params)
    return [env[name] for name in parts.forward_returns[:program.n_outputs]]


def _differentiate_eagerly(outputs, inputs, seeds) -> list:
    """create_graph through a compiled run: the cotangents of ``inputs`` from the re-run graph, recorded."""
    wanted = [x for x in inputs if x._requires_grad]
    grads = iter(autograd.grad(outputs, wanted, seeds, create_graph=True, allow_unused=True))
    result = []
    for x in inputs:
        g = next(grads) if x._requires_grad else None
        result.append(Tensor._from_array(np.zeros(x.shape, x.dtype)) if g is None and x._requires_grad else g)
    return result


def _packed_output(*arrays, run):
    return run.packed


# The tape entries of compiled runs: the forward already ran, so replaying returns its packed outputs.
SCAN, CALL = primitive(_packed_output, "scan"), primitive(_packed_output, "compiled")


for _op in (SCAN, CALL):
    trust(defvjp_argnum(_op, lambda i, g, ans, inputs, run: run.cotangent(i, g)))


# --------------------------------------------------------------------------- a compiled call
class _Call(Run):
    """One call of a compiled function (:func:`compile`)."""

    def __init__(self, program, args, captured, residuals, out_shapes, packed):
        self.program, self.args, self.captured = program, args, captured
        self.residuals, self.out_shapes, self.packed = residuals, out_shapes, packed
        self.cotangents = None

    def _backward(self, packed_cotangent: np.ndarray) -> list:
        program, inputs = self.program, self.args + self.captured
        captured = [self.captured[k]._data for k in program.captured_read]
        results = program.backward(*split_packed(packed_cotangent, self.out_shapes), *self.residuals, *captured)
        grads = [None] * len(inputs)
        for j, i in enumerate(program.differentiable):
            r = results[j]
            grads[i] = r[0].T @ r[1] if j in program.outer else r
        unreached = _unreached(program, len(inputs))
        return [None if i in unreached else np.zeros(x.shape, x.dtype) if g is None else np.asarray(g, x.dtype)
                for i, (g, x) in enumerate(zip(grads, inputs))]

    def _eager_cotangents(self, g: Tensor) -> list:  # the program as minigrad ops, as a loop's
        outputs = _interpret(self.program, dict(zip(self.program.parts.input_names, self.args + self.captured)))
        return _differentiate_eagerly(outputs, self.args + self.captured, split_packed(g, self.out_shapes))
