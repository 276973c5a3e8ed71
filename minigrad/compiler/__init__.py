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

The stages, one module each: :mod:`.pytree`, :mod:`.codegen` (the IR, the writer, ``Program``),
:mod:`.passes`, :mod:`.tracing`, :mod:`.loops`, :mod:`.donation` and :mod:`.runtime`; this module is
the API: :func:`scan`, :func:`compile` and :func:`scan_source`.
"""
from __future__ import annotations

import collections
import contextlib
import functools
import math
import warnings

import numpy as np

from .. import entries, modes, ops
from ..modes import MODE, TraceError
from ..extend import defvjp, primitive, trust
from ..tensor import DonatedArray, Tensor
from .pytree import _describe, _in_order_of, split_packed, flatten, unflatten
from .codegen import Program
from .tracing import (
    _Trace, _program, check_same_program, generator_states, read_tape, set_generator_states, trace,
)
from .loops import _loop_source, _loops, _widen
from .donation import _donate, _recompute, donatable, refuse_donated  # noqa: F401 - donatable: for the driver
from .runtime import CALL, SCAN, _Call, _Loop, record_run
from .tracing import STATS  # noqa: F401 - the programs built and their cost, read by the benchmarks

__all__ = ["Compiled", "Program", "TraceError", "compile", "scan", "scan_source", "trace"]


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
                                donate_xs, generators, states)
    except TraceError as error:
        set_generator_states(generators, states)  # eager draws what it would have drawn
        warnings.warn(f"scan: running the loop eagerly: {error}", RuntimeWarning, stacklevel=2)
        xs = unflatten(x_structure, getattr(error, "xs", x_leaves))
        return _eager_scan(step, init, xs, reverse, masks)
    return _eager_scan(step, init, xs, reverse, masks) if result is None else result


def _compiled_scan(step, carry_leaves, carry_structure, x_leaves, x_structure, reverse, masks, donate_xs, generators,
                   states):
    """:func:`scan` compiled: the first step traced, every step but the last run as its program (ONE
    tape entry), then the last step traced on that entry's outputs: its graph is the real one, so
    the final carry's hooks and ``retain_grad`` see every term, as eager's; and its program must be
    the first's.  None where the loop must run eagerly without a warning (outputs of several dtypes).
    ``states``: ``generators``' states before the loop, which the first step must leave as they were.

    Raises:
        TraceError: the step cannot be compiled (it reads values, changes a tensor in place, draws
            from ``generators``, or records another program at its last step than at its first).
    """
    T, nc = x_leaves[0].shape[0], len(carry_leaves)
    times = list(range(T - 1, -1, -1)) if reverse else list(range(T))
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
    parts = split_packed(packed, out_shapes)
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
    leaves = record_run(SCAN, run, tuple(carry_leaves) + tuple(x_leaves) + tuple(tr.captured), differentiate)
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
        return unflatten(tr.out_structure, record_run(CALL, run, tuple(leaves) + tuple(tr.captured), True))

    @staticmethod
    def _read(leaves, result, start, structure) -> _Trace | None:
        """This call's tape as a program's trace, or None where its eager graph must stay."""
        try:
            outputs = flatten(result)[0]
        except TypeError:
            return None
        if not all(t._requires_grad for t in outputs) or len({t.dtype for t in outputs}) != 1 \
                or outputs[0].dtype.kind != "f" or len(set(outputs)) != len(outputs) or len(set(leaves)) != len(leaves) \
                or any(t._entry is None or t._entry.index < start for t in outputs):  # an output fn did not compute
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
        return None if _an_output_feeds_another(outputs, start) else tr

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
