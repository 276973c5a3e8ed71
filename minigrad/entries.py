"""The tape (``minigrad.entries``): one :class:`TapeEntry` per op that touched a tensor requiring grad (the op, its inputs and
parameters), the in-place clock and memory marks behind the version check, and :func:`tape`, the
Wengert list that produced a tensor.

Following ``_entry.inputs`` from a tensor walks the tape backwards; sorting those entries by their
``index`` gives the order the ops ran in (:func:`topological_order`).
"""
from __future__ import annotations

import itertools
import weakref

import numpy as np


class _Clock:
    """A process-wide clock ticked by every in-place change.

    A tensor's ``_changed_at`` is the tick of its last in-place change and an entry's
    ``clock`` the tick when it was recorded, so backward only has to look at an entry's
    inputs if the clock moved since (PyTorch's version counter check).
    """

    tick = 0


CLOCK = _Clock()
NO_PARAMS: dict = {}


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
        self.index = next(ENTRY_INDEX)
        self.created_at = created_at  # where the op ran (file:line), kept in anomaly mode

    def replay(self) -> np.ndarray:
        """Re-run the op's forward kernel on the inputs' current arrays and the saved params."""
        if self.inputs is None:
            raise RuntimeError(FREED)
        return np.asarray(self.op.forward(*(x._data for x in self.inputs), **self.params))


ENTRY_INDEX = itertools.count()


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
        owners = {id(owner(x._data)): owner(x._data).nbytes for x in self.inputs}
        run = (self.entry.params or {}).get("run")
        residuals = list(getattr(run, "residuals", None) or []) + [tuple(getattr(run, "stacks", None) or ())]
        arrays = {id(owner(a)): owner(a).nbytes for step in residuals
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
    for t in topological_order([output]):
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
FREED = (
    "Trying to backward through the graph a second time (or after its saved values were freed): "
    "pass retain_graph=True to the first backward() / grad() call if you need to do this"
)


def topological_order(roots) -> list:
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
            raise RuntimeError(FREED)
        made.append((entry.index, t))  # indices are unique: the sort never compares tensors
        for x in entry.inputs:
            if x._requires_grad and x not in seen:
                seen.add(x)
                stack.append(x)
    made.sort()
    return leaves + [t for _, t in made]



def owner(array: np.ndarray) -> np.ndarray:
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
        block = owner(array)
        try:
            self.ticks[id(block)] = (CLOCK.tick, weakref.ref(block))
        except TypeError:  # takes no weak reference: then no other tensor views it
            return
        if len(self.ticks) > self.prune_at:
            self.ticks = {k: v for k, v in self.ticks.items() if v[1]() is not None}
            self.prune_at = max(2 * len(self.ticks), 1024)

    def changed_since(self, array: np.ndarray, clock: int) -> bool:
        block = owner(array)
        changed = self.ticks.get(id(block))
        return changed is not None and changed[0] > clock and changed[1]() is block


MEMORY = _MemoryChanges()


def changed_since(t, clock: int) -> bool:
    """Whether ``t``, or a tensor sharing its memory (a view, a detached copy), was changed in place after ``clock``."""
    return t._changed_at > clock or MEMORY.changed_since(t._data, clock)


def check_versions(t, entry):
    """Refuse stale saved values (only those the op saves: ``extend.saves``); called only when the
    clock moved since ``entry`` was recorded."""
    saved = entry.op.saved_inputs
    stale = [i for i, x in enumerate(entry.inputs)
             if (saved is None or i in saved) and changed_since(x, entry.clock)]
    if stale or (entry.op.saves_output and changed_since(t, entry.clock)):
        what = f"input {stale[0]} (shape {entry.inputs[stale[0]].shape})" if stale else f"its output (shape {t.shape})"
        raise RuntimeError(
            f"{entry.op.name}: {what}, saved for the backward pass, was modified in place after the op ran; "
            "compute a new tensor instead of modifying one the graph still needs (as PyTorch's version check)"
        )
