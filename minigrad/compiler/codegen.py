"""The program's IR (``_Node``: ``out = op(*args, **params)``), the writer that names its values and ops,
and :class:`Program`: a traced function as generated NumPy source, executed.
"""
from __future__ import annotations

import builtins
import keyword
import re

import numpy as np

from .. import _kernels as K
from ..extend import Op, primitive


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


# --------------------------------------------------------------------------- the loops' unpacking lines
def _unpack(names: list, source: str) -> str:
    return f"{', '.join(names)}, = {source}" if names else f"_ = {source}"


# Kernels that take ``out=`` as a ufunc does, and like one return a new array without it.
_OUT_KERNELS = (K.sigmoid, K.relu, K.relu_backward, K.tanh_derivative, K.sigmoid_derivative)


def _writes_into(forward) -> bool:
    """Whether ``forward`` takes ``out=``, as NumPy's ufuncs do (and some of our kernels)."""
    return isinstance(forward, np.ufunc) or forward in _OUT_KERNELS
