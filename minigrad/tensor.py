"""The Tensor: a NumPy array plus what reverse mode needs to know about it."""
from __future__ import annotations

import numbers

import numpy as np

from . import entries, modes
from .entries import CLOCK, NO_PARAMS, TapeEntry
from .modes import MODE, refuse_value_read

_NUMERIC_KINDS = "biuf"


def _as_array(data, dtype=None) -> np.ndarray:
    if isinstance(data, Tensor):
        data = data._data
    try:
        array = np.array(data, dtype=dtype)  # always a copy, as torch.tensor() makes one
    except (TypeError, ValueError) as error:
        raise TypeError(f"Tensor: cannot make a numeric array from {type(data).__name__} data: {error}") from None
    if array.dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(
            f"Tensor: data must be numeric (bool, integer or floating point); got an array of dtype {array.dtype}"
        )
    return array


def _check_can_require_grad(dtype, where: str):
    if dtype.kind != "f":
        raise TypeError(
            f"{where}: only floating-point tensors can require grad; this one has dtype {dtype} "
            "(convert with .astype(np.float64) first)"
        )


class DonatedArray(np.ndarray):
    """The array of a tensor donated to a compiled loop (``minigrad.scan(..., donate_xs=True)``): it
    holds the loop's saved activations now, so every read refuses, as JAX refuses a donated buffer."""

    def refuse(self, *args, **kwargs):
        raise RuntimeError(
            f"a tensor of shape {self.shape} was donated to a compiled loop (scan(..., donate_xs=True)), which "
            "wrote its activations over it, so its values are gone: compute it anew, or do not donate it")

    __array_ufunc__ = __array_function__ = __getitem__ = __array__ = item = tolist = __repr__ = __str__ = refuse


class Tensor:
    """A NumPy array that records the ops applied to it, for reverse-mode differentiation.

    Args:
        data: anything ``np.array`` accepts (array, nested lists, scalar, Tensor); it is copied.
        requires_grad: record ops on it and give it a ``.grad`` after ``backward()``.
        dtype: NumPy dtype; by default NumPy's choice (Python floats give float64).

    Attributes:
        data (np.ndarray): the values.
        grad (Tensor or None): the accumulated gradient of a leaf after ``backward()``;
            ``np.asarray(t.grad)`` gives the array.

    dtypes follow NumPy: float32 stays float32 through every op and its gradient,
    Python scalars do not upcast.  Only floating-point tensors can require grad.

    Raises:
        TypeError: non-numeric data, or ``requires_grad=True`` on integer/bool data.
    """

    __slots__ = ("_data", "_requires_grad", "grad", "_entry", "_changed_at", "_hooks", "_retains_grad", "_made_at", "__weakref__")
    # NumPy must hand mixed expressions (ndarray * Tensor) to our reflected operators.
    __array_ufunc__ = None

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        self._data = _as_array(data, dtype)
        if requires_grad:
            _check_can_require_grad(self._data.dtype, "Tensor")
        self._requires_grad = bool(requires_grad)
        self.grad = None
        self._entry = None
        self._changed_at = 0
        self._hooks = None
        self._retains_grad = False
        if MODE.get().tracing:  # where, for the compiler's errors (a mask drawn anew at every step)
            self._made_at = modes.user_frame()

    # ----------------------------------------------------------------- construction fast paths
    @classmethod
    def _from_array(cls, data, _new=object.__new__) -> "Tensor":
        """A constant tensor around ``data`` (no copy, no checks): the hot path of every op."""
        t = _new(cls)
        t._data = data if type(data) is np.ndarray else np.asarray(data)
        t._requires_grad = False
        t.grad = None
        t._entry = None
        t._changed_at = 0
        t._hooks = None
        t._retains_grad = False
        return t

    @classmethod
    def _from_op(cls, op, data, inputs: tuple, params: dict = NO_PARAMS) -> "Tensor":
        """The output of ``op(inputs)``, recorded on the tape if any input requires grad."""
        t = cls._from_array(data)
        mode = MODE.get()
        created_at = None
        if mode.anomaly:
            created_at = modes.user_frame()
            modes.check_finite(t._data, "forward output", op.name, created_at)
        if mode.grad_enabled:
            for x in inputs:
                if x._requires_grad:
                    t._requires_grad = True
                    t._entry = TapeEntry(op, inputs, params, created_at)
                    break
        if mode.forward:
            modes.push_tangents(t, op, inputs, params, mode.forward)
        return t

    # ----------------------------------------------------------------- array-like protocol
    @property
    def data(self) -> np.ndarray:
        """The values, the array itself (shared, not copied), as ``torch.Tensor.data``.

        Raises:
            TraceError: read while ``minigrad.compile``/``scan`` traces a step.
            RuntimeError: the tensor was donated to a compiled loop (``scan(..., donate_xs=True)``).
        """
        return self._array_for("Tensor.data")

    @data.setter
    def data(self, value):
        value = np.asarray(value)
        if value.shape != self._data.shape:
            raise ValueError(f"Tensor.data: new data has shape {value.shape}, expected {self._data.shape}")
        self._data = value.astype(self._data.dtype, copy=False)
        self._mark_changed()

    shape = property(lambda self: self._data.shape, doc="Tuple of dimension sizes.")
    ndim = property(lambda self: self._data.ndim, doc="Number of dimensions.")
    dtype = property(lambda self: self._data.dtype, doc="NumPy dtype.")
    size = property(lambda self: self._data.size, doc="Number of elements.")
    is_leaf = property(lambda self: self._entry is None, doc="True unless an op that required grad produced it.")

    def __len__(self):
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return len(self._data)

    def __array__(self, dtype=None, copy=None):
        self._array_for("np.asarray(tensor)")
        if dtype is not None and dtype != self._data.dtype:
            return self._data.astype(dtype)
        return self._data.copy() if copy else self._data

    def numpy(self) -> np.ndarray:
        """The underlying array (shared, not copied), as ``torch.Tensor.numpy()``."""
        return self._array_for("Tensor.numpy()")

    def _array_for(self, where):
        # The reads that hand out the array itself: refused while tracing, and refused for a donated
        # array (its own methods refuse, but an array handed out would slip past them).
        refuse_value_read(where)
        if type(self._data) is DonatedArray:
            self._data.refuse()
        return self._data

    def item(self):
        """The single value as a Python number. Raises ValueError if size != 1."""
        if self._data.size != 1:
            raise ValueError(f"item: only a tensor with one element converts to a Python scalar; shape is {self.shape}")
        refuse_value_read("Tensor.item()")
        return self._data.item()

    def tolist(self):
        """The values as (nested) Python lists of numbers, as ``np.ndarray.tolist``."""
        refuse_value_read("Tensor.tolist()")
        return self._data.tolist()

    def __bool__(self):
        refuse_value_read("bool(tensor)")
        return bool(self._data)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self._data.dtype.kind not in "iu" or self._data.ndim != 0:
            raise TypeError(f"only 0-d integer tensors can be used as an index; got {self.dtype} of shape {self.shape}")
        refuse_value_read("a tensor used as an index")
        return int(self._data)

    def __repr__(self):
        body = np.array2string(self._data, separator=", ", prefix="tensor(")
        extra = [f"dtype={self.dtype}"] if self.dtype != np.float64 else []
        if self._entry is not None:
            extra.append(f"grad_fn=<{self._entry.op.name}>")
        elif self.requires_grad:
            extra.append("requires_grad=True")
        return f"tensor({body}{''.join(', ' + e for e in extra)})"

    __hash__ = object.__hash__  # tensors are hashed by identity; == is elementwise

    # ----------------------------------------------------------------- autograd
    # ``backward`` is reverse mode's, which builds on this module: minigrad.autograd binds it here.

    def detach(self) -> "Tensor":
        """A tensor sharing this data that does not require grad (cuts the tape, as in truncated BPTT).

        An in-place change of the detached tensor counts as a change of this one, so backward
        still refuses values it saved (PyTorch's shared version counter).
        """
        return Tensor._from_array(self._data)

    @property
    def requires_grad(self) -> bool:
        """Whether ops on this tensor are recorded on the tape; settable on leaves of a floating dtype.

        Raises (on setting): TypeError for an integer or bool tensor, RuntimeError for False on a
        non-leaf (use ``detach()``), as ``torch.Tensor.requires_grad``.
        """
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value):
        self._set_requires_grad(value, "requires_grad")

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        """Set ``requires_grad`` in place on a leaf; returns self."""
        self._set_requires_grad(requires_grad, "requires_grad_")
        return self

    def _set_requires_grad(self, value, where: str):
        if value:
            _check_can_require_grad(self._data.dtype, where)
        elif self._entry is not None:
            raise RuntimeError(f"{where}: use detach() to cut a non-leaf tensor out of the graph")
        self._requires_grad = bool(value)

    def retain_grad(self):
        """Keep this non-leaf tensor's gradient in ``.grad`` during backward (as torch)."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad: this tensor does not require grad")
        self._retains_grad = True

    def register_hook(self, hook):
        """Call ``hook(grad)`` with the gradient flowing into this tensor during backward.

        If the hook returns a tensor or array, it replaces the gradient (as
        ``torch.Tensor.register_hook``).  Returns a handle with ``.remove()``.
        """
        if not self.requires_grad:
            raise RuntimeError("register_hook: cannot register a hook on a tensor that does not require grad")
        if self._hooks is None:
            self._hooks = {}
        handle = _HookHandle(self._hooks)
        self._hooks[handle.key] = hook
        return handle

    # ----------------------------------------------------------------- in-place (bump the version)
    def _inplace(self, name: str, apply):
        mode = MODE.get()
        if mode.tracing:  # before the change: the step then runs eagerly, changing it once per step
            raise modes.TraceError(
                f"{name} changes a tensor of shape {self.shape} in place while minigrad.compile/scan traces a step "
                f"(at {modes.user_frame()}): one program would make the change once, not at every step")
        if self._requires_grad and mode.grad_enabled:
            raise RuntimeError(
                f"{name}: in-place change of a tensor that requires grad would corrupt its gradient; "
                "wrap it in minigrad.no_grad() (as optimizers do) or compute a new tensor"
            )
        if any(self in level.tangents for level in mode.forward):
            raise RuntimeError(f"{name}: in-place change of a tensor that carries a forward-mode tangent (inside "
                               "jvp) would leave its tangent stale; compute a new tensor")
        apply(self._data)
        self._mark_changed()
        return self

    def _mark_changed(self):
        """Record an in-place change (see ``entries.TapeEntry.clock``), also of the memory it shares."""
        CLOCK.tick += 1
        self._changed_at = CLOCK.tick
        entries.MEMORY.mark(self._data)

    def add_(self, other, alpha=1):
        """In place: self += alpha * other (no grad recorded)."""
        other = other._data if isinstance(other, Tensor) else other
        return self._inplace("add_", lambda d: np.add(d, other if alpha == 1 else alpha * other, out=d, casting="unsafe"))

    def sub_(self, other):
        """In place: self -= other."""
        return self.add_(other, alpha=-1)

    def mul_(self, other):
        """In place: self *= other."""
        other = other._data if isinstance(other, Tensor) else other
        return self._inplace("mul_", lambda d: np.multiply(d, other, out=d, casting="unsafe"))

    def copy_(self, source):
        """In place: copy ``source`` (broadcast to self's shape) into self."""
        source = source._data if isinstance(source, Tensor) else source
        return self._inplace("copy_", lambda d: np.copyto(d, source, casting="unsafe"))

    def fill_(self, value):
        """In place: set every element to ``value``."""
        return self._inplace("fill_", lambda d: d.fill(value))

    def zero_(self):
        """In place: set every element to zero."""
        return self.fill_(0)

    def __setitem__(self, index, value):
        value = value._data if isinstance(value, Tensor) else value
        self._inplace("__setitem__", lambda d: d.__setitem__(index, value))


class _HookHandle:
    """Returned by ``register_hook``; ``remove()`` unregisters the hook."""

    _next_key = 0

    def __init__(self, hooks: dict):
        self._hooks = hooks
        self.key = _HookHandle._next_key
        _HookHandle._next_key += 1

    def remove(self):
        self._hooks.pop(self.key, None)


def as_operand(x, like: Tensor | None = None, op: str = "minigrad") -> Tensor:
    """A Tensor as it is; a number or array as a constant tensor (no copy).

    A Python number takes ``like``'s dtype when that is floating point, so
    ``float32_tensor * 2.0`` stays float32 (NumPy's weak scalars).

    Raises:
        TypeError: ``x`` is not numeric (names the op).
    """
    if isinstance(x, Tensor):
        return x
    if like is not None and like._data.dtype.kind == "f" and (type(x) in (float, int) or isinstance(x, numbers.Real)):
        return Tensor._from_array(np.asarray(x, dtype=like._data.dtype))
    array = np.asarray(x)
    if array.dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(f"{op}: expected a Tensor, array or number; got {type(x).__name__} (dtype {array.dtype})")
    return Tensor._from_array(array)


# ----------------------------------------------------------------------------- creation helpers
def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    """Same as ``Tensor(data, requires_grad, dtype)`` (as ``torch.tensor``)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def _shape(shape) -> tuple:
    """Accept ``f(2, 3)`` and ``f((2, 3))`` alike."""
    if len(shape) == 1 and not isinstance(shape[0], numbers.Integral):
        return tuple(shape[0])
    return tuple(shape)


def zeros(*shape, dtype=np.float64, requires_grad: bool = False) -> Tensor:
    """A tensor of zeros; ``zeros(2, 3)`` or ``zeros((2, 3))``. dtype defaults to float64 as NumPy's."""
    return Tensor(np.zeros(_shape(shape), dtype=dtype), requires_grad=requires_grad)


def ones(*shape, dtype=np.float64, requires_grad: bool = False) -> Tensor:
    """A tensor of ones; ``ones(2, 3)`` or ``ones((2, 3))``."""
    return Tensor(np.ones(_shape(shape), dtype=dtype), requires_grad=requires_grad)


def zeros_like(t, dtype=None, requires_grad: bool = False) -> Tensor:
    """Zeros with the shape (and, unless given, dtype) of ``t``."""
    return Tensor(np.zeros_like(np.asarray(t), dtype=dtype), requires_grad=requires_grad)


def ones_like(t, dtype=None, requires_grad: bool = False) -> Tensor:
    """Ones with the shape (and, unless given, dtype) of ``t``."""
    return Tensor(np.ones_like(np.asarray(t), dtype=dtype), requires_grad=requires_grad)


def _rng(rng):
    if rng is None:
        return np.random.default_rng()
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)); got {type(rng).__name__}")
    return rng


def randn(*shape, rng=None, dtype=np.float64, requires_grad: bool = False) -> Tensor:
    """Standard normal samples from ``rng`` (a ``numpy.random.Generator``; fresh if None)."""
    return Tensor(_rng(rng).standard_normal(_shape(shape)).astype(dtype, copy=False), requires_grad=requires_grad)


def rand(*shape, rng=None, dtype=np.float64, requires_grad: bool = False) -> Tensor:
    """Uniform samples on [0, 1) from ``rng`` (a ``numpy.random.Generator``)."""
    return Tensor(_rng(rng).random(_shape(shape)).astype(dtype, copy=False), requires_grad=requires_grad)


def uniform(low=0.0, high=1.0, shape=(), *, rng=None, dtype=np.float64, requires_grad: bool = False) -> Tensor:
    """Uniform samples on [low, high) of the given shape, from ``rng`` (NumPy's argument order)."""
    return Tensor(_rng(rng).uniform(low, high, shape).astype(dtype, copy=False), requires_grad=requires_grad)


def arange(start, stop=None, step=1, dtype=None, requires_grad: bool = False) -> Tensor:
    """As ``np.arange``."""
    data = np.arange(start, step=step, dtype=dtype) if stop is None else np.arange(start, stop, step, dtype=dtype)
    return Tensor(data, requires_grad=requires_grad)
