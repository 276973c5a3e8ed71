"""Compiled steps: read a program off the tape, run its backward (and a loop's forward) as generated NumPy.

Tracing runs the function eagerly on stand-in tensors.  The tape it records is the program
(the Wengert list): every entry is ``op(inputs, **params)``, and the op table gives each
entry's NumPy forward.  The backward program is derived by running ordinary reverse mode
over that trace with ``create_graph=True``: the VJP rules, written with minigrad ops, record a
second trace.  Both traces are simplified (identities such as ``sum_to`` or ``reshape`` to the
same shape, common subexpressions, dead code) and written out as straight-line Python calling
each op's NumPy forward: :func:`Program.source` prints them.

:func:`scan` runs a step program over a sequence (JAX's ``lax.scan``) and records ONE tape
entry for the whole loop; :func:`compile` does the same for one call of a function.  The
eager path stays the reference semantics: what is compiled must equal it.  No program outlives
what it was read from: ``compile`` reads each call's own tape (the call runs eagerly), and
``scan`` traces every call's first step and runs its last on the tape, where it must record
the same program (a guard against anything that changes from step to step).

While a step is traced, reading a tensor's values into Python (``bool(t)``, ``t.item()``,
``t.data``, ``np.asarray(t)``, ``t > 0``) or changing a tensor in place raises
:class:`~minigrad.modes.TraceError`: one program follows one path through Python control
flow and repeats no side effect (JAX's tracers refuse the same way); :func:`scan` then runs
the loop eagerly, with a warning naming the line.
"""
from __future__ import annotations

import builtins
import collections
import contextlib
import functools
import keyword
import math
import re
import time
import warnings
import weakref

import numpy as np

from . import _kernels as K
from . import autograd, entries, modes, ops
from .modes import MODE, TraceError
from .extend import Op, defvjp, defvjp_argnum, primitive, trust
from .tensor import DonatedArray, Tensor

__all__ = ["Compiled", "Program", "TraceError", "compile", "scan", "scan_source", "trace"]


# --------------------------------------------------------------------------- nested inputs and outputs
def flatten(tree, where: str = "scan/compile") -> tuple[list, object]:
    """The tensors of a nest of tuples, lists and dicts (in order), and its structure.

    Raises:
        TypeError: a leaf is not a Tensor (the message starts with ``where``).
    """
    if isinstance(tree, Tensor):
        return [tree], None
    if isinstance(tree, (tuple, list)):
        leaves, shapes = [], []
        for item in tree:
            sub, shape = flatten(item, where)
            leaves += sub
            shapes.append((len(sub), shape))
        return leaves, (type(tree), tuple(shapes))
    if isinstance(tree, dict):
        leaves, shapes = flatten(list(tree.values()), where)
        return leaves, (dict, (tuple(tree), shapes))
    raise TypeError(f"{where}: expected Tensors nested in tuples, lists and dicts; got {type(tree).__name__}")


def unflatten(structure, leaves):
    """The nest ``structure`` (from :func:`flatten`) holding ``leaves``."""
    if structure is None:
        return leaves[0]
    kind, shapes = structure
    if kind is dict:
        keys, inner = shapes
        return dict(zip(keys, unflatten(inner, leaves)))
    items, start = [], 0
    for n, shape in shapes:
        items.append(unflatten(shape, leaves[start:start + n]))
        start += n
    return kind(items)


# --------------------------------------------------------------------------- the program
_LITERALS = (bool, int, float, str, type(None))


def _literal(value) -> str | None:
    """Python source that rebuilds ``value``, or None when it is not a plain literal."""
    if isinstance(value, _LITERALS) and not (isinstance(value, float) and not np.isfinite(value)):
        return repr(value)
    if isinstance(value, np.integer):
        return repr(int(value))
    if isinstance(value, np.dtype):
        return f"np.dtype({value.str!r})"
    if isinstance(value, slice):
        parts = [_literal(p) for p in (value.start, value.stop, value.step)]
        return None if None in parts else f"slice({', '.join(parts)})"
    if isinstance(value, (tuple, list)):
        parts = [_literal(p) for p in value]
        if None in parts:
            return None
        body = ", ".join(parts) + ("," if len(parts) == 1 and isinstance(value, tuple) else "")
        return f"({body})" if isinstance(value, tuple) else f"[{body}]"
    return None


# Names of the generated loops and Python's builtins: an op is never called by one of these.
_RESERVED = frozenset(dir(builtins)) | {"np", "t", "m", "times", "carry", "xs", "captured", "ys", "residuals", "stacks", "masks",
                                        "g_carry", "g_ys", "gxs", "sums", "lefts", "rights", "zeros", "_widen"}


class _Writer:
    """Names values and ops while a program's source is written."""

    def __init__(self):
        self.namespace = {"np": np}
        self.constants = {}  # id(value) -> name, for values that are not literals
        self.op_names = {}  # id(op) -> name in the namespace

    def op(self, op: Op) -> str:
        name = self.op_names.get(id(op))
        if name is None:
            base = "".join(c if c.isalnum() else "_" for c in op.name) or "op"
            if not base.isidentifier() or keyword.iskeyword(base) or base in _RESERVED or base in self.namespace \
                    or re.fullmatch(r"[A-Za-z]+[0-9]+", base):  # never a name the generated code uses
                base = f"{base}_op{len(self.op_names)}"
            name = base
            self.op_names[id(op)] = name
            self.namespace[name] = op.forward
        return name

    def constant(self, value) -> str:
        source = _literal(value)
        if source is not None:
            return source
        name = self.constants.get(id(value))
        if name is None:
            name = self.constants[id(value)] = f"k{len(self.constants)}"
            self.namespace[name] = value
        return name


class _Node:
    """One line of a program: ``out = op(*args, **params)``; args are value names."""

    __slots__ = ("out", "op", "args", "params", "shape", "dtype", "into")

    def __init__(self, out, op, args, params, shape, dtype, into=None):
        self.out, self.op, self.args, self.params, self.shape, self.dtype = out, op, args, params, shape, dtype
        self.into = into  # (buffer, index): the op writes its result into buffer[index] (out=); _write_directly


_IDENTITIES = {"sum_to": "shape", "reshape": "shape", "broadcast_to": "shape"}


def _simplify(nodes: list, returns: list, shapes: dict) -> tuple[list, list]:
    """Drop identities (``sum_to``/``reshape``/``broadcast_to`` to the input's own shape, ``astype`` to
    its dtype), merge common subexpressions and remove dead code; ``returns`` are kept.

    A sum with a negation, ``add(g, neg(b))`` (a ``sub``'s VJP meeting another term), becomes
    ``sub(g, b)``: the same rounding, one op fewer once the ``neg`` is dead.

    Returns the kept nodes, ``returns`` renamed, and the renaming (``alias``)."""
    alias, kept, seen, negated = {}, [], {}, {}
    for node in nodes:
        args = tuple(alias.get(a, a) for a in node.args)
        name = node.op.name
        if node.op is ops.neg.op:
            negated[node.out] = args[0]
        elif node.op is ops.add.op and not node.params and any(a in negated for a in args):
            g, b = args if args[1] in negated else args[::-1]
            node.op, args = ops.sub.op, (g, negated[b])
        if len(args) == 1 and (
                (name in _IDENTITIES and tuple(node.params.get(_IDENTITIES[name], ())) == shapes[args[0]][0])
                or (name == "astype" and np.dtype(node.params["dtype"]) == shapes[args[0]][1])):
            alias[node.out] = args[0]
            continue
        try:
            key = (id(node.op), args, tuple((k, _param_key(v)) for k, v in node.params.items()))
        except TypeError:
            key = None
        if key is not None and key in seen:
            alias[node.out] = seen[key]
            continue
        if key is not None:
            seen[key] = node.out
        node.args = args
        kept.append(node)
    returns = [alias.get(r, r) for r in returns]
    return _live(kept, returns), returns, alias


def _drop_broadcasts(nodes: list, returns: list, shapes: dict) -> list:
    """Drop a ``broadcast_to`` (as the VJP of a sum makes) whose every use is an elementwise op that
    broadcasts its inputs anyway, to the same output shape."""
    users = collections.defaultdict(list)
    for node in nodes:
        for a in node.args:
            users[a].append(node)
    returned = {name for r in returns for name in (r if isinstance(r, tuple) else (r,))}
    alias = {}
    for node in nodes:
        if node.op.name != "broadcast_to" or node.out in returned or not users[node.out]:
            continue
        source = node.args[0]
        if all(u.op.broadcasts and u.op.elementwise and not u.params and np.broadcast_shapes(
                *(shapes[source if a == node.out else a][0] for a in u.args)) == u.shape for u in users[node.out]):
            alias[node.out] = source
    if not alias:
        return nodes
    kept = []
    for node in nodes:
        if node.out in alias:
            continue
        node.args = tuple(alias.get(a, a) for a in node.args)
        kept.append(node)
    return kept


def _scatter_sum(*gs, indices, basics, shape):
    """Zeros of ``shape`` with each ``gs[k]`` added at ``indices[k]``: one buffer for every slice cotangent."""
    out = np.zeros(shape, dtype=np.result_type(*gs))
    for g, index, basic in zip(gs, indices, basics):
        K.add_at(out, g, index, basic)
    return out


def _add_into(dense, *gs, indices, basics):
    """``dense`` (a temporary of the backward program, used once) with each ``gs[k]`` added at ``indices[k]``, in place."""
    for g, index, basic in zip(gs, indices, basics):
        K.add_at(dense, g, index, basic)
    return dense


def _write_blocks(*gs, indices, written, shape):
    """Zeros of ``shape`` with each ``gs[k]`` at ``indices[k]`` (disjoint basic blocks): a scatter sum.
    ``written[k]``: the generated code has block k written by the op that makes it (``out=``)."""
    return _scatter_sum(*gs, indices=indices, basics=(True,) * len(gs), shape=shape)


def _allocate(shape, dtype, fill):
    """The buffer of a ``write_blocks``: ``np.zeros`` or, where its blocks cover it, ``np.empty``."""
    return np.zeros(shape, dtype) if fill == "zeros" else np.empty(shape, dtype)


# Generated code only: never on a tape (a compiled VJP under create_graph runs the eager loop instead).
SCATTER_SUM, ADD_INTO = primitive(_scatter_sum, "scatter_sum"), primitive(_add_into, "add_into")
WRITE_BLOCKS, ALLOCATE = primitive(_write_blocks, "write_blocks"), primitive(_allocate, "allocate")
# Ops whose output is a fresh array (no view of an input): a temporary the program may add into.
_FRESH = frozenset({"mul", "add", "sub", "div", "neg", "tanh_backward", "sigmoid_backward", "relu_backward",
                    "matmul", "addmm", "scatter_add", "scatter_sum", "add_into"})


def _fuse_slice_cotangents(nodes: list, returns: list, shapes: dict) -> list:
    """Write a sum of slice cotangents (``add`` of ``scatter_add`` terms, as the VJP of an LSTM's gate
    blocks makes) into ONE buffer, and add a slice term into a dense temporary in place."""
    producers = {n.out: n for n in nodes}
    uses = collections.Counter(a for n in nodes for a in n.args)
    uses.update(name for r in returns for name in (r if isinstance(r, tuple) else (r,)))

    def terms(name):
        """The (g, index, basic) slice terms summed in ``name``, if it is only such a sum: one slice
        (its buffer is then left to dead code, also where several sums read it, as a GRU's do), or
        a sum of several used once."""
        node = producers.get(name)
        if node is None:
            return None
        if node.op.name == "scatter_add":
            return [(node.args[0], node.params["index"], node.params["basic"])]
        if uses[name] != 1:
            return None
        if node.op.name == "scatter_sum":
            return list(zip(node.args, node.params["indices"], node.params["basics"]))
        return None

    fused = []
    for node in nodes:
        if node.op.name == "add" and len(node.args) == 2:
            left, right = terms(node.args[0]), terms(node.args[1])
            same_shape = shapes[node.args[0]][0] == shapes[node.args[1]][0] == node.shape
            if same_shape and left is not None and right is not None:
                items = left + right
                node = _Node(node.out, SCATTER_SUM, tuple(g for g, _, _ in items),
                             {"indices": tuple(i for _, i, _ in items), "basics": tuple(b for _, _, b in items),
                              "shape": node.shape}, node.shape, node.dtype)
            else:
                for slice_side, dense in ((left, node.args[1]), (right, node.args[0])):
                    dense_node = producers.get(dense)
                    if (slice_side is not None and same_shape and dense_node is not None and uses[dense] == 1
                            and dense_node.op.name in _FRESH and dense_node.dtype == node.dtype):
                        node = _Node(node.out, ADD_INTO, (dense, *(g for g, _, _ in slice_side)),
                                     {"indices": tuple(i for _, i, _ in slice_side),
                                      "basics": tuple(b for _, _, b in slice_side)}, node.shape, node.dtype)
                        break
        producers[node.out] = node
        fused.append(node)
    return _live(fused, returns)


def _write_blocks_in_place(nodes: list, returns: list) -> list:
    """A sum of slice cotangents into disjoint blocks (an LSTM's gate blocks): each block is written
    once, into ``np.empty`` where the blocks cover the buffer, else ``np.zeros``, and by the op that
    makes it where it can (:func:`_write_directly`); overlapping blocks are left to add up."""
    position = {n.out: k for k, n in enumerate(nodes)}
    allocations, blocks = {}, {}  # the node before which a buffer is allocated -> its allocation
    for node in nodes:
        p = node.params
        if node.op is not SCATTER_SUM or not all(p["basics"]) or None in map(_index_source, p["indices"]):
            continue
        cover = np.zeros(node.shape, np.uint8)
        for index in p["indices"]:
            cover[index] += 1
        if cover.max(initial=0) > 1:
            continue
        fill = "empty" if cover.all() else "zeros"
        first = min((g for g in node.args if g in position), key=position.get, default=node.out)
        allocations[first] = _Node(node.out, ALLOCATE, (), {"shape": node.shape, "dtype": node.dtype, "fill": fill},
                                   node.shape, node.dtype)
        blocks[node.out] = _Node(node.out, WRITE_BLOCKS, node.args, {
            "indices": p["indices"], "written": (False,) * len(node.args), "shape": node.shape}, node.shape, node.dtype)
    result = []
    for node in nodes:
        if node.out in allocations:
            result.append(allocations[node.out])
        result.append(blocks[node.out] if node.op is SCATTER_SUM and node.out in blocks else node)
    return _write_directly(result, returns)


def _write_directly(nodes: list, returns: list) -> list:
    """Each block of a ``write_blocks`` buffer that a ufunc makes, used only there, is written by that
    op into its place (``mul(b0, v10, out=b15[:, 96:128])``), not into a new array copied after."""
    producers = {n.out: k for k, n in enumerate(nodes)}
    uses = collections.Counter(a for n in nodes for a in n.args)
    uses.update(name for r in returns for name in (r if isinstance(r, tuple) else (r,)))
    nodes = list(nodes)
    changed_in_place = {n.args[0] for n in nodes if n.op is ADD_INTO}
    for k, node in enumerate(nodes):
        if node.op is not WRITE_BLOCKS:
            continue
        written, layout = list(node.params["written"]), np.empty(node.shape, np.uint8)  # (for the blocks' shapes)
        for j, (g, index) in enumerate(zip(node.args, node.params["indices"])):
            source = nodes[producers[g]] if g in producers else None
            # a value used again is then read from its block: only if nothing adds into the buffer later
            if (not written[j] and source is not None and (uses[g] == 1 or node.out not in changed_in_place)
                    and _writes_into(source.op.forward) and not source.params and source.into is None
                    and source.dtype == node.dtype and source.shape == layout[index].shape):
                nodes[producers[g]] = _Node(g, source.op, source.args, {}, source.shape, source.dtype,
                                            into=(node.out, index))
                written[j] = True
        nodes[k] = _Node(node.out, WRITE_BLOCKS, node.args, dict(node.params, written=tuple(written)), node.shape,
                         node.dtype)
    return nodes


def _live(nodes: list, returns: list) -> list:
    """The nodes that ``returns`` (names, or pairs of names) need: dead code removed."""
    needed = {name for r in returns for name in (r if isinstance(r, tuple) else (r,))}
    live = []
    for node in reversed(nodes):
        if node.out in needed:
            live.append(node)
            needed.update(node.args)
    return live[::-1]


def _param_key(value):
    """A hashable key of a parameter: literals by value, anything else (arrays) by identity.

    Every trace keys every parameter, so ints, strings, slices and tuples of them (an index, a
    shape) are keyed by type and value without writing their source (``1``, ``1.0`` and ``True``
    differ, as their source does)."""
    kind = type(value)
    if kind is int or kind is str or kind is bool or value is None:
        return kind, value
    if kind is tuple:
        return kind, tuple(map(_param_key, value))
    if kind is slice:
        return kind, _param_key(value.start), _param_key(value.stop), _param_key(value.step)
    source = _literal(value)
    return ("literal", source) if source is not None else ("object", id(value))


def _index_source(index) -> str | None:
    """``index`` in subscript notation (``:, 4:8``) if it is made of ints and slices, else None."""
    def one(i):
        if isinstance(i, slice):
            start, stop, step = ("" if v is None else _literal(v) for v in (i.start, i.stop, i.step))
            return None if None in (start, stop, step) else f"{start}:{stop}" + (f":{step}" if step else "")
        return repr(int(i)) if isinstance(i, (int, np.integer)) and not isinstance(i, bool) else None
    items = [one(i) for i in (index if isinstance(index, tuple) else (index,))]
    if None in items or not items:
        return None
    return ", ".join(items) + ("," if len(items) == 1 and isinstance(index, tuple) else "")


def _body(writer: _Writer, nodes: list, indent: str) -> list:
    """One line per node: ``out = op(*args, key=param, ...)``; basic indexing and the fused slice
    cotangents are written as subscripts, which is how one would write them by hand."""
    return [indent + line for node in nodes for line in _lines(writer, node)]


def _lines(writer: _Writer, node: _Node, out: str | None = None) -> list:
    """The source of one node; ``out``: where an op that takes ``out=`` (:func:`_writes_into`) writes
    its result, which it returns as a ufunc does: ``v10 = tanh(v8, out=V10[t])``."""
    name, p = node.op.name, node.params
    if name == "getitem" and p["basic"] and _index_source(p["index"]) is not None:
        return [f"{node.out} = {node.args[0]}[{_index_source(p['index'])}]"]
    if node.op in (SCATTER_SUM, ADD_INTO) and all(p["basics"]) and None not in map(_index_source, p["indices"]):
        gs = node.args if node.op is SCATTER_SUM else node.args[1:]
        first = (f"{node.out} = np.zeros({_literal(tuple(p['shape']))}, {gs[0]}.dtype)" if node.op is SCATTER_SUM
                 else f"{node.out} = {node.args[0]}")
        return [first] + [f"{node.out}[{_index_source(i)}] += {g}" for g, i in zip(gs, p["indices"])]
    if node.op is ALLOCATE:
        return [f"{node.out} = np.{p['fill']}({_literal(tuple(p['shape']))}, np.{np.dtype(p['dtype']).name})"]
    if node.op is WRITE_BLOCKS:
        return [f"{node.out}[{_index_source(i)}] = {g}" for g, i, w in zip(node.args, p["indices"], p["written"])
                if not w]
    params = [f"{k}={writer.constant(v)}" for k, v in p.items()]
    if node.into is not None:
        buffer, index = node.into
        out = f"{buffer}[{_index_source(index)}]"
    if out is not None:
        return [f"{node.out} = {writer.op(node.op)}({', '.join([*node.args, *params])}, out={out})"]
    return [f"{node.out} = {writer.op(node.op)}({', '.join([*node.args, *params])})"]


def _write(writer: _Writer, name: str, args: list, nodes: list, returns: list) -> str:
    lines = [f"def {name}({', '.join(args)}):", *_body(writer, nodes, "    ")]
    shown = [f"({r[0]}, {r[1]})" if isinstance(r, tuple) else r for r in returns]
    lines.append(f"    return ({', '.join(shown)}{',' if len(shown) == 1 else ''})")
    return "\n".join(lines)


class Program:
    """A traced function as two generated NumPy functions, ``forward`` and ``backward``.

    ``forward(*inputs)`` returns ``(*outputs, *residuals)``; ``backward(*cotangents, *residuals,
    *captured)`` returns the cotangent of each differentiable input (None where none arrives).
    Inputs are the function's argument leaves and then the captured tensors (parameters and
    other tensors it reads but does not take); all arrays.

    Attributes:
        n_inputs, n_outputs: leaves of the arguments and of the results.
        captured: per call, the tensors the trace read that are not arguments.
        differentiable: indices of the inputs (arguments, then captured) that get cotangents;
            ``backward`` returns one item per entry, in that order.
        outer: positions ``j`` in ``differentiable`` (captured inputs) for which ``backward``
            returns the two factors ``(left, right)`` of the cotangent ``left.T @ right``, so a
            loop can sum every step's term in ONE matmul over the stacked factors.
        captured_read: indices of the captured inputs that ``backward`` takes, in order.
    """

    def __init__(self, forward_source, backward_source, namespace, n_inputs, n_outputs, residuals,
                 differentiable, outer, captured_read):
        self.forward_source, self.backward_source = forward_source, backward_source
        exec(forward_source, namespace)  # noqa: S102 - our own generated source
        if backward_source is not None:
            exec(backward_source, namespace)  # noqa: S102
        self.forward = namespace["forward"]
        self.backward = namespace.get("backward")
        self.n_inputs, self.n_outputs, self.n_residuals = n_inputs, n_outputs, len(residuals)
        self.differentiable, self.outer, self.captured_read = differentiable, set(outer), captured_read

    def source(self) -> str:
        """The forward and the backward program, as Python source."""
        return self.forward_source + ("\n\n" + self.backward_source if self.backward_source else "")


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
    entries = [t._entry for t in order]
    wiring = [tuple(slots[x] for x in entry.inputs) for entry in entries]
    # Every call of a scan traces, and most find their program cached: the key is made from the
    # tape directly, and the nodes only when a program is built.
    key = (
        tuple((t.shape, t.dtype.str) for t in inputs), tuple(requires_grad), structure, out_structure,
        tuple((t.shape, t.dtype.str, t._requires_grad) for t in captured),
        tuple((id(e.op), w, tuple((k, _param_key(v)) for k, v in e.params.items())) for e, w in zip(entries, wiring)),
        tuple(slots[t] for t in outputs),
    )

    def build(differentiate: bool) -> Program:
        shapes = {slots[t]: (t.shape, t.dtype) for t in inputs + captured + order}
        nodes = [_Node(slots[t], e.op, w, e.params, t.shape, t.dtype) for t, e, w in zip(order, entries, wiring)]
        return _build(inputs, captured, outputs, slots, shapes, nodes, requires_grad, differentiate)

    return _Trace(key, captured, outputs, out_structure, build, order, slots)


def _build(standins, captured, outputs, slots, shapes, nodes, requires_grad, differentiate) -> Program:
    writer = _Writer()
    n_args, inputs = len(standins), standins + captured
    input_names = [slots[t] for t in inputs]
    forward_nodes, forward_returns, forward_alias = _simplify(list(nodes), [slots[t] for t in outputs], shapes)
    if not differentiate:
        source = _write(writer, "forward", input_names, forward_nodes, forward_returns)
        program = Program(source, None, writer.namespace, n_args, len(outputs), [], [], {}, [])
        program.parts = _Parts(writer, input_names, forward_nodes, forward_returns, [], None, None, [])
        return program

    differentiable = [i for i, t in enumerate(inputs)
                      if (requires_grad[i] if i < n_args else t._requires_grad) and t.dtype.kind == "f"]
    grads, seeds, start = _trace_backward(outputs, [inputs[i] for i in differentiable], inputs)

    # The backward program's values: the seeds, forward values (residuals) and its own nodes.
    names = {g: f"g{k}" for k, g in enumerate(seeds)}
    bshapes = dict(shapes)
    bshapes.update({f"g{k}": (g.shape, g.dtype) for k, g in enumerate(seeds)})
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
    bnodes = []
    for k, (_, t) in enumerate(order):
        names[t] = f"b{k}"
        bshapes[f"b{k}"] = (t.shape, t.dtype)
    for _, t in order:
        entry = t._entry
        bnodes.append(_Node(names[t], entry.op, tuple(names[x] for x in entry.inputs), entry.params, t.shape, t.dtype))
    bnodes, returns, _ = _simplify(bnodes, [names[g] if g is not None else "None" for g in grads], bshapes)
    bnodes = _drop_broadcasts(bnodes, returns, bshapes)

    # A captured input's cotangent ``left.T @ right``: return the two factors, so that a loop sums
    # every step's term in one matmul over the stacked factors (as hand-written BPTT does).
    producers = {n.out: n for n in bnodes}
    uses = collections.Counter(a for n in bnodes for a in n.args)
    outer = []
    def factors(name):
        """(left, right) if ``name`` is ``matmul(transpose(left), right)`` of matrices, used only here."""
        node = producers.get(name)
        left = producers.get(node.args[0]) if node is not None and node.op.name == "matmul" else None
        if (uses[name] <= 1 and left is not None and left.op.name == "transpose"
                and len(bshapes[left.args[0]][0]) == 2 and len(bshapes[node.args[1]][0]) == 2):
            return left.args[0], node.args[1]
        return None

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
    needed = [name for r in returns for name in (r if isinstance(r, tuple) else (r,)) if name != "None"]
    bnodes, _, _ = _simplify(bnodes, needed, bshapes)
    bnodes = _write_blocks_in_place(_fuse_slice_cotangents(bnodes, returns, bshapes), returns)

    # Residuals: the forward values the backward reads; captured ones are passed once per call.
    read = {a for n in bnodes for a in n.args} | set(needed)
    captured_read = [k for k, t in enumerate(captured) if slots[t] in read]
    produced = [n.out for n in forward_nodes] + [slots[t] for t in standins]
    residuals = [v for v in produced if v in read]
    forward_source = _write(writer, "forward", input_names, forward_nodes, forward_returns + residuals)
    backward_args = [f"g{k}" for k in range(len(seeds))] + residuals + [slots[captured[k]] for k in captured_read]
    backward_source = _write(writer, "backward", backward_args, bnodes, returns)
    program = Program(forward_source, backward_source, writer.namespace, n_args, len(outputs), residuals,
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


# --------------------------------------------------------------------------- scan
def _unpack(names: list, source: str) -> str:
    return f"{', '.join(names)}, = {source}" if names else f"_ = {source}"


def _hoist(nodes: list, invariant: set) -> tuple[list, list]:
    """Split ``nodes`` into those that read only loop invariants (``invariant``: captured inputs and
    constants), computed once before the loop, and the rest (per step)."""
    written_into = {n.args[0] for n in nodes if n.op is ADD_INTO}  # changed in place every step
    before, inside, invariant = [], [], set(invariant)
    for node in nodes:
        if all(a in invariant for a in node.args) and node.out not in written_into and node.into is None \
                and node.op not in (SCATTER_SUM, ADD_INTO, ALLOCATE, WRITE_BLOCKS):
            before.append(node)
            invariant.add(node.out)
        else:
            inside.append(node)
    return before, inside


# A fused VJP that is g times a derivative of a forward value: a loop splits it, so that the
# derivative (tanh's 1 - y**2) is computed for all steps at once and only the product per step.
_SPLIT = {"tanh_backward": ops.tanh_derivative.op, "sigmoid_backward": ops.sigmoid_derivative.op}


def _stack_name(name: str) -> str:
    """The name of a per-step value's stack over all steps, (T, ...): ``v10`` -> ``V10``."""
    return name.upper()


class _Fission:
    """Loop fission of a backward step, as the hand-written NumPy LSTM computes its gate derivatives:
    the nodes that read forward values (residuals) and loop invariants only, not cotangents, run
    ONCE before the loop, on the residuals of all steps stacked (T, ...); the rest run per step.

    Attributes:
        batched: those nodes, on the stacks (``D3 = tanh_derivative(V10)``).
        per_step: the other nodes.
        stacks: the forward values that the forward loop writes into (T, ...) buffers, in order.
        views: ``(name, parent, index)``: residuals whose stack is a view of another's (a gate block).
        tuple_residuals: the residuals the forward loop still keeps per step.
        reads: the stacked values that the per-step code reads, as ``v10 = V10[t]``.
    """

    def __init__(self, nodes: list, residuals: list, returns: list, stackable: set, invariant: set,
                 forward_producers: dict, shapes: dict):
        available = set(residuals) & stackable  # the per-step forward values the backward reads
        self.batched, self.per_step, made = [], [], set()
        nodes = list(self._split(nodes, available, shapes))
        uses = collections.Counter(a for n in nodes for a in n.args)
        uses.update(x for r in returns for x in (r if isinstance(r, tuple) else (r,)))
        per_step, dropped = {}, set()  # the per-step nodes by name; those reassociation made dead
        for node in nodes:
            if not self._batchable(node, available, invariant, shapes):
                node, factor = self._reassociate(node, per_step, uses, available, shapes, dropped)
                self.per_step.append(node)
                per_step[node.out] = node
                if factor is None:
                    continue
                node = factor
            self.batched.append(self._on_stacks(node, available, shapes))
            available.add(node.out)
            made.add(node.out)
        self.per_step = _write_directly([n for n in self.per_step if n.out not in dropped], returns)
        read_by_batched = {a for n in self.batched for a in n.args}
        used = [r for r in residuals if r in available and _stack_name(r) in read_by_batched]
        self.views, self.stacks, pending = [], [], list(used)
        while pending:  # a basic slice of a per-step value (a gate block): a view of that value's stack
            name = pending.pop(0)
            node = forward_producers.get(name)
            if node is not None and node.op.name == "getitem" and node.params["basic"] and \
                    _index_source(node.params["index"]) is not None and node.args[0] in forward_producers:
                self.views.append((name, node.args[0], node.params["index"]))
                if node.args[0] not in self.stacks + pending:
                    pending.append(node.args[0])
            elif name not in self.stacks:
                self.stacks.append(name)
        self.tuple_residuals = [r for r in residuals if r not in used]
        per_step_args = [a for n in self.per_step for a in n.args]
        per_step_args += [x for r in returns for x in (r if isinstance(r, tuple) else (r,))]
        self.reads = [a for a in dict.fromkeys(per_step_args) if a in made or a in used]

    @staticmethod
    def _split(nodes, available, shapes):
        """The nodes, with each fused tanh/sigmoid VJP of a forward value as g * derivative."""
        for node in nodes:
            derivative = _SPLIT.get(node.op.name)
            if derivative is not None and node.args[1] in available and \
                    shapes[node.args[1]] == (node.shape, node.dtype) and shapes[node.args[0]][1] == node.dtype:
                d = _Node("d" + node.out[1:], derivative, (node.args[1],), {}, node.shape, node.dtype)
                shapes[d.out] = (node.shape, node.dtype)
                yield d
                yield _Node(node.out, ops.mul.op, (node.args[0], d.out), {}, node.shape, node.dtype)
            else:
                yield node

    @staticmethod
    def _reassociate(node, per_step, uses, available, shapes, dropped):
        """``(y * r) * s`` -> ``y * (r * s)`` where r and s are stacked (a gate's value times its
        derivative): then ``r * s`` is computed for all steps at once, one product per step fewer.
        Returns the node, and the new factor's node or None."""
        mul = ops.mul.op
        if node.op is not mul or len(node.args) != 2 or node.params:
            return node, None
        for x, s in (node.args, node.args[::-1]):
            inner = per_step.get(x)
            if s not in available or inner is None or inner.op is not mul or inner.into is not None \
                    or uses[x] != 1 or inner.params or x in dropped:
                continue
            for y, r in (inner.args, inner.args[::-1]):
                if r in available and y not in available and \
                        shapes[r] == shapes[s] == shapes[x] == (node.shape, node.dtype):
                    factor = _Node("f" + node.out[1:], mul, (r, s), {}, node.shape, node.dtype)
                    shapes[factor.out] = (node.shape, node.dtype)
                    dropped.add(x)  # its one use is gone
                    return _Node(node.out, mul, (y, factor.out), {}, node.shape, node.dtype, node.into), factor
        return node, None

    @staticmethod
    def _batchable(node, available, invariant, shapes) -> bool:
        """An elementwise op of stacked values of its own rank (so that their leading T axes line up)
        and loop invariants, basic indexing, or a reduction over ``axis`` of one stacked value."""
        stacked = [a for a in node.args if a in available]
        if not stacked or node.into is not None or any(a not in available and a not in invariant for a in node.args):
            return False
        if node.op.name == "getitem":
            return node.params["basic"] and _index_source(node.params["index"]) is not None
        if node.op in _REDUCTIONS:
            return len(node.args) == 1
        return node.op.elementwise and not node.params and all(len(shapes[a][0]) == len(node.shape) for a in stacked)

    @staticmethod
    def _on_stacks(node, available, shapes):
        """``node`` on the stacks of its per-step arguments (``V10`` for ``v10``; an index behind ``:``;
        a reduction's axes one further right)."""
        params = node.params
        if node.op.name == "getitem":
            index = params["index"] if isinstance(params["index"], tuple) else (params["index"],)
            params = dict(params, index=(slice(None),) + index)
        elif node.op in _REDUCTIONS:
            axis = params["axis"]  # normalized by the op: a sorted tuple, or None for every axis
            ndim = len(shapes[node.args[0]][0])
            params = dict(params, axis=tuple(range(1, ndim + 1)) if axis is None else tuple(a + 1 for a in axis))
        args = tuple(_stack_name(a) if a in available else a for a in node.args)
        return _Node(_stack_name(node.out), node.op, args, params, None, node.dtype)


# Ops whose ``axis`` param names the axes each output element reduces (or normalizes) over: on a
# stack of steps, the same op over the same axes, one further right.
_REDUCTIONS = frozenset({ops.SUM, ops.MAX, ops.MIN, ops.STANDARDIZE})

# Kernels that take ``out=`` as a ufunc does, and like one return a new array without it.
_OUT_KERNELS = (K.sigmoid, K.relu, K.relu_backward, K.tanh_derivative, K.sigmoid_derivative)


def _writes_into(forward) -> bool:
    """Whether ``forward`` takes ``out=``, as NumPy's ufuncs do (and some of our kernels)."""
    return isinstance(forward, np.ufunc) or forward in _OUT_KERNELS


def _written_into(writer: _Writer, nodes: list, targets: dict, indent: str, zeroed: bool = False) -> tuple[list, dict]:
    """The lines of ``nodes``, where an op that takes ``out=`` writes a value named in ``targets``
    straight into its place there (``v10 = tanh(v8, out=V10[t])``) instead of a new array
    that is copied after; with ``zeroed`` (the places hold zeros), a buffer of gate blocks is
    the place itself.  Returns the lines and the values so written, with their places."""
    lines, direct = [], {}
    for node in nodes:
        place = targets.get(node.out)
        if place is not None and place not in direct.values() and node.op is ALLOCATE and zeroed:
            direct[node.out] = place
            lines.append(f"{indent}{node.out} = {place}")
        elif place is not None and place not in direct.values() and _writes_into(node.op.forward) \
                and not node.params and node.into is None and node.shape != ():  # X[t] of a 0-d step is no array
            direct[node.out] = place
            lines += [indent + line for line in _lines(writer, node, out=place)]
        else:
            lines += [indent + line for line in _lines(writer, node)]
    return lines, direct


# The batched lines of a backward loop run on this many steps at a time: each temporary they make
# then holds at most about this many elements (256 KB in float32, cache-sized), however long T is.
_CHUNK_ELEMENTS = 1 << 16


def _chunks(times: list, size: int) -> list:
    """The steps in the order the backward loop visits them (reversed ``times``), ``size`` at a time."""
    order = times[::-1]
    return [order[c:c + size] for c in range(0, len(order), size)]


def _batched_lines(writer: _Writer, fission: _Fission, direct: dict, returns: list, shapes: dict) -> tuple[int, list]:
    """The lines of the nodes run once over a chunk of steps ``lo:hi``, reusing buffers as
    hand-written BPTT does, and how many steps a chunk has (:data:`_CHUNK_ELEMENTS`):

    - a factor that one per-step op multiplies into x_t's cotangent, which that op writes into
      GX[t], is computed into GX itself: the op then multiplies in place (``D16`` is ``GX0[lo:hi]``);
    - an op whose argument is a temporary of these lines used only by it writes into that
      argument (``F3 = mul(V9[lo:hi], D3, out=D3)``).
    """
    stacks = {_stack_name(v) for v in fission.stacks} | {_stack_name(name) for name, _, _ in fission.views}
    stacked = {_stack_name(n.out): n for n in fission.batched}
    uses = collections.Counter(_stack_name(a) for a in fission.reads)
    uses.update(a for n in fission.batched for a in n.args)
    uses.update(_stack_name(x) for r in returns for x in (r if isinstance(r, tuple) else (r,)))
    per_step_uses = collections.Counter(a for n in fission.per_step for a in n.args)
    into = {}  # a batched value -> the buffer it is computed into
    for node in fission.per_step:
        place = direct.get(node.out)
        # (the op then writes over its own input: only a ufunc may, elementwise)
        for a in node.args if place is not None and isinstance(node.op.forward, np.ufunc) else ():
            producer = stacked.get(_stack_name(a))
            if producer is not None and uses[producer.out] == 1 and per_step_uses[a] == 1 \
                    and _writes_into(producer.op.forward) and not producer.params \
                    and shapes[a] == (node.shape, node.dtype) and place.endswith("[t]"):
                into.setdefault(producer.out, place[:-len("[t]")])  # GX0[t] -> GX0
                break
    fresh = set()  # temporaries of these lines, ours to overwrite
    lines = []
    for node in fission.batched:
        target = into.get(node.out)
        if target is not None:
            target += "[lo:hi]"
        elif isinstance(node.op.forward, np.ufunc) and not node.params:  # over its input
            target = next((a for a in node.args if a in fresh and uses[a] == 1 and a not in into
                           and shapes[a.lower()] == shapes[node.out.lower()]), None)
        on_chunk = _Node(node.out, node.op, tuple(f"{a}[lo:hi]" if a in stacks else a for a in node.args),
                         node.params, node.shape, node.dtype)
        lines += ["        " + line for line in _lines(writer, on_chunk, out=target)]
        if node.op.name != "getitem" and (isinstance(node.op.forward, np.ufunc) or node.op.forward in _OUT_KERNELS):
            fresh.add(node.out)
    temporary = [math.prod(shapes[n.out.lower()][0]) for n in fission.batched if n.out not in into]
    return max(1, _CHUNK_ELEMENTS // max(temporary + [1])), lines


def _dense_base(name: str, nodes: list) -> str:
    """The value whose buffer ``name`` is: itself, or for slices added into a dense value in place
    (``add_into``), that value's."""
    producers = {n.out: n for n in nodes}
    while name in producers and producers[name].op is ADD_INTO:
        name = producers[name].args[0]
    return name


def _fission(program: Program, nc: int, nx: int, forward_inside: list, backward_inside: list, residuals: list,
             invariant: set) -> _Fission:
    """The fission of the backward loop over the per-step ``residuals``."""
    parts = program.parts
    producers = {n.out: n for n in forward_inside}
    stackable = set(producers) | set(parts.input_names[:nc + nx])
    return _Fission(backward_inside, residuals, parts.backward_returns, stackable, invariant, producers, parts.shapes)


def _loop_source(program: Program, nc: int, nx: int, ranks: list, masked: bool) -> tuple:
    """The forward and backward loops of :func:`scan` around a step program, as Python source; the
    forward values they keep stacked over all steps (see :class:`_Fission`): each a name, or the
    index of the y whose (T, ...) output is its stack; the weights' cotangents summed from rows
    after the loop (:func:`_row_sums`); and the stacks that may go over a donated xs (:func:`_over_xs`).

    The step's lines are inlined into the loop, so a step costs its NumPy calls and nothing
    else; ``ranks`` are the ranks of the carry and then the y leaves (for widening masks);
    ``masked``: with the lines for per-step masks (padding).
    """
    parts = program.parts
    carry, xt = parts.input_names[:nc], parts.input_names[nc:nc + nx]
    captured = parts.input_names[program.n_inputs:]
    new_carry, ys = parts.forward_returns[:nc], parts.forward_returns[nc:]
    X, Y = [f"X{k}" for k in range(nx)], [f"Y{k}" for k in range(len(ys))]
    constants = set(parts.writer.constants.values())
    before, inside = _hoist(parts.forward_nodes, set(captured) | constants)
    # residuals that are loop invariants (W.T): kept once, as residuals[0], not once per step
    hoisted_names = {n.out for n in before}
    hoisted = [r for r in parts.residuals if r in hoisted_names]
    if parts.backward_nodes is not None:
        b_before, b_inside = _hoist(parts.backward_nodes, set(parts.captured_read_names) | constants | set(hoisted))
        invariant = set(parts.captured_read_names) | constants | set(hoisted) | {n.out for n in b_before}
        fission = _fission(program, nc, nx, inside, b_inside, [r for r in parts.residuals if r not in hoisted],
                           invariant)
        stacks = fission.stacks
    else:
        fission, stacks = None, []
    S = [_stack_name(v) for v in stacks]
    f = ["def forward_loop(times, carry, xs, captured, ys, residuals, stacks, masks):",
         "    " + _unpack(carry, "carry"), "    " + _unpack(X, "xs"), "    " + _unpack(captured, "captured"),
         "    " + _unpack(Y, "ys"), "    " + _unpack(S, "stacks"), *_body(parts.writer, before, "    ")]
    if hoisted and fission is not None:
        f.append(f"    residuals.append(({', '.join(hoisted)},))  # the loop invariants the backward reads, once")
    f.append("    for t in times:")
    f += [f"        {a} = {x}[t]" for a, x in zip(xt, X)]
    f += [f"        {_stack_name(a)}[t] = {a}" for a in parts.input_names[:nc + nx] if a in stacks]
    targets = {name: f"{_stack_name(name)}[t]" for name in stacks}
    aliases = {}  # a stacked value that is also a y: its stack is that y's (T, ...) output, no copy
    if not masked:  # (masked, y is a np.where of the value)
        for k, (y, v) in enumerate(zip(Y, ys)):
            if v in stacks:
                aliases.setdefault(v, k)
            targets.setdefault(v, f"{y}[t]")
    body, direct = _written_into(parts.writer, inside, targets, "        ")
    f += body
    f += [f"        {_stack_name(name)}[t] = {name}" for name in stacks
          if name not in direct and name not in parts.input_names]
    n_names, q_names = [f"n{k}" for k in range(nc)], [f"q{k}" for k in range(len(ys))]
    f += [f"        {n} = {v}" for n, v in zip(n_names, new_carry)] + [f"        {q} = {v}" for q, v in zip(q_names, ys)]
    if masked:  # past a sequence's end the carry keeps its value and y is 0
        f += ["        m = masks[t]", "        if m is not None:"]
        f += [f"            {n} = np.where(_widen(m, {r}), {n}, {a})" for n, a, r in zip(n_names, carry, ranks)]
        f += [f"            {q} = np.where(_widen(m, {r}), {q}, 0)" for q, r in zip(q_names, ranks[nc:])]
        f += ["            pass"]
    f += [f"        {y}[t] = {q}" for k, (y, q, v) in enumerate(zip(Y, q_names, ys))
          if direct.get(v) != f"{y}[t]" and aliases.get(v) != k]
    kept = parts.residuals if fission is None else fission.tuple_residuals
    if kept:
        f += [f"        residuals.append(({', '.join(kept)},))"]
    if carry:
        f += [f"        {', '.join(carry)}, = {', '.join(n_names)},"]
    f += [f"    return ({', '.join(carry)}{',' if carry else ''})"]
    stacked = [aliases.get(name, name) for name in stacks]
    if fission is None:
        return "\n".join(f), None, stacked, {}, {}
    over_xs = _over_xs(inside, xt, [v for v in stacks if v not in aliases], direct, set(kept) | set(stacks) |
                       set(new_carry) | set(ys), parts.shapes)
    over_xs = {stacks.index(name): k for name, k in over_xs.items()}
    stacks = stacked

    seeds = [f"g{k}" for k in range(nc + len(ys))]
    G, GX = [f"G{k}" for k in range(len(ys))], [f"GX{k}" for k in range(nx)]
    b = [("def backward_loop(times, g_carry, g_ys, residuals, stacks, captured, gxs, masks, sums, lefts, rights, "
          "zeros):"),
         "    " + _unpack(seeds[:nc], "g_carry"), "    " + _unpack(G, "g_ys"),
         "    " + _unpack(parts.captured_read_names, "captured"), "    " + _unpack(GX, "gxs"),
         "    " + _unpack(S, "stacks")]
    if hoisted:
        b.append("    " + _unpack(hoisted, "residuals[0]"))
    b += _body(parts.writer, b_before, "    ")
    for name, parent, index in reversed(fission.views):  # parents before their views
        b.append(f"    {_stack_name(name)} = {_stack_name(parent)}[:, {_index_source(index)}]")
    targets = {}  # x_t's cotangent is written into GX[t] by the op that makes it, if it can
    for j, i in enumerate(program.differentiable):
        if nc <= i < nc + nx and parts.backward_returns[j] != "None":
            targets.setdefault(_dense_base(parts.backward_returns[j], fission.per_step), f"GX{i - nc}[t]")
    row_sums = _row_sums(program, nc, nx, fission.per_step)
    per_step = [n for n in fission.per_step if n.out not in {name for name, _ in row_sums.values()}]
    body, direct = _written_into(parts.writer, per_step, targets, "        ", zeroed=True)  # gxs: zeros
    made = {n.out for n in fission.batched}
    if fission.batched:
        chunk, lines = _batched_lines(parts.writer, fission, direct, parts.backward_returns, parts.shapes)
        b.append(f"    for steps in _chunks(times, {chunk}):")
        b.append(f"        # what reads only forward values, for {chunk} steps at once")
        b.append("        lo, hi = min(steps), max(steps) + 1")
        b += lines
    loop_start = len(b)
    b.append("    for t in steps:" if fission.batched else "    for t in reversed(times):")
    if kept:
        b += [f"        {', '.join(kept)}, = residuals.pop()"]
    b += [f"        {v} = {_stack_name(v)}[t - lo]" if _stack_name(v) in made else f"        {v} = {_stack_name(v)}[t]"
          for v in fission.reads]
    b += [f"        {g} = {G_}[t]" for g, G_ in zip(seeds[nc:], G)]
    p_names = [f"p{k}" for k in range(nc)]
    if masked:  # padding passes the carry's cotangent through and gets none
        b += ["        m = masks[t]", "        if m is not None:"]
        b += [f"            {p} = np.where(_widen(m, {r}), 0, {g})" for p, g, r in zip(p_names, seeds, ranks)]
        b += [f"            {g} = np.where(_widen(m, {r}), {g}, 0)" for g, r in zip(seeds, ranks)] + ["            pass"]
    b += body
    carry_out, x_cotangents = {}, {}
    for j, i in enumerate(program.differentiable):
        r = parts.backward_returns[j]
        if i < nc:
            carry_out[i] = r
        elif i < nc + nx:
            if r != "None":
                if direct.get(_dense_base(r, fission.per_step)) != f"GX{i - nc}[t]":
                    b.append(f"        GX{i - nc}[t] = {r}")
                x_cotangents[r] = i - nc
        elif j in program.outer:
            # A factor that is also x_t's cotangent (an LSTM's gate cotangent) is already stacked in
            # GX (T, ...): it is not kept a second time.
            for side, factor in (("lefts", r[0]), ("rights", r[1])):
                if factor in x_cotangents:
                    k = x_cotangents[factor]
                    b.append(f"        {side}[{j}] = {k}  # the {side[:-1]} factors are GX{k}, already stacked")
                else:
                    b.append(f"        {side}[{j}].append({factor})")
        elif j in row_sums:
            continue
        elif r != "None":
            b.append(f"        np.add(sums[{j}], {r}, out=sums[{j}])")
    news = []
    for i in range(nc):
        r = carry_out.get(i, "None")
        news.append(f"zeros[{i}]" if r == "None" else r)
    if masked:
        b += ["        if m is not None:"] + [f"            {g} = {new} + {p}" for g, new, p in zip(seeds, news, p_names)]
        b += ["        else:"] + ([f"            {', '.join(seeds[:nc])}, = {', '.join(news)},"] if nc else ["            pass"])
    elif nc:
        b += [f"        {', '.join(seeds[:nc])}, = {', '.join(news)},"]
    if fission.batched:  # the step loop runs inside the chunk loop
        b[loop_start:] = ["    " + line for line in b[loop_start:]]
    b += [f"    # sums[{j}] = {name}: the sum of {where[0]}[{where[1]}]'s rows, after the loop"
          for j, (name, where) in row_sums.items()]
    b += [f"    return ({', '.join(seeds[:nc])}{',' if nc else ''})"]
    return "\n".join(f), "\n".join(b), stacks, row_sums, over_xs


def _makes_new_array(op) -> bool:
    """Whether ``op``'s kernel returns a new array, never a view of an input (a built-in that computes)."""
    return op.trusted and (op.elementwise or op in (ops.MATMUL, ops.ADDMM, ops.STANDARDIZE, ops.CONCATENATE))


def _over_xs(inside: list, xt: list, stacks: list, direct: dict, kept: set, shapes: dict) -> dict:
    """``{stack: k}``: the stacks whose step values may be written over ``x_t = X_k[t]`` when ``X_k``
    is donated (:func:`scan`'s ``donate_xs``): of x_t's shape and dtype, written after the step's
    last read of x_t or of a view of it, with x_t kept by nothing (no residual, stack, carry or y
    is x_t or a view of it).  The NumPy LSTM writes its gates over its projection this way."""
    written_at = {node.out: i for i, node in enumerate(inside)}
    over, taken = {}, set()
    for k, x in enumerate(xt):
        views, last_read = {x}, -1  # x_t and what may be a view of it
        for i, node in enumerate(inside):
            if views.intersection(node.args) or (node.into is not None and node.into[0] in views):
                last_read = i
                if not _makes_new_array(node.op):
                    views.add(node.out)
        if views & kept:
            continue
        for name in stacks:
            if name not in taken and name in written_at and shapes[name] == shapes[x] and (
                    name not in direct or written_at[name] > last_read):  # (else copied after the step)
                over[name] = k
                taken.add(name)
                break
    return over


def _row_sums(program: Program, nc: int, nx: int, per_step: list) -> dict:
    """The weights' cotangents that are ``sum_to(f, (n,))`` of a (B, n) factor the loop keeps for all
    steps anyway (a GRU's b_hn beside W_hh's outer product; x_t's cotangent in GX): summed once,
    over the stacked rows, after the loop, not per step.

    Returns ``{j: (name, where)}``: j indexes ``differentiable``, ``name`` is the per-step sum_to
    that is not run, ``where`` the factor's rows: ``("lefts" or "rights", j2)`` or ``("gxs", k)``."""
    parts = program.parts
    kept = {}
    for j, i in enumerate(program.differentiable):
        r = parts.backward_returns[j]
        if nc <= i < nc + nx and r != "None":
            kept.setdefault(r, ("gxs", i - nc))
    for j in program.outer:
        left, right = parts.backward_returns[j]
        kept.setdefault(left, ("lefts", j))
        kept.setdefault(right, ("rights", j))
    producers = {n.out: n for n in per_step}
    read = collections.Counter(a for n in per_step for a in n.args)
    read.update(x for r in parts.backward_returns for x in (r if isinstance(r, tuple) else (r,)))
    row_sums = {}
    for j, i in enumerate(program.differentiable):
        node = producers.get(parts.backward_returns[j])
        if i < nc + nx or j in program.outer or node is None or node.op is not ops.SUM_TO or read[node.out] != 1:
            continue
        f = node.args[0]
        shape = parts.shapes[f][0]
        if f in kept and len(shape) == 2 and tuple(node.params["shape"]) == shape[1:]:
            row_sums[j] = (node.out, kept[f])
    return row_sums


def _loops(program: Program, nc: int, nx: int, ranks: list, masked: bool):
    """The compiled loops of ``program`` (generated on first use, kept on it)."""
    key = (nc, nx, tuple(ranks), masked)
    loops = program.__dict__.setdefault("loops", {})
    if key not in loops:
        began = time.perf_counter()
        forward_source, backward_source, stacks, row_sums, over_xs = _loop_source(program, nc, nx, ranks, masked)
        namespace = dict(program.parts.writer.namespace, _widen=_widen, _chunks=_chunks)
        exec(forward_source, namespace)  # noqa: S102 - our own generated source
        if backward_source:
            exec(backward_source, namespace)  # noqa: S102
        # (shape, dtype) of one step, or the index of the y that is the stack
        stack_specs = [name if isinstance(name, int) else program.parts.shapes[name] for name in stacks]
        loops[key] = (namespace["forward_loop"], namespace.get("backward_loop"), stack_specs, row_sums, over_xs)
        STATS["build_seconds"] += time.perf_counter() - began
    return loops[key]


def _widen(mask: np.ndarray, ndim: int) -> np.ndarray:
    return mask.reshape(mask.shape[:1] + (1,) * (ndim - 1)) if ndim != mask.ndim else mask


class _Run:
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


def _split(packed, shapes) -> list:
    """Views of ``packed`` (an array or Tensor), one per shape, in order."""
    parts, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        part = packed[start:start + size]
        parts.append(part.reshape(shape) if isinstance(part, np.ndarray) else ops.reshape(part, shape))
        start += size
    return parts


def _record(op: Op, run: _Run, inputs: tuple, differentiate: bool) -> list:
    """The outputs of ``run`` as tensors: ONE tape entry for the packed array, then a view per output."""
    packed = Tensor._from_op(op, run.packed, inputs, {"run": run}) if differentiate else \
        Tensor._from_array(run.packed)
    return _split(packed, run.out_shapes)


def _rows(factors, gxs: list, order, steps: slice) -> np.ndarray:
    """The outer-product factors of the loop's steps as rows: a list of them (put in ``order`` if
    given), or an int: x's cotangents, stacked (T, B, n) in ``gxs``, of which the loop ran ``steps``."""
    if isinstance(factors, int):
        return gxs[factors][steps].reshape(-1, gxs[factors].shape[-1])
    return np.concatenate(factors if order is None else [factors[k] for k in order])


class _Loop(_Run):
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
        parts = _split(packed, self.out_shapes)
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
        return _differentiate_eagerly(outputs, self.carry_tensors + xs + self.captured, _split(g, self.out_shapes))


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


def _eager_scan(step, init, xs, reverse, masks):
    """The reference semantics of :func:`scan`: the loop in Python, every op on the tape."""
    x_leaves, x_structure = flatten(xs)
    T = x_leaves[0].shape[0]
    carry, ys = init, [None] * T
    for t in range(T - 1, -1, -1) if reverse else range(T):
        new_carry, y = step(carry, unflatten(x_structure, [x[t] for x in x_leaves]))
        carry, ys[t] = _masked_step(None if masks is None else masks[t], carry, new_carry, y)
    y_structure = flatten(ys[0])[1]
    stacked = [ops.stack([flatten(y)[0][k] for y in ys]) for k in range(len(flatten(ys[0])[0]))]
    return carry, unflatten(y_structure, stacked)


def _masked_step(mask, carry, new_carry, y):
    """One step's (carry, y) under its padding mask: where False the carry keeps its value and y is 0."""
    if mask is None:
        return new_carry, y
    old = flatten(carry)[0]
    new_leaves, structure = flatten(new_carry)
    new_carry = unflatten(structure, [ops.where(_widen(mask, n.ndim), n, o) for n, o in zip(new_leaves, old)])
    y_leaves, y_structure = flatten(y)
    return new_carry, unflatten(y_structure, [ops.where(_widen(mask, v.ndim), v, 0) for v in y_leaves])


def _trace_step(step, carry_leaves, carry_structure, x_leaves, x_structure, first: int, standins=None,
                x_requires=None) -> _Trace:
    """Trace ``step(carry, xs[first])``: the program of one step of :func:`scan` (on ``standins``
    for the carry leaves and x_t, if given: then the trace is that step's real graph; ``x_requires``
    then says which leaves of xs require grad, as the first step's trace read them)."""
    def body(*leaves):
        carry = unflatten(carry_structure, list(leaves[:len(carry_leaves)]))
        new_carry, y = step(carry, unflatten(x_structure, list(leaves[len(carry_leaves):])))
        return _in_order_of(new_carry, carry_structure), y

    args = None if standins is not None else [c._data for c in carry_leaves] + [x._data[first] for x in x_leaves]
    requires = [True] * len(carry_leaves) + (x_requires or [x._requires_grad for x in x_leaves])
    tr = trace(body, args, (tuple, ((len(carry_leaves), carry_structure), (len(x_leaves), x_structure))), requires,
               standins)
    out_carry, _ = unflatten(tr.out_structure, tr.outputs)
    out_leaves, out_structure = flatten(out_carry)
    if out_structure != carry_structure or any(
            (o.shape, o.dtype) != (c.shape, c.dtype) for o, c in zip(out_leaves, carry_leaves)):
        raise TypeError(
            "scan: the step must return a carry of the structure, shapes and dtypes it received; got "
            f"{_describe(out_carry)} for {_describe(unflatten(carry_structure, carry_leaves))}")
    return tr


def _in_order_of(tree, structure):
    """``tree`` with each dict's keys in the order ``structure`` (from :func:`flatten`) has them, where
    they are the same keys: a step may build its carry's dict anew, as eager allows."""
    if structure is None or not isinstance(tree, (dict, list, tuple)):
        return tree
    kind, shapes = structure
    if kind is dict:
        keys, inner = shapes
        if not isinstance(tree, dict) or set(tree) != set(keys):
            return tree
        return dict(zip(keys, _in_order_of([tree[k] for k in keys], inner)))
    if not isinstance(tree, kind) or len(tree) != len(shapes):
        return tree
    return kind(_in_order_of(item, sub) for item, (_, sub) in zip(tree, shapes))


def _describe(tree) -> str:
    """A nest's structure with each leaf as its shape and dtype, for error messages."""
    if isinstance(tree, Tensor):
        return f"{tree.dtype}{list(tree.shape)}"
    if isinstance(tree, dict):
        return "{" + ", ".join(f"{k!r}: {_describe(v)}" for k, v in tree.items()) + "}"
    inner = ", ".join(_describe(v) for v in tree)
    return f"({inner}{',' if len(tree) == 1 else ''})" if isinstance(tree, tuple) else f"[{inner}]"


def _with_last_row(ys, y, index):
    """``ys`` with ``y`` as its row ``index``, written in place: the scan's packed output has that row
    left for the last step, which runs on the tape."""
    ys[index] = y
    return ys


# ys from the compiled loop (every row but the last step's) and that step's y.  The loop's VJP never
# reads the cotangent of the row it did not compute, so ``g`` passes to it as it is.
WITH_LAST_ROW = trust(defvjp(primitive(_with_last_row, "with_last_row"),
                             lambda g, ans, ys, y, index: g, lambda g, ans, ys, y, index: g[index]))


def scan_source(step, init, xs, masked: bool = False) -> str:
    """The Python source :func:`scan` generates for ``step`` on ``init`` and ``xs``: the step's forward
    and backward programs, and the loops that run them (with padding masks if ``masked``).

    This is the backward pass reverse mode derived for the step, written out: the cotangents of the
    carry, of ``xs`` if it requires grad, and of the captured tensors that require grad (weights).
    """
    carry_leaves, carry_structure = flatten(init)
    x_leaves, x_structure = flatten(xs)
    tr = _trace_step(step, carry_leaves, carry_structure, x_leaves, x_structure, 0)
    program = tr.build(True)
    nc = len(carry_leaves)
    ranks = [c.ndim for c in carry_leaves] + [t.ndim for t in tr.outputs[nc:]]
    forward_loop, backward_loop, _, _, _ = _loop_source(program, nc, len(x_leaves), ranks, masked)
    return "\n\n".join(part for part in (program.source(), forward_loop, backward_loop) if part)


_DONATED = weakref.WeakValueDictionary()  # id -> each array a loop has written over (donate_xs)


def refuse_donated(tensors, where: str):
    """Raise if one of ``tensors`` is memory an earlier loop was donated: it holds that loop's saved
    activations now, not its old values (JAX refuses a donated buffer the same way).

    Raises:
        RuntimeError: naming ``where`` and the tensor's shape.
    """
    for t in tensors:
        owner = entries.owner(t._data)
        if _DONATED.get(id(owner)) is owner:
            raise RuntimeError(
                f"{where}: a tensor of shape {t.shape} was donated to an earlier compiled loop, which wrote its "
                "activations over it; compute it anew instead of keeping it (e.g. a cell's project)")


def _donate(over_xs: dict, stacks: list, x_leaves: list, others: list) -> list:
    """Put each stack that may go over a donated xs (:func:`_over_xs`) into that tensor's array, if
    the array is contiguous, shares no memory with the loop's other inputs and holds values only
    recorded ops made, none saving them; returns which xs were so donated."""
    donated = []
    for s, k in over_xs.items():
        x = x_leaves[k]._data
        if x.flags.c_contiguous and x.flags.writeable and donatable(x_leaves[k]) and \
                not any(np.may_share_memory(x, other) for other in others + [y._data for y in x_leaves] if other is not x):
            stacks[s] = x
            donated.append(k)
            _DONATED[id(entries.owner(x))] = entries.owner(x)
    return donated


def donatable(t: Tensor, made_after: int = -1) -> bool:
    """Whether a loop may write over the memory of ``t`` (any shape and dtype) and replay its tape to
    get it back: its values were made by recorded ops, each newer than the tape entry index
    ``made_after``, whose VJP rules read none of them (:func:`minigrad.extend.saves`).  A leaf, a
    view of one, or memory an op saved for its backward is not donatable."""
    return _made_by_ops(t, entries.owner(t._data), made_after)


def _made_by_ops(t: Tensor, memory: np.ndarray, made_after: int) -> bool:
    # A function of its own, not a recursive closure: that would be a reference cycle holding
    # ``memory`` until the garbage collector ran (a checkpointed LSTM's peak went 158 -> 241 MB).
    entry = t._entry
    if entry is None or entry.inputs is None or entry.index <= made_after or entry.op.saves_output \
            or entry.op.saved_inputs is None:
        return False
    return all(i not in entry.op.saved_inputs and _made_by_ops(x, memory, made_after)
               for i, x in enumerate(entry.inputs) if np.may_share_memory(x._data, memory))


def _recompute(t: Tensor, memory: np.ndarray) -> Tensor:
    """``t`` made again, recorded, by replaying the tape entries that wrote its values into ``memory``
    (a donated array, since written over): the same function of the same inputs."""
    entry = t._entry
    inputs = tuple(_recompute(x, memory) if np.may_share_memory(x._data, memory) else x for x in entry.inputs)
    return entry.op(*inputs, **entry.params)


def scan(step, init, xs, reverse: bool = False, masks=None, compile: bool = True,  # noqa: A002
         donate_xs: bool = False, generators=()):
    """Loop ``step`` over the leading axis of ``xs``, compiled (JAX's ``lax.scan``).

    ``step(carry, x_t) -> (carry, y_t)``: ``carry`` is a Tensor or a nest (tuples, lists, dicts)
    of Tensors, kept the same structure, shapes and dtypes by ``step``; ``x_t`` is ``xs`` (a
    Tensor (T, ...) or a nest of them) at one step; ``y_t`` a Tensor or nest.  Returns
    ``(final carry, ys)`` with every leaf of ``ys`` stacked to (T, ...).  ``reverse=True`` runs
    t = T-1 .. 0 (ys still in time order).  ``masks``: None or T entries, each None or a (B,)
    or (B, 1) bool array: where False, the step is padding — the carry keeps its old value,
    ``y_t`` is 0, and no gradient flows through that step (the sequence driver's ``lengths``).

    Every call traces the first step (one eager step on stand-ins) and runs every step but the
    last as that program, in generated NumPy (see :class:`Program`), as ONE tape entry: its VJP
    runs the compiled step backward from the last of them to the first and sums every captured
    weight's ``x_t.T @ g_t`` terms in one matmul.  The last step runs on the tape, traced: the
    final carry is that step's own tensor, so its hooks and ``retain_grad`` see what flows back
    from ``ys`` too, as eager's; and it must record the first step's program (the same ops,
    parameters, captured tensors and constant values), else the loop runs eagerly with a
    ``RuntimeWarning``.  So does a step that reads a tensor's values, changes a tensor in place,
    or draws from one of ``generators`` (the ``numpy.random.Generator`` objects it may draw from;
    the sequence driver passes the cell's): they are restored first, so the eager loop draws
    what a plain eager call would.  Nothing is cached but programs keyed by what the trace
    recorded, so whatever the step reads (closure values, rebound tensors, ``training``,
    ``requires_grad``) is this call's.  ``create_graph=True`` through it runs the step program
    again as minigrad ops on the loop's own inputs and differentiates that, so higher
    derivatives are exact.  ``compile=False``, anomaly mode, forward mode, a single step, or
    leaves of several dtypes run the loop eagerly (the reference semantics).

    ``donate_xs=True`` gives the loop the memory of ``xs`` (JAX's buffer donation): a forward value
    it saves for backward, of x_t's shape, is written over x_t once the step has read it, as the
    NumPy LSTM writes its gates over its input projection; ``xs`` then holds those values.  Pass
    it only for ``xs`` nothing else reads afterwards (the sequence driver donates the projection
    it made).  A leaf of ``xs`` is taken only if recorded ops made it and none of their VJP rules
    read it (:func:`minigrad.extend.saves`); it is marked changed in place, so anything else that
    saved it refuses in backward, reading it afterwards raises ``RuntimeError`` (as JAX refuses
    a donated buffer), and ``create_graph`` through the loop recomputes it from its tape.

    Raises:
        ValueError: ``xs`` has no steps, or leaves of different lengths.
        TypeError: ``step`` returns a carry of another structure, shape or dtype (as JAX; a dict
            may come back with its keys in another order).
        RuntimeError: a leaf of ``xs`` or ``init`` is memory an earlier loop was donated.
    """
    x_leaves, x_structure = flatten(xs)
    carry_leaves, carry_structure = flatten(init)
    if not x_leaves or x_leaves[0].ndim == 0 or x_leaves[0].shape[0] == 0:
        raise ValueError("scan: xs needs at least one step (a leading axis of length >= 1)")
    T = x_leaves[0].shape[0]
    if any(x.ndim == 0 or x.shape[0] != T for x in x_leaves):
        raise ValueError(f"scan: every leaf of xs needs the same leading length; got {[x.shape for x in x_leaves]}")
    refuse_donated(x_leaves + carry_leaves, "scan")
    mode = MODE.get()
    # Forward mode pushes tangents eagerly; one step is its own last step, which runs on the tape anyway.
    if not compile or mode.anomaly or mode.tracing or mode.forward or T == 1:
        return _eager_scan(step, init, xs, reverse, masks)
    generators = list(generators)
    states = generator_states(generators)
    try:
        result = _compiled_scan(step, carry_leaves, carry_structure, x_leaves, x_structure, reverse, masks,
                                donate_xs, generators)
    except TraceError as error:
        set_generator_states(generators, states)  # eager draws what it would have drawn
        warnings.warn(f"scan: running the loop eagerly: {error}", RuntimeWarning, stacklevel=2)
        xs = unflatten(x_structure, getattr(error, "xs", x_leaves))
        return _eager_scan(step, init, xs, reverse, masks)
    return _eager_scan(step, init, xs, reverse, masks) if result is None else result


def _compiled_scan(step, carry_leaves, carry_structure, x_leaves, x_structure, reverse, masks, donate_xs, generators):
    """:func:`scan` compiled: the first step traced, every step but the last run as its program (ONE
    tape entry), then the last step traced on that entry's outputs: its graph is the real one, so
    the final carry's hooks and ``retain_grad`` see every term, as eager's; and its program must be
    the first's.  None where the loop must run eagerly without a warning (outputs of several dtypes).

    Raises:
        TraceError: the step cannot be compiled (it reads values, changes a tensor in place, draws
            from ``generators``, or records another program at its last step than at its first).
    """
    T, nc = x_leaves[0].shape[0], len(carry_leaves)
    times = list(range(T - 1, -1, -1)) if reverse else list(range(T))
    states = generator_states(generators)
    tr = _trace_step(step, carry_leaves, carry_structure, x_leaves, x_structure, times[0])
    if generator_states(generators) != states:
        raise TraceError("the step draws from its module's random generator (a mask drawn at every step); one "
                         "program would repeat the first draw; draw it in project, once per sequence")
    differentiate = MODE.get().grad_enabled and any(t._requires_grad for t in carry_leaves + x_leaves + tr.captured)
    dtypes = {t.dtype for t in tr.outputs}
    if len(dtypes) != 1 or next(iter(dtypes)).kind != "f":
        return None
    program = _program(tr, differentiate)

    loop_times = times[:-1]
    captured = [t._data for t in tr.captured]
    y_shapes = [(T,) + t.shape for t in tr.outputs[nc:]]
    out_shapes = [c.shape for c in carry_leaves] + y_shapes
    packed = np.empty(sum(math.prod(s) for s in out_shapes), next(iter(dtypes)))
    parts = _split(packed, out_shapes)
    ys = parts[nc:]
    residuals = [] if differentiate else None
    ranks = [c.ndim for c in carry_leaves] + [t.ndim for t in tr.outputs[nc:]]
    forward_loop, _, stack_specs, _, over_xs = _loops(program, nc, len(x_leaves), ranks, masks is not None)
    stacks = [ys[spec] if isinstance(spec, int) else None for spec in stack_specs]
    donated = _donate(over_xs, stacks, x_leaves, [c._data for c in carry_leaves] + captured) \
        if donate_xs and differentiate else []
    stacks = [np.empty((T,) + spec[0], spec[1]) if stack is None else stack for stack, spec in zip(stacks, stack_specs)]
    carry = forward_loop(loop_times, [c._data for c in carry_leaves], [x._data for x in x_leaves], captured, ys,
                         residuals, stacks, masks)
    for part, c in zip(parts, carry):
        part[...] = c
    x_last = [x[times[-1]] for x in x_leaves]  # before the donated memory is marked: slicing saves nothing
    for k in donated:  # what saved these values now refuses in backward; the loop's entry comes after
        x_leaves[k]._mark_changed()
        x_leaves[k]._data = x_leaves[k]._data.view(DonatedArray)
    run = _Loop(program, carry_leaves, x_leaves, tr.captured, loop_times, masks, residuals, stacks, ranks, packed,
                out_shapes, donated)
    leaves = _record(SCAN, run, tuple(carry_leaves) + tuple(x_leaves) + tuple(tr.captured), differentiate)
    try:
        return _last_step(step, leaves[:nc], carry_structure, x_last, x_structure, times[-1], masks, leaves[nc:],
                          differentiate, tr, [x._requires_grad for x in x_leaves])
    except TraceError as error:
        error.xs = [_recompute(x, entries.owner(x._data)) if k in donated else x for k, x in enumerate(x_leaves)]
        raise


def _last_step(step, carry_leaves, carry_structure, x_t, x_structure, t: int, masks, ys, differentiate: bool,
               first, x_requires):
    """Step ``t`` traced on the tape from ``carry_leaves`` and ``x_t`` (the xs leaves at t): the final
    carry, and ys with its y as row t.

    ``ys``: the loop's outputs (T, ...), every row written but t's.
    ``first``: the first step's trace, whose program this one must record too.
    """
    standins = [v if v._requires_grad else _leaf_requiring_grad(v._data) for v in list(carry_leaves) + x_t]
    tr = _trace_step(step, carry_leaves, carry_structure, x_t, x_structure, t, standins, x_requires)
    if first is not None:
        check_same_program(first, tr, "the step")
    outputs = tr.outputs if differentiate else [Tensor._from_array(o._data) for o in tr.outputs]
    new_carry, y = unflatten(tr.out_structure, outputs)
    mask = None if masks is None else masks[t]
    new_carry, y = _masked_step(mask, unflatten(carry_structure, list(carry_leaves)), new_carry, y)
    y_leaves, y_structure = flatten(y)
    if differentiate:
        stacked = [WITH_LAST_ROW(full, v, index=t) for full, v in zip(ys, y_leaves)]
    else:
        for full, v in zip(ys, y_leaves):
            full._data[t] = v._data
        stacked = ys
    return new_carry, unflatten(y_structure, stacked)


def _leaf_requiring_grad(data: np.ndarray) -> Tensor:
    t = Tensor._from_array(data)
    t._requires_grad = True
    return t


# --------------------------------------------------------------------------- compile
class _Call(_Run):
    """One call of a compiled function (:func:`compile`)."""

    def __init__(self, program, args, captured, residuals, out_shapes, packed):
        self.program, self.args, self.captured = program, args, captured
        self.residuals, self.out_shapes, self.packed = residuals, out_shapes, packed
        self.cotangents = None

    def _backward(self, packed_cotangent: np.ndarray) -> list:
        program, inputs = self.program, self.args + self.captured
        captured = [self.captured[k]._data for k in program.captured_read]
        results = program.backward(*_split(packed_cotangent, self.out_shapes), *self.residuals, *captured)
        grads = [None] * len(inputs)
        for j, i in enumerate(program.differentiable):
            r = results[j]
            grads[i] = r[0].T @ r[1] if j in program.outer else r
        unreached = _unreached(program, len(inputs))
        return [None if i in unreached else np.zeros(x.shape, x.dtype) if g is None else np.asarray(g, x.dtype)
                for i, (g, x) in enumerate(zip(grads, inputs))]

    def _eager_cotangents(self, g: Tensor) -> list:  # the program as minigrad ops, as a loop's
        outputs = _interpret(self.program, dict(zip(self.program.parts.input_names, self.args + self.captured)))
        return _differentiate_eagerly(outputs, self.args + self.captured, _split(g, self.out_shapes))


class Compiled:
    """``minigrad.compile(fn)``: ``fn`` run eagerly, its backward run as one generated program.

    Every call runs ``fn`` itself, so the forward is eager's to the bit: whatever ``fn`` reads
    (closure and global values, rebound tensors, a module's ``training`` flag, ``requires_grad``,
    a tensor's values), its in-place changes and random draws are this call's own, as in eager.
    Nothing a call depends on is baked into a program, so no guard can go stale (torch.compile
    guards what its trace read; here the trace is the call).  The tape the call recorded is then
    read as a program (:func:`read_tape`), keyed by its ops, wiring, parameters, shapes, dtypes and
    ``requires_grad``: a known key reuses its generated backward, a new one derives it once.  The
    call's graph becomes ONE tape entry whose VJP is that backward, on this call's own values
    (the residuals) and captured tensors; ``backward``/``grad``, hooks on the outputs, in-place
    version checks and ``create_graph=True`` (the program run again as minigrad ops) work through it.

    The call keeps its eager graph instead, with the same values and gradients, where a program
    could not give eager's: under ``no_grad`` or forward mode (nothing to compile), in anomaly
    mode, when an output is computed from another output (a hook on the first would miss the
    second's term) or a tensor between them has a hook or ``retain_grad``, when a value the tape
    saved was changed in place (backward then refuses, as eager), when it ran a compiled loop, a
    compiled function or a checkpoint, and when outputs are not Tensors of one float dtype.  Where
    a VJP rule cannot be written as a program (it makes a constant from values), the call keeps
    its graph with one ``RuntimeWarning`` saying why.

    At most ``cache_size`` programs are kept (least recently used goes first).

    Raises:
        TypeError: ``fn`` is not callable; ``cache_size`` is not a positive int.
    """

    def __init__(self, fn, cache_size: int = 64):
        if not callable(fn):
            raise TypeError(f"compile: expected a function; got {type(fn).__name__}")
        if type(cache_size) is not int or cache_size < 1:
            raise TypeError(f"compile: cache_size must be a positive int; got {cache_size!r}")
        self.fn, self.cache_size = fn, cache_size
        self._programs: collections.OrderedDict = collections.OrderedDict()
        functools.update_wrapper(self, fn)

    def __call__(self, *args):
        mode = MODE.get()
        if not mode.grad_enabled or mode.anomaly or mode.tracing or mode.forward:
            return self.fn(*args)
        leaves, structure = flatten(list(args))
        start = next(entries.ENTRY_INDEX)
        result = self.fn(*args)
        tr = self._read(leaves, result, start, structure)
        program = None if tr is None else self._program(tr)
        if program is None:
            return result
        values = {name: t for t, name in tr.slots.items()}
        residuals = [values[name]._data for name in program.parts.residuals]
        outputs = tr.outputs
        packed = np.concatenate([np.ravel(t._data) for t in outputs]) if outputs else np.empty(0)
        run = _Call(program, leaves, tr.captured, residuals, [t.shape for t in outputs], packed)
        return unflatten(tr.out_structure, _record(CALL, run, tuple(leaves) + tuple(tr.captured), True))

    @staticmethod
    def _read(leaves, result, start, structure) -> _Trace | None:
        """This call's tape as a program's trace, or None where its eager graph must stay."""
        try:
            outputs = flatten(result)[0]
        except TypeError:
            return None
        if not all(t._requires_grad for t in outputs) or len({t.dtype for t in outputs}) != 1 \
                or outputs[0].dtype.kind != "f" or len(set(outputs)) != len(outputs) or len(set(leaves)) != len(leaves):
            return None
        tr = read_tape(leaves, result, start, structure, [t._requires_grad for t in leaves])
        for t in tr.order:
            entry = t._entry
            if t._hooks or t._retains_grad or "run" in entry.params:  # a hook, or a compiled run inside
                return None
            if entry.clock != entries.CLOCK.tick:
                try:
                    entries.check_versions(t, entry)
                except RuntimeError:
                    return None  # backward refuses it, as it refuses eager's graph
        if any(t._entry is None or t._entry.index < start for t in outputs) or _an_output_feeds_another(outputs, start):
            return None
        return tr

    def _program(self, tr: _Trace) -> Program | None:
        key = tr.key
        if key in self._programs:
            self._programs.move_to_end(key)
            return self._programs[key]
        program = None
        try:
            with _hooks_suspended(tr.slots):
                program = tr.build(True)
        except TraceError as error:
            warnings.warn(f"compile: {getattr(self.fn, '__name__', 'fn')} keeps its eager graph: {error}",
                          RuntimeWarning, stacklevel=3)
        self._programs[key] = program
        if len(self._programs) > self.cache_size:
            self._programs.popitem(last=False)
        return program

    def source(self, *args) -> str:
        """The generated forward and backward programs for a call with ``args`` (``fn`` runs once
        for it); empty where that call keeps its eager graph."""
        leaves, structure = flatten(list(args))
        with modes.enable_grad():
            start = next(entries.ENTRY_INDEX)
            tr = self._read(leaves, self.fn(*args), start, structure)
        program = None if tr is None else self._program(tr)
        return "" if program is None else program.source()


def _an_output_feeds_another(outputs: list, start: int) -> bool:
    """Whether an op recorded since entry ``start`` on the way to one output read another output."""
    returned = set(outputs)
    for out in outputs:
        stack, seen = list(out._entry.inputs), set()
        while stack:
            t = stack.pop()
            if t in returned:
                return True
            if t not in seen and t._entry is not None and t._entry.index >= start:
                seen.add(t)
                stack.extend(t._entry.inputs)
    return False


@contextlib.contextmanager
def _hooks_suspended(tensors):
    """No hook of ``tensors`` runs inside (deriving a backward program runs reverse mode over a trace)."""
    hooked = [(t, t._hooks) for t in tensors if t._hooks]
    for t, _ in hooked:
        t._hooks = None
    try:
        yield
    finally:
        for t, hooks in hooked:
            t._hooks = hooks


def compile(fn=None, *, cache_size: int = 64):  # noqa: A001 - torch.compile's name
    """``fn`` with its backward as one generated program, read off each call's tape: see :class:`Compiled`.

    ``fn(*args)`` takes Tensors (or nests of them) and returns a Tensor or a nest of Tensors of
    one float dtype.  Usable as ``@minigrad.compile`` or ``minigrad.compile(fn)``.

    Raises:
        TypeError: ``fn`` is not callable; ``cache_size`` is not a positive int.
    """
    if fn is None:
        return functools.partial(compile, cache_size=cache_size)
    return Compiled(fn, cache_size)
