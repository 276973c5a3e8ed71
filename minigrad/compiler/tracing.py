"""Tracing: a function run on stand-ins, its tape read as a program (:func:`read_tape`), the backward
derived by reverse mode over that trace (:func:`_trace_backward`), and the cache of built programs.
"""
from __future__ import annotations

import collections
import time

import numpy as np

from .. import autograd, entries
from ..modes import MODE, TraceError
from ..tensor import Tensor
from .pytree import flatten
from .codegen import Program, _Node, _Writer, _literal, _param_key, _write
from .passes import _drop_broadcasts, _fuse_slice_cotangents, _simplify, _write_blocks_in_place


class _Trace:
    """One traced call: the program's structure key and what this call binds to it."""

    __slots__ = ("key", "captured", "outputs", "out_structure", "build", "order", "slots")

    def __init__(self, key, captured, outputs, out_structure, build, order, slots):
        self.key, self.captured, self.outputs, self.out_structure, self.build = (
            key, captured, outputs, out_structure, build)
        self.order, self.slots = order, slots  # the tensors ops made, in order; each tensor's value name


def walk_back(outputs, stop, start: int) -> tuple[list, list]:
    """The tensors between ``outputs`` and ``stop``: those that ops recorded since entry ``start`` made, in
    the order they ran, and those they read from outside (leaves, and tensors made before ``start``)."""
    stack = list(dict.fromkeys(outputs))  # in order: the captured tensors' names depend on it
    made, outside, seen = [], [], set(stack)
    while stack:
        t = stack.pop()
        if t in stop:
            continue
        entry = t._entry
        if entry is None or entry.index < start:
            outside.append(t)
            continue
        made.append((entry.index, t))
        for x in entry.inputs:
            if x not in seen:
                seen.add(x)
                stack.append(x)
    made.sort(key=lambda pair: pair[0])
    return [t for _, t in made], outside


def trace(fn, args: list, structure, requires_grad: list, standins: list | None = None) -> _Trace:
    """Run ``fn(*leaves)`` once on stand-ins of ``args`` (arrays) and read its program off the tape.

    ``requires_grad[i]`` says whether argument leaf ``i`` needs a cotangent.  Every stand-in
    requires grad during the trace, so that every op on the way to the outputs is recorded.
    ``standins``, if given, are the tensors to call ``fn`` on instead (each requiring grad): a
    trace whose graph is also the real one (the last step of :func:`scan`).
    Returns a :class:`_Trace`: its ``key`` identifies the program (ops, wiring, parameters,
    shapes, dtypes), ``build()`` generates it.

    Raises:
        TraceError: ``fn`` reads a tensor's values or changes a tensor in place.
    """
    if standins is None:
        standins = [Tensor._from_array(a) for a in args]
        for t in standins:
            t._requires_grad = True
    start = next(entries.ENTRY_INDEX)
    previous = MODE.get()
    MODE.set(previous.replace(grad_enabled=True, tracing=True))
    try:
        result = fn(*standins)
    finally:
        MODE.set(previous)
    return read_tape(standins, result, start, structure, requires_grad)


def read_tape(inputs: list, result, start: int, structure, requires_grad: list) -> _Trace:
    """The program that the tape entries recorded since index ``start`` form from ``inputs``
    (Tensors) to ``result`` (a Tensor or a nest of them): what :func:`trace` recorded, or an
    eager call's own tape (:class:`Compiled`).

    Raises:
        TypeError: ``result`` is not a nest of Tensors.
    """
    outputs, out_structure = flatten(result)
    slots = {t: f"a{i}" for i, t in enumerate(inputs)}
    order, captured = walk_back(outputs, slots, start)
    for k, t in enumerate(captured):
        slots[t] = f"c{k}"
    for k, t in enumerate(order):
        slots[t] = f"v{k}"
    recorded = [t._entry for t in order]  # their tape entries, in the order they ran
    wiring = [tuple(slots[x] for x in entry.inputs) for entry in recorded]
    # Every call of a scan traces, and most find their program cached: the key is made from the
    # tape directly, and the nodes only when a program is built.
    key = (
        tuple((t.shape, t.dtype.str) for t in inputs), tuple(requires_grad), structure, out_structure,
        tuple((t.shape, t.dtype.str, t._requires_grad) for t in captured),
        tuple((id(e.op), w, tuple((k, _param_key(v)) for k, v in e.params.items())) for e, w in zip(recorded, wiring)),
        tuple(slots[t] for t in outputs),
    )

    def build(differentiate: bool) -> Program:
        shapes = {slots[t]: (t.shape, t.dtype) for t in inputs + captured + order}
        nodes = [_Node(slots[t], e.op, w, e.params, t.shape, t.dtype) for t, e, w in zip(order, recorded, wiring)]
        return _build(inputs, captured, outputs, slots, shapes, nodes, requires_grad, differentiate)

    return _Trace(key, captured, outputs, out_structure, build, order, slots)


def _build(standins, captured, outputs, slots, shapes, nodes, requires_grad, differentiate) -> Program:
    """A trace's program: its forward simplified; with ``differentiate``, the backward derived by reverse
    mode over the trace, read as nodes, simplified, its weight cotangents as outer-product factors, and
    both written out with the residuals between them."""
    writer = _Writer()
    inputs = standins + captured
    input_names = [slots[t] for t in inputs]
    forward_nodes, forward_returns, forward_alias = _simplify(list(nodes), [slots[t] for t in outputs], shapes)
    if not differentiate:
        source = _write(writer, "forward", input_names, forward_nodes, forward_returns)
        program = Program(source, None, writer.namespace, len(standins), len(outputs), [], [], {}, [])
        program.parts = _Parts(writer, input_names, forward_nodes, forward_returns, [], None, None, [])
        return program
    differentiable = [i for i, t in enumerate(inputs)
                      if (requires_grad[i] if i < len(standins) else t._requires_grad) and t.dtype.kind == "f"]
    grads, seeds, start = _trace_backward(outputs, [inputs[i] for i in differentiable], inputs)
    bshapes = dict(shapes, **{f"g{k}": (g.shape, g.dtype) for k, g in enumerate(seeds)})
    bnodes, returns = _backward_nodes(grads, seeds, start, slots, forward_alias, nodes, writer, bshapes)
    bnodes, returns, _ = _simplify(bnodes, returns, bshapes)
    bnodes = _drop_broadcasts(bnodes, returns, bshapes)
    outer = _outer_factors(bnodes, returns, differentiable, len(standins), bshapes)
    needed = [name for r in returns for name in (r if isinstance(r, tuple) else (r,)) if name != "None"]
    bnodes, _, _ = _simplify(bnodes, needed, bshapes)
    bnodes = _write_blocks_in_place(_fuse_slice_cotangents(bnodes, returns, bshapes), returns)
    return _written(writer, standins, captured, outputs, slots, input_names, forward_nodes, forward_returns, seeds,
                    bnodes, returns, needed, differentiable, outer, bshapes)


def _backward_nodes(grads, seeds, start, slots, forward_alias, nodes, writer, bshapes) -> tuple[list, list]:
    """The nodes the VJP rules recorded since entry ``start`` on the way to ``grads``, in order, and the
    names of the cotangents they return: the seeds are ``g0, g1, ...``, forward values keep their
    names, numbers in the rules (``1 - y``) become constants, the rest ``b0, b1, ...``.

    Raises:
        TraceError: a rule made a constant array, or an array parameter, from values (no op recorded it).
    """
    names = {g: f"g{k}" for k, g in enumerate(seeds)}
    forward_params = {id(v) for n in nodes for v in n.params.values()}
    order, stack, seen = [], [g for g in grads if g is not None], set()
    while stack:
        t = stack.pop()
        if t in names or t in seen:
            continue
        seen.add(t)
        if t in slots:  # a forward value
            names[t] = forward_alias.get(slots[t], slots[t])
            continue
        entry = t._entry
        if entry is None or entry.index < start:
            if t._data.ndim != 0:
                raise TraceError(
                    f"compile: a VJP rule made a constant of shape {t.shape} from values it read (not an op "
                    "on the tape), so a compiled program cannot recompute it")
            names[t] = writer.constant(t._data)  # a number in a rule (``1 - y``, ``x * 2``)
            bshapes[names[t]] = (t.shape, t.dtype)
            continue
        for v in entry.params.values():
            if _literal(v) is None and id(v) not in forward_params and not isinstance(v, (np.dtype, type)):
                raise TraceError(
                    f"compile: the VJP rule behind {entry.op.name} passes a parameter computed from values "
                    f"({type(v).__name__}); a compiled program cannot recompute it")
        order.append((entry.index, t))
        stack.extend(entry.inputs)
    order.sort(key=lambda pair: pair[0])
    for k, (_, t) in enumerate(order):
        names[t] = f"b{k}"
        bshapes[f"b{k}"] = (t.shape, t.dtype)
    bnodes = [_Node(names[t], t._entry.op, tuple(names[x] for x in t._entry.inputs), t._entry.params, t.shape, t.dtype)
              for _, t in order]
    return bnodes, [names[g] if g is not None else "None" for g in grads]


def _outer_factors(bnodes, returns, differentiable, n_args, bshapes) -> list:
    """The captured inputs whose cotangent is ``left.T @ right`` of matrices (a weight's): their
    ``returns`` become the two factors ``(left, right)``, so that a loop sums every step's term in one
    matmul over the stacked factors, as hand-written BPTT does.  Returns their positions."""
    producers = {n.out: n for n in bnodes}
    uses = collections.Counter(a for n in bnodes for a in n.args)

    def factors(name):
        """(left, right) if ``name`` is ``matmul(transpose(left), right)`` of matrices, used only here."""
        node = producers.get(name)
        left = producers.get(node.args[0]) if node is not None and node.op.name == "matmul" else None
        if (uses[name] <= 1 and left is not None and left.op.name == "transpose"
                and len(bshapes[left.args[0]][0]) == 2 and len(bshapes[node.args[1]][0]) == 2):
            return left.args[0], node.args[1]
        return None

    outer = []
    for j, i in enumerate(differentiable):
        if i < n_args or returns[j] == "None" or uses[returns[j]]:
            continue
        pair = factors(returns[j])
        node = producers.get(returns[j])
        if pair is None and node is not None and node.op.name == "transpose" and len(node.shape) == 2:
            inner = factors(node.args[0])  # (left.T @ right).T = right.T @ left: a weight used as W.T
            pair = None if inner is None else inner[::-1]
        if pair is not None:
            returns[j] = pair
            outer.append(j)
    return outer


def _written(writer, standins, captured, outputs, slots, input_names, forward_nodes, forward_returns, seeds,
             bnodes, returns, needed, differentiable, outer, bshapes) -> Program:
    """Both programs written out: the forward returns the residuals (the forward values the backward
    reads); the captured ones are passed to the backward once per call."""
    read = {a for n in bnodes for a in n.args} | set(needed)
    captured_read = [k for k, t in enumerate(captured) if slots[t] in read]
    produced = [n.out for n in forward_nodes] + [slots[t] for t in standins]
    residuals = [v for v in produced if v in read]
    forward_source = _write(writer, "forward", input_names, forward_nodes, forward_returns + residuals)
    backward_args = [f"g{k}" for k in range(len(seeds))] + residuals + [slots[captured[k]] for k in captured_read]
    backward_source = _write(writer, "backward", backward_args, bnodes, returns)
    program = Program(forward_source, backward_source, writer.namespace, len(standins), len(outputs), residuals,
                      differentiable, outer, captured_read)
    program.parts = _Parts(writer, input_names, forward_nodes, forward_returns, residuals, bnodes, returns,
                           [slots[captured[k]] for k in captured_read], bshapes)
    return program


class _Parts:
    """What a program's source was written from, kept to write loops over it (:func:`_loop_source`)."""

    def __init__(self, writer, input_names, forward_nodes, forward_returns, residuals, backward_nodes,
                 backward_returns, captured_read_names, shapes=None):
        self.writer, self.input_names = writer, input_names
        self.forward_nodes, self.forward_returns, self.residuals = forward_nodes, forward_returns, residuals
        self.backward_nodes, self.backward_returns = backward_nodes, backward_returns
        self.captured_read_names = captured_read_names
        self.shapes = shapes  # value name -> (shape, dtype)


def _trace_backward(outputs, wrt, inputs):
    """Reverse mode over the forward trace with ``create_graph=True``: the VJP rules record the backward.

    The program's inputs that are constants (a frozen weight, an argument that needs no gradient)
    require grad while it runs, so that what a rule computes from them (``W.T``, ``x.T``) is
    recorded too, not made a constant of this trace."""
    seeds = [Tensor._from_array(np.zeros(t.shape, t.dtype)) for t in outputs]
    for g in seeds:
        g._requires_grad = True
    start = next(entries.ENTRY_INDEX)
    live = [k for k, t in enumerate(outputs) if t._requires_grad and t.dtype.kind == "f"]
    if not live or not wrt:
        return [None] * len(wrt), seeds, start
    constants = [t for t in inputs if not t._requires_grad and t.dtype.kind == "f"]
    previous = MODE.get()
    MODE.set(previous.replace(grad_enabled=True, tracing=True))
    try:
        for t in constants:
            t._requires_grad = True
        grads = autograd.backward_pass([outputs[k] for k in live], [seeds[k] for k in live], retain_graph=True,
                                       create_graph=True, inputs=wrt, stop_at_inputs=True)
    finally:
        for t in constants:
            t._requires_grad = False
        MODE.set(previous)
    return grads, seeds, start


# --------------------------------------------------------------------------- the cache
_CACHE_SIZE = 256


_CACHE: collections.OrderedDict = collections.OrderedDict()


STATS = {"programs": 0, "build_seconds": 0.0}  # programs generated, and the seconds spent deriving and writing them


def _made_at(t: Tensor) -> str:
    where = getattr(t, "_made_at", None)  # set only on tensors made while tracing
    return f" (made at {where})" if where else ""


def generator_states(generators) -> list:
    """The states of NumPy generators, to restore with :func:`set_generator_states` (the same draws again)."""
    return [g.bit_generator.state for g in generators]


def set_generator_states(generators, states) -> None:
    """Put each generator back into its state from :func:`generator_states`."""
    for g, state in zip(generators, states):
        g.bit_generator.state = state


def check_same_program(first: _Trace, second: _Trace, where: str):
    """Refuse a step whose traces at two steps differ: a path taken from Python state that changes
    from step to step, or a constant drawn anew at each step (a random mask made inside the step),
    which one program would silently repeat.

    Constants that are new objects but hold the same values (``mg.ones(3)`` made inside) are fine.

    Raises:
        TraceError: naming ``where`` and what differs.
    """
    if first.key != second.key:
        raise TraceError(f"{where} records different ops at its first and last steps (its Python control flow "
                         "depends on state that changes from step to step)")
    for a, b in zip(first.captured, second.captured):
        if a is not b and not (a._entry is None and b._entry is None and a.shape == b.shape
                               and np.array_equal(a._data, b._data, equal_nan=True)):
            raise TraceError(
                f"{where} makes a new tensor of shape {a.shape}{_made_at(b)} with other values at its first and "
                "last steps (a random mask drawn inside it?); one program would repeat the first; draw it "
                "outside (a cell: in project, once per sequence)")


def _program(tr: _Trace, differentiate: bool) -> Program:
    """The program of a trace: from the cache (least recently used goes first), or built now."""
    key = (tr.key, differentiate)
    program = _CACHE.get(key)
    if program is None:
        began = time.perf_counter()
        program = tr.build(differentiate)
        STATS["programs"] += 1
        STATS["build_seconds"] += time.perf_counter() - began
        _CACHE[key] = program
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    return program
