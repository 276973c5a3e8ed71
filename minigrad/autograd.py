"""The tape, the grad modes, and reverse mode (``Tensor.backward`` and :func:`grad`).

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

import contextlib
import contextvars
import functools
import inspect
import itertools
import sys
import weakref
from pathlib import Path

import numpy as np




# --------------------------------------------------------------------------- modes
class Mode:
    """This thread's modes: whether ops record on the tape, whether anomaly mode is on, whether
    :mod:`minigrad.compiler` is tracing (reading a tensor's values is then an error), and the
    forward-mode levels pushing tangents (:class:`ForwardLevel`, outermost first).

    Per thread, as PyTorch's grad mode: a new thread starts from the default (recording,
    no anomaly mode, not tracing, no forward mode).  All live in one context variable, because
    every op reads them and a context variable read is the cheapest per-thread lookup Python has.
    Immutable.
    """

    __slots__ = ("grad_enabled", "anomaly", "tracing", "forward")

    def __init__(self, grad_enabled: bool, anomaly: bool, tracing: bool, forward: tuple = ()):
        self.grad_enabled, self.anomaly, self.tracing, self.forward = grad_enabled, anomaly, tracing, forward

    def replace(self, **changes) -> "Mode":
        key = (changes.get("grad_enabled", self.grad_enabled), changes.get("anomaly", self.anomaly),
               changes.get("tracing", self.tracing))
        forward = changes.get("forward", self.forward)
        return _MODES[key] if not forward else Mode(*key, forward)


_MODES = {(g, a, t): Mode(g, a, t) for g in (True, False) for a in (True, False) for t in (True, False)}
MODE = contextvars.ContextVar("minigrad.mode", default=_MODES[True, False, False])


class ForwardLevel:
    """One ``jvp`` in progress: the tangent of every tensor it has pushed one to, by tensor.

    Each op whose inputs have tangents at an active level gets its own from the op's JVP rules
    (forward mode: one pass beside the primal computation, no tape).  The tangents live here,
    not on the tensors, so they are gone when the ``jvp`` returns and a later one can never
    mistake them for its own (perturbation confusion).  Nested ``jvp`` calls are nested levels;
    a level's rules run with only the levels outside it active, so outer tangents flow through
    inner ones (forward-over-forward).
    """

    __slots__ = ("tangents",)

    def __init__(self):
        self.tangents = {}


def push_tangents(out, op, inputs, params, levels: tuple):
    """Give ``out`` its tangent at each active level where an input has one (called by every op)."""
    if out._data.dtype.kind != "f":
        return
    for k, level in enumerate(levels):
        tangents = [level.tangents.get(x) for x in inputs]
        if all(t is None for t in tangents):
            continue
        previous = MODE.get()
        MODE.set(previous.replace(forward=levels[:k]))
        try:
            tangent = op.jvp(tangents, out, inputs, params)
        finally:
            MODE.set(previous)
        if tangent is not None:
            level.tangents[out] = tangent


class _Clock:
    """A process-wide clock ticked by every in-place change.

    A tensor's ``_changed_at`` is the tick of its last in-place change and an entry's
    ``clock`` the tick when it was recorded, so backward only has to look at an entry's
    inputs if the clock moved since (PyTorch's version counter check).
    """

    tick = 0


CLOCK = _Clock()
_NO_PARAMS: dict = {}
_PACKAGE_DIR = str(Path(__file__).resolve().parent)


class _ModeSwitch(contextlib.ContextDecorator):
    """Set one mode of this thread inside a ``with`` block or a decorated function.

    A decorated generator function runs under the mode while it runs (each ``next``),
    not just while the generator is created, as ``torch.no_grad`` does.
    """

    attribute: str
    value: bool

    def __enter__(self):
        mode = MODE.get()
        self._previous = getattr(mode, self.attribute)
        MODE.set(mode.replace(**{self.attribute: self.value}))
        return self

    def __exit__(self, *exc_info):  # restores only its own mode, so blocks may end out of order
        MODE.set(MODE.get().replace(**{self.attribute: self._previous}))
        return False

    def _recreate_cm(self):  # a fresh instance per decorated call, so nesting is safe
        return type(self)()

    def __call__(self, fn):
        if not inspect.isgeneratorfunction(fn):
            return super().__call__(fn)

        @functools.wraps(fn)
        def generator(*args, **kwargs):  # as PyTorch's _wrap_generator
            gen = fn(*args, **kwargs)
            try:
                with self._recreate_cm():
                    item = gen.send(None)
                while True:
                    try:
                        sent = yield item
                    except GeneratorExit:
                        with self._recreate_cm():
                            gen.close()
                        raise
                    except BaseException as error:  # thrown in: pass it on under the mode
                        with self._recreate_cm():
                            item = gen.throw(error)
                    else:
                        with self._recreate_cm():
                            item = gen.send(sent)
            except StopIteration as stop:
                return stop.value

        return generator


class no_grad(_ModeSwitch):
    """Disable recording on the tape in this thread (``with minigrad.no_grad():`` or ``@minigrad.no_grad()``).

    Ops run on raw arrays and return tensors that do not require grad, as
    ``torch.no_grad`` does.  Used for evaluation, sampling and optimizer steps.
    Other threads keep their own grad mode.
    """

    attribute, value = "grad_enabled", False


class enable_grad(_ModeSwitch):
    """Re-enable recording inside a :class:`no_grad` block (as ``torch.enable_grad``)."""

    attribute, value = "grad_enabled", True


class detect_anomaly(_ModeSwitch):
    """Raise at the first op whose forward output or backward cotangent holds NaN or Inf.

    Inside it every tape entry remembers where (file:line) it was created, and
    the error names the op and that place, as ``torch.autograd.detect_anomaly``
    does.  It slows every op down: use it to debug, not to train.  Per thread.
    """

    attribute, value = "anomaly", True


def is_grad_enabled() -> bool:
    """Whether ops currently record on the tape in this thread."""
    return MODE.get().grad_enabled


class TraceError(RuntimeError):
    """A traced step did what one program cannot repeat at every step: it read a tensor's values
    into Python, changed a tensor in place, or drew anew at every step."""


def refuse_value_read(what: str):
    """Raise :class:`TraceError` if this thread is tracing: ``what`` (e.g. ``bool(t)``) would bake one
    call's values into the program, as JAX's tracers refuse a concretization."""
    if MODE.get().tracing:
        raise TraceError(
            f"{what} reads a tensor's values while minigrad.compile/scan traces a step (at {_user_frame()}): "
            "a compiled program follows one path and cannot see values; use minigrad.where for a choice "
            "made per element, or compile=False (run eagerly)")


def _user_frame() -> str:
    """The innermost stack frame outside minigrad itself, as 'file:line in function'."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
    return "<unknown>" if frame is None else f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


def check_finite(array, what: str, op_name: str, created_at: str | None):
    """detect_anomaly's check: raise FloatingPointError naming the op if ``array`` holds NaN or Inf."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        where = f" (op created at {created_at})" if created_at else ""
        raise FloatingPointError(f"detect_anomaly: {op_name} {what} holds NaN or Inf{where}")


# --------------------------------------------------------------------------- the tape
class TapeEntry:
    """One line of the tape: ``op(inputs, **params)`` produced the tensor that owns it.

    ``clock`` is the in-place clock's tick when the op ran: if an input or the output
    was changed in place after that, the saved values are stale and backward refuses.
    ``inputs`` is set to None once backward has freed the entry.  ``index`` numbers
    entries in the order the ops ran: every input of an op was made before it, so
    sorting by ``index`` orders a graph topologically (as PyTorch's sequence numbers).
    """

    __slots__ = ("op", "inputs", "params", "clock", "index", "created_at")

    def __init__(self, op, inputs: tuple, params: dict, created_at: str | None = None):
        self.op = op
        self.inputs = inputs
        self.params = params
        self.clock = CLOCK.tick
        self.index = next(_ENTRY_INDEX)
        self.created_at = created_at  # where the op ran (file:line), kept in anomaly mode

    def replay(self) -> np.ndarray:
        """Re-run the op's forward kernel on the inputs' current arrays and the saved params."""
        if self.inputs is None:
            raise RuntimeError(_FREED)
        return np.asarray(self.op.forward(*(x._data for x in self.inputs), **self.params))


_ENTRY_INDEX = itertools.count()


class TapeLine:
    """A printable view of one tape entry: ``index``, ``op`` (its name), ``inputs``, ``output`` and ``entry``.

    ``saved_bytes`` is what the entry keeps alive for backward (JAX's ``print_saved_residuals``):
    its inputs' arrays, counted once per block of memory, plus a compiled run's residuals.
    """

    __slots__ = ("index", "op", "inputs", "output", "entry", "_names")

    def __init__(self, index, entry, output, names):
        self.index, self.op, self.inputs, self.output = index, entry.op.name, entry.inputs, output
        self.entry, self._names = entry, names

    @property
    def names(self) -> dict:
        """The tape's name of every tensor it reads or makes (``x0``, ``c0``, ``%k``), shared by its lines."""
        return self._names

    @property
    def saved_bytes(self) -> int:
        owners = {id(_owner(x._data)): _owner(x._data).nbytes for x in self.inputs}
        run = (self.entry.params or {}).get("run")
        residuals = list(getattr(run, "residuals", None) or []) + [tuple(getattr(run, "stacks", None) or ())]
        arrays = {id(_owner(a)): _owner(a).nbytes for step in residuals
                  for a in (step if isinstance(step, (tuple, list)) else (step,)) if isinstance(a, np.ndarray)}
        return sum(owners.values()) + sum(v for k, v in arrays.items() if k not in owners)

    def __str__(self):
        def show(t):
            return f"{self._names[t]}{list(t.shape)}"

        args = ", ".join(show(t) for t in self.inputs)
        return f"{self.index:>4}: {show(self.output)} = {self.op}({args})  # saves {self.saved_bytes:,} bytes"

    __repr__ = __str__


def tape(output) -> list:
    """The Wengert list of the ops that produced ``output``, in execution order.

    Returns a list of :class:`TapeLine` (``index, op, inputs, output, entry``); ``print``
    one per line, e.g. ``   2: %2[3] = mul(%1[3], x0[3])``.  Leaves are named
    ``x0, x1, ...``; the output of entry ``k`` is ``%k``.  Tensors that do not
    require grad (constants) are named ``c0, c1, ...``.  ``line.entry.replay()``
    recomputes ``line.output`` from the entry alone.

    Raises:
        RuntimeError: if part of the graph was already freed by a backward pass.
    """
    names, lines, counts = {}, [], {"x": 0, "c": 0}
    for t in _topological_order([output]):
        if t._entry is None:
            continue
        for x in t._entry.inputs:  # leaves and constants are named in order of first use
            if x not in names:
                kind = "x" if x._requires_grad else "c"
                names[x] = f"{kind}{counts[kind]}"
                counts[kind] += 1
        names[t] = f"%{len(lines)}"
        lines.append(TapeLine(len(lines), t._entry, t, names))
    return lines


# --------------------------------------------------------------------------- reverse mode
_FREED = (
    "Trying to backward through the graph a second time (or after its saved values were freed): "
    "pass retain_graph=True to the first backward() / grad() call if you need to do this"
)


def _topological_order(roots) -> list:
    """Tensors that require grad reachable from ``roots``, inputs before outputs.

    A traversal collects them and a sort by entry index orders them: every op's
    inputs ran before it.  Leaves come first, so reverse mode reaches them last.
    Tensors hash by identity, so they key the sets and dicts of reverse mode directly.
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
            if x._requires_grad and x not in seen:
                seen.add(x)
                stack.append(x)
    made.sort()
    return leaves + [t for _, t in made]


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
            self.dense = _tensor.Tensor._from_array(self.dense._data + g._data)
            self.owned = True

    def buffer(self) -> np.ndarray:
        """The dense sum as an array we may write into (zeros if there is none yet)."""
        if not self.owned:
            like = self.like._data
            data = np.zeros(like.shape, like.dtype) if self.dense is None else np.array(self.dense._data, dtype=like.dtype)
            self.dense, self.owned = _tensor.Tensor._from_array(data), True
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
        self.dense, self.owned = _tensor.Tensor._from_array(total), True

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
    order = _topological_order(outputs)
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
                _check_versions(t, entry)
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
        data = replaced._data if isinstance(replaced, _tensor.Tensor) else np.asarray(replaced)
        if data.shape != g._data.shape or data.dtype != g._data.dtype:
            raise RuntimeError(
                f"register_hook: a hook on the tensor of shape {t.shape} (dtype {t.dtype}) returned a gradient "
                f"of shape {data.shape} and dtype {data.dtype}; a hook may replace the gradient only by one of "
                f"shape {g._data.shape} and dtype {g._data.dtype}")
        g = replaced if isinstance(replaced, _tensor.Tensor) else _tensor.Tensor._from_array(data)
    return g


def _accumulate_leaf_grad(t, g, create_graph: bool):
    if create_graph or (t.grad is not None and t.grad.requires_grad):
        t.grad = g if t.grad is None else t.grad + g
    elif t.grad is None:  # copy: cotangents may alias one another or a broadcast view
        t.grad = _tensor.Tensor._from_array(np.array(g._data, copy=True))
    else:
        t.grad._data += g._data


def _owner(array: np.ndarray) -> np.ndarray:
    """The array that owns ``array``'s memory: NumPy gives a view the owner as its ``base``, or (a view
    of another type, as a donated array) the array it was made from."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


class _MemoryChanges:
    """The tick of the last in-place change of each block of memory, kept by the array owning it.

    A view or a detached tensor changed in place thereby marks the memory every other tensor over
    it shares, as PyTorch's shared version counter does, at no cost to ops (which never write in
    place): only backward, after the clock moved, looks here.  Freed arrays are forgotten now and then.
    """

    def __init__(self):
        self.ticks = {}  # id(owner) -> (tick, weak reference to the owner)
        self.prune_at = 1024

    def mark(self, array: np.ndarray) -> None:
        owner = _owner(array)
        try:
            self.ticks[id(owner)] = (CLOCK.tick, weakref.ref(owner))
        except TypeError:  # takes no weak reference: then no other tensor views it
            return
        if len(self.ticks) > self.prune_at:
            self.ticks = {k: v for k, v in self.ticks.items() if v[1]() is not None}
            self.prune_at = max(2 * len(self.ticks), 1024)

    def changed_since(self, array: np.ndarray, clock: int) -> bool:
        owner = _owner(array)
        changed = self.ticks.get(id(owner))
        return changed is not None and changed[0] > clock and changed[1]() is owner


MEMORY = _MemoryChanges()


def _changed_since(t, clock: int) -> bool:
    """Whether ``t``, or a tensor sharing its memory (a view, a detached copy), was changed in place after ``clock``."""
    return t._changed_at > clock or MEMORY.changed_since(t._data, clock)


def _check_versions(t, entry):
    """Refuse stale saved values (only those the op saves: ``extend.saves``); called only when the
    clock moved since ``entry`` was recorded."""
    saved = entry.op.saved_inputs
    stale = [i for i, x in enumerate(entry.inputs)
             if (saved is None or i in saved) and _changed_since(x, entry.clock)]
    if stale or (entry.op.saves_output and _changed_since(t, entry.clock)):
        what = f"input {stale[0]} (shape {entry.inputs[stale[0]].shape})" if stale else f"its output (shape {t.shape})"
        raise RuntimeError(
            f"{entry.op.name}: {what}, saved for the backward pass, was modified in place after the op ran; "
            "compute a new tensor instead of modifying one the graph still needs (as PyTorch's version check)"
        )


# --------------------------------------------------------------------------- entry points
def seed_cotangents(where: str, outputs, grad_outputs) -> list:
    """Check ``outputs`` and build their seed cotangents (ones for size-1 outputs)."""
    Tensor = _tensor.Tensor
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
    Tensor = _tensor.Tensor
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


from . import tensor as _tensor  # noqa: E402 - last: tensor.py imports this module's names
