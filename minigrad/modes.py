"""This thread's modes: whether ops record on the tape (``no_grad``, ``enable_grad``), anomaly mode,
whether :mod:`minigrad.compiler` is tracing a step (reading a tensor's values is then a
:class:`TraceError`), and the forward-mode levels pushing tangents (:class:`ForwardLevel`).

The lowest module of the engine: it imports no other.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import sys
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
            f"{what} reads a tensor's values while minigrad.compile/scan traces a step (at {user_frame()}): "
            "a compiled program follows one path and cannot see values; use minigrad.where for a choice "
            "made per element, or compile=False (run eagerly)")


def user_frame() -> str:
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
