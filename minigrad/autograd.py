"""The tape and reverse mode.

Every differentiable op that touches a tensor which requires grad records a
:class:`TapeEntry` on its output: the op, its inputs, its parameters and the
versions of its inputs.  Following ``_entry.inputs`` from a tensor walks the
tape backwards; sorting those entries topologically gives the Wengert list
that produced the tensor (see :func:`tape`).

Reverse mode walks that list from the output to the leaves, calling each op's
vector-Jacobian product (VJP) rule on the incoming cotangent.  VJP rules are
written with minigrad ops, so when ``create_graph=True`` the backward pass is
itself recorded and can be differentiated again (Hessian-vector products).

The walk is iterative (an explicit stack, never recursion), so a graph
100,000 ops deep back-propagates in time linear in its size.
"""
from __future__ import annotations

import contextlib
import itertools
import traceback
from pathlib import Path

import numpy as np


class _State:
    """Process-wide switches (not thread-local, unlike PyTorch's)."""

    grad_enabled = True
    anomaly = False
    # A clock ticked by every in-place change; a tensor's ``_version`` is the tick of its
    # last change, so an entry only has to look at its inputs if the clock moved since.
    version_clock = 0


STATE = _State()
_NO_PARAMS: dict = {}
_PACKAGE_DIR = str(Path(__file__).resolve().parent)


# --------------------------------------------------------------------------- modes
class _GradMode(contextlib.ContextDecorator):
    """Base of :class:`no_grad` / :class:`enable_grad`: a context manager and decorator."""

    enabled: bool

    def __enter__(self):
        self._previous = STATE.grad_enabled
        STATE.grad_enabled = self.enabled
        return self

    def __exit__(self, *exc_info):
        STATE.grad_enabled = self._previous
        return False

    def _recreate_cm(self):  # a fresh instance per decorated call, so nesting is safe
        return type(self)()


class no_grad(_GradMode):
    """Disable recording on the tape (``with minigrad.no_grad():`` or ``@minigrad.no_grad()``).

    Ops run on raw arrays and return tensors that do not require grad, as
    ``torch.no_grad`` does.  Used for evaluation, sampling and optimizer steps.
    """

    enabled = False


class enable_grad(_GradMode):
    """Re-enable recording inside a :class:`no_grad` block (as ``torch.enable_grad``)."""

    enabled = True


def is_grad_enabled() -> bool:
    """Whether ops currently record on the tape."""
    return STATE.grad_enabled


class detect_anomaly(contextlib.ContextDecorator):
    """Raise at the first op whose forward output or backward cotangent holds NaN or Inf.

    Inside it every tape entry remembers where (file:line) it was created, and
    the error names the op and that place, as ``torch.autograd.detect_anomaly``
    does.  It slows every op down: use it to debug, not to train.
    """

    def __enter__(self):
        self._previous = STATE.anomaly
        STATE.anomaly = True
        return self

    def __exit__(self, *exc_info):
        STATE.anomaly = self._previous
        return False

    def _recreate_cm(self):
        return type(self)()


def _user_frame() -> str:
    """The innermost stack frame outside minigrad itself, as 'file:line in function'."""
    for frame in reversed(traceback.extract_stack()[:-1]):
        if not frame.filename.startswith(_PACKAGE_DIR):
            return f"{frame.filename}:{frame.lineno} in {frame.name}"
    return "<unknown>"


def _check_finite(array, what: str, op_name: str, created_at: str | None):
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        where = f" (op created at {created_at})" if created_at else ""
        raise FloatingPointError(f"detect_anomaly: {op_name} {what} holds NaN or Inf{where}")


# --------------------------------------------------------------------------- ops & tape
class Op:
    """A differentiable primitive: a name and its vector-Jacobian product rules.

    ``rules[i](g, ans, *inputs, **params)`` returns the cotangent of input ``i``
    given the output cotangent ``g`` and the output ``ans`` (all tensors), in the
    style of HIPS autograd's ``defvjp``.  Ops with any number of inputs
    (concatenate) pass ``variadic_rule(i, g, ans, inputs, **params)`` instead.

    ``accumulate(buffer, g, **params)``, optional, adds the cotangent of the
    (single) input into a dense NumPy ``buffer`` in place.  Reverse mode uses it
    when no graph is being built: backprop through ``x[t]`` for every step t
    then costs O(slice) per step instead of a full-size scatter (linear BPTT).

    ``outer(i, g, ans, *inputs, **params) -> (left, right) or None``, optional, writes the
    cotangent of input ``i`` as the NumPy product ``left.T @ right``.  Reverse
    mode (again without a graph) keeps those factors and sums all of them with
    ONE matmul over their stacked rows when the input's cotangent is needed:
    a weight used at every time step gets its gradient as a hand-written BPTT
    computes it, not as T small matmuls and T weight-sized temporaries.
    """

    __slots__ = ("name", "rules", "variadic_rule", "accumulate", "outer")

    def __init__(self, name: str, *rules, variadic_rule=None, accumulate=None, outer=None):
        self.name = name
        self.rules = rules
        self.variadic_rule = variadic_rule
        self.accumulate = accumulate
        self.outer = outer

    def __repr__(self):
        return f"Op({self.name})"


class TapeEntry:
    """One line of the tape: ``op(inputs, **params)`` produced the tensor that owns it.

    ``clock`` is the in-place version clock when the op ran: if an input or the
    output was changed in place after that, the saved values are stale and
    backward refuses (PyTorch's version counter check).
    ``inputs`` is set to None once backward has freed the entry.
    ``index`` numbers entries in the order the ops ran: every input of an op was
    made before it, so sorting by ``index`` orders a graph topologically (as
    PyTorch's sequence numbers).
    """

    __slots__ = ("op", "inputs", "params", "clock", "index", "created_at")

    def __init__(self, op: Op, inputs: tuple, params: dict):
        self.op = op
        self.inputs = inputs
        self.params = params
        self.clock = STATE.version_clock
        self.index = next(_ENTRY_INDEX)
        self.created_at = _user_frame() if STATE.anomaly else None


_ENTRY_INDEX = itertools.count()


class TapeLine:
    """A printable view of one tape entry: index, op, inputs and output."""

    __slots__ = ("index", "op", "inputs", "output", "_names")

    def __init__(self, index, op, inputs, output, names):
        self.index, self.op, self.inputs, self.output, self._names = index, op, inputs, output, names

    def __str__(self):
        def show(t):
            return f"{self._names[id(t)]}{list(t.shape)}"

        args = ", ".join(show(t) for t in self.inputs)
        return f"{self.index:>4}: {show(self.output)} = {self.op}({args})"

    __repr__ = __str__


def tape(output) -> list:
    """The Wengert list of the ops that produced ``output``, in execution order.

    Returns a list of :class:`TapeLine` (``index, op, inputs, output``); ``print``
    one per line, e.g. ``   2: %2[3] = mul(%1[3], x0[3])``.  Leaves are named
    ``x0, x1, ...``; the output of entry ``k`` is ``%k``.  Tensors that do not
    require grad (constants) are named ``c0, c1, ...``.

    Raises:
        RuntimeError: if part of the graph was already freed by a backward pass.
    """
    names, lines, counts = {}, [], {"x": 0, "c": 0}

    def name(t, kind):
        if id(t) not in names:
            names[id(t)] = f"{kind}{counts[kind]}"
            counts[kind] += 1

    for t in _topological_order([output]):
        if t._entry is None:
            continue
        for x in t._entry.inputs:  # leaves and constants are named in order of first use
            name(x, "x" if x.requires_grad else "c")
        names[id(t)] = f"%{len(lines)}"
        lines.append(TapeLine(len(lines), t._entry.op.name, t._entry.inputs, t, names))
    return lines


# --------------------------------------------------------------------------- reverse mode
_FREED = (
    "Trying to backward through the graph a second time (or after its saved values were freed): "
    "pass retain_graph=True to the first backward() / grad() call if you need to do this"
)


def _topological_order(roots) -> list:
    """Tensors that require grad reachable from ``roots``, inputs before outputs.

    A traversal collects them and a sort by entry index orders them: every op's
    inputs ran before it (no recursion, so graphs of any depth work).  Leaves
    come first, so reverse mode reaches them last.  Tensors hash by identity,
    so they key the sets and dicts of reverse mode directly.
    """
    seen, leaves, made = set(roots), [], []
    stack = list(seen)
    while stack:
        t = stack.pop()
        entry = t._entry
        if entry is None:
            leaves.append(t)
            continue
        if entry.inputs is None:
            raise RuntimeError(_FREED)
        made.append((entry.index, t))  # indices are unique: the sort never compares tensors
        for x in entry.inputs:
            if x.requires_grad and x not in seen:
                seen.add(x)
                stack.append(x)
    made.sort()
    return leaves + [t for _, t in made]


def _accumulate(grads: dict, owned: set, x, g, create_graph: bool):
    """Add cotangent ``g`` into ``grads[x]``; in place once we own a buffer."""
    previous = grads.get(x)
    if previous is None:
        grads[x] = g
    elif create_graph:
        grads[x] = previous + g
    elif x in owned:
        previous._data += g._data
    else:  # the first sum allocates a buffer of our own; later ones reuse it
        grads[x] = type(g)._wrap(previous._data + g._data)
        owned.add(x)


def run_backward(outputs, cotangents, retain_graph: bool, create_graph: bool, inputs=None):
    """Reverse-mode sweep from ``outputs`` seeded with ``cotangents``.

    With ``inputs=None`` gradients are accumulated into the ``.grad`` of leaves
    (``Tensor.backward``); otherwise the cotangents reaching ``inputs`` are
    returned in a list (``minigrad.grad``), ``None`` where none arrived, and
    only the part of the graph that leads to them is evaluated.
    """
    order = _topological_order(outputs)
    wanted = None
    if inputs is not None:  # each input's positions: the same tensor may be asked for twice
        wanted = {}
        for i, x in enumerate(inputs):
            wanted.setdefault(x, []).append(i)
    needed = None
    if wanted is not None:  # prune: only walk entries from which some input is reachable
        needed = set()
        for t in order:
            if t in wanted or (t._entry is not None and any(x in needed for x in t._entry.inputs)):
                needed.add(t)
    results = None if inputs is None else [None] * len(inputs)

    grads, owned, factors = {}, set(), {}
    for out, g in zip(outputs, cotangents):
        _accumulate(grads, owned, out, g, create_graph)

    previous_mode, anomaly = STATE.grad_enabled, STATE.anomaly
    STATE.grad_enabled = create_graph
    STATE.anomaly = False  # VJP results are checked below, naming the op whose backward failed
    lazy = not (create_graph or anomaly)  # Op.accumulate / Op.outer only when no graph is built
    try:
        for t in reversed(order):
            g = grads.pop(t, None)
            if factors and t in factors:
                g = _add_outer(g, factors.pop(t), t)
            if g is None:
                continue
            if t._hooks:
                g = _run_hooks(t, g)
            entry = t._entry
            if wanted is not None and t in wanted:
                for i in wanted[t]:
                    results[i] = g
            elif entry is None:
                if inputs is None:
                    _accumulate_leaf_grad(t, g, create_graph)
                continue
            if t._retains_grad and inputs is None:
                t.grad = g if create_graph else g.detach()
            if entry is None or (needed is not None and t not in needed):
                continue
            if entry.clock != STATE.version_clock:  # something changed in place since the op ran
                _check_versions(t, entry)
            op, xs, params = entry.op, entry.inputs, entry.params
            for i, x in enumerate(xs):
                if not x.requires_grad or (needed is not None and x not in needed):
                    continue
                if lazy and op.accumulate is not None:
                    op.accumulate(_owned_buffer(grads, owned, x), g._data, **params)
                    continue
                if lazy and op.outer is not None:
                    pair = op.outer(i, g, t, *xs, **params)
                    if pair is not None:
                        _defer_outer(factors, grads, owned, x, pair)
                        continue
                if op.variadic_rule is None:
                    gx = op.rules[i](g, t, *xs, **params)
                else:
                    gx = op.variadic_rule(i, g, t, xs, **params)
                if gx._data.dtype != x._data.dtype:  # e.g. float32 input of a float64 op
                    gx = gx.astype(x._data.dtype)
                if anomaly:
                    _check_finite(gx._data, f"backward (cotangent of input {i})", op.name, entry.created_at)
                if x in grads:
                    _accumulate(grads, owned, x, gx, create_graph)
                else:
                    grads[x] = gx
            if not retain_graph:
                entry.inputs = entry.params = None
    finally:
        STATE.grad_enabled, STATE.anomaly = previous_mode, anomaly
    return results


def _run_hooks(t, g):
    """Apply ``t``'s hooks in order; a hook may return a replacement cotangent."""
    for hook in list(t._hooks.values()):
        replaced = hook(g)
        if replaced is not None:
            g = replaced if isinstance(replaced, type(g)) else type(g)._wrap(np.asarray(replaced, dtype=g._data.dtype))
    return g


# Stacked factors are summed once they hold this many elements, which bounds the memory they
# keep alive (16 MB in float32) while each matmul still has thousands of rows.
_OUTER_BUDGET = 1 << 22


def _defer_outer(factors: dict, grads: dict, owned: set, x, pair):
    """Keep ``left.T @ right``, a term of the cotangent of ``x``, as its two factors."""
    lefts, rights, size = factors.get(x) or ([], [], 0)
    lefts.append(pair[0])
    rights.append(pair[1])
    size += pair[0].size + pair[1].size
    factors[x] = (lefts, rights, size)
    if size >= _OUTER_BUDGET:
        _accumulate(grads, owned, x, _add_outer(None, factors.pop(x), x), False)


def _add_outer(g, stacked, x):
    """``g`` (or nothing) plus the sum of the deferred ``left.T @ right`` terms: one matmul."""
    lefts, rights, _ = stacked
    left = lefts[0] if len(lefts) == 1 else np.concatenate(lefts)
    right = rights[0] if len(rights) == 1 else np.concatenate(rights)
    total = (left.T @ right).astype(x._data.dtype, copy=False)  # a fresh array: ours to add into
    if g is not None:
        total += g._data
    return type(x)._wrap(total)


def _owned_buffer(grads: dict, owned: set, x) -> np.ndarray:
    """The cotangent buffer of ``x`` as an array we may write into (zeros if none yet)."""
    if x not in owned:
        previous = grads.get(x)
        data = np.zeros(x._data.shape, x._data.dtype) if previous is None else np.array(previous._data, dtype=x._data.dtype)
        grads[x] = type(x)._wrap(data) if previous is None else type(previous)._wrap(data)
        owned.add(x)
    return grads[x]._data


def _accumulate_leaf_grad(t, g, create_graph: bool):
    if create_graph or (t.grad is not None and t.grad.requires_grad):
        t.grad = g if t.grad is None else t.grad + g
    elif t.grad is None:  # copy: cotangents may alias one another or a broadcast view
        t.grad = type(t)._wrap(np.array(g._data, copy=True))
    else:
        t.grad._data += g._data


def _check_versions(t, entry):
    """Refuse stale saved values; called only when the clock moved since ``entry`` was recorded."""
    stale = [i for i, x in enumerate(entry.inputs) if x._version > entry.clock]
    if stale or t._version > entry.clock:
        what = f"input {stale[0]} (shape {entry.inputs[stale[0]].shape})" if stale else f"its output (shape {t.shape})"
        raise RuntimeError(
            f"{entry.op.name}: {what}, saved for the backward pass, was modified in place after the op ran; "
            "compute a new tensor instead of modifying one the graph still needs (as PyTorch's version check)"
        )
