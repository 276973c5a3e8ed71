"""Gradient checking and Hypothesis strategies for testing ops, layers and cells.

A one-line property test of a new op::

    from hypothesis import given
    from minigrad.testing import check_grads, tensors

    @given(x=tensors(requires_grad=True))
    def test_my_op(x):
        assert check_grads(my_op, [x])      # gradcheck + gradgradcheck

and of a binary op over every pair of broadcastable shapes::

    @given(xy=broadcastable_tensors(2, requires_grad=True))
    def test_my_binary_op(xy):
        assert check_grads(my_binary_op, xy)

This module imports Hypothesis; ``import minigrad`` does not import it.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minigrad as mg
from minigrad.tensor import Tensor

__all__ = [
    "GradcheckError", "gradcheck", "gradgradcheck", "jvpcheck", "check_grads",
    "floats", "tensors", "broadcastable_shapes", "mutually_broadcastable_shapes", "broadcastable_tensors",
]

_SEED = 0  # cotangents are drawn from a fixed seed, so a failure reproduces exactly


class GradcheckError(AssertionError):
    """Analytic and finite-difference gradients disagree (or the gradient has the wrong shape/dtype)."""


# ----------------------------------------------------------------------------- gradcheck
def _as_list(inputs) -> list:
    return [inputs] if isinstance(inputs, Tensor) else list(inputs)


def _float_outputs(out) -> list:
    """The floating-point Tensors among ``fn``'s result (a Tensor or a sequence of them)."""
    outs = [out] if isinstance(out, Tensor) else list(out)
    return [o for o in outs if isinstance(o, Tensor) and o.dtype.kind == "f"]


def _cotangents(outputs, cache: list, rng) -> list:
    """One fixed random cotangent per output (Tensor or array), drawn on first use and reused afterwards."""
    while len(cache) < len(outputs):
        cache.append(rng.standard_normal(outputs[len(cache)].shape))
    if len(cache) != len(outputs) or any(o.shape != v.shape for o, v in zip(outputs, cache)):
        raise ValueError(
            f"gradcheck: fn returned outputs of shapes {[o.shape for o in outputs]}, "
            f"earlier {[v.shape for v in cache]}; it must return the same shapes on every call")
    return cache


def _contract(outputs, cotangents) -> Tensor:
    """s = sum_k <v_k, f_k>: one scalar whose gradient is the vector-Jacobian product."""
    s = mg.tensor(0.0)
    for o, v in zip(outputs, cotangents):
        s = s + mg.sum(Tensor._from_array(v) * o)
    return s


def _leaf_copies(inputs) -> list:
    """Inputs that require grad become float64 leaves (finite differences need the precision)."""
    return [
        Tensor(np.asarray(x.data, dtype=np.float64), requires_grad=True)
        if isinstance(x, Tensor) and x.requires_grad else x
        for x in inputs
    ]


def _analytic(fn, args, wrt, cache, rng) -> list:
    with mg.enable_grad():  # even if the caller is inside no_grad
        outputs = _float_outputs(fn(*args))
        s = _contract(outputs, _cotangents(outputs, cache, rng))
        if not s.requires_grad:  # fn is constant in its inputs
            return [np.zeros_like(x.data) for x in wrt]
        grads = mg.grad(s, wrt, allow_unused=True)
    # copies: a gradient may share memory with buffers the perturbations below would change
    return [np.zeros_like(x.data) if g is None else np.array(g.data, copy=True) for g, x in zip(grads, wrt)]


def _numeric(fn, args, x: Tensor, eps: float, cache, rng) -> np.ndarray:
    """Central differences of s, one element of ``x`` at a time."""
    def evaluate():
        outs = _float_outputs(fn(*args))
        # copies: outputs may be views of x's data, which the next perturbation changes
        return [np.array(o.data, dtype=np.float64, copy=True) for o in outs]

    numeric = np.zeros(x.shape)
    data = x._data  # the float64 copy made by _leaf_copies: ours to perturb
    with mg.no_grad():
        for i in np.ndindex(x.shape):
            original = data[i]
            data[i] = hi = original + eps
            plus = evaluate()
            data[i] = lo = original - eps
            minus = evaluate()
            data[i] = original
            # differencing outputs before contracting: outputs that x[i] does not touch
            # cancel exactly instead of drowning the difference in rounding error
            cotangents = _cotangents(plus, cache, rng)
            numeric[i] = sum(np.sum(v * (p - m)) for v, p, m in zip(cotangents, plus, minus)) / (hi - lo)
    return numeric


def _fail(message: str, raise_exception: bool) -> bool:
    if raise_exception:
        raise GradcheckError(message)
    return False


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True, fast_mode=False) -> bool:
    """Check ``fn``'s vector-Jacobian products against central finite differences.

    Args:
        fn: called as ``fn(*inputs)``; returns a Tensor or a sequence of Tensors
            (non-float and non-Tensor items are ignored).
        inputs: a Tensor or a sequence; items that are not Tensors requiring grad
            are passed through unchanged.  Every Tensor that requires grad is
            replaced by a float64 leaf copy (float32 finite differences are too
            coarse), so ``fn`` sees float64 values and ``inputs`` are never modified.
        eps: finite-difference step; atol, rtol: an element passes when
            ``|analytic - numeric| <= atol + rtol * |numeric|`` (as ``np.allclose``).
        raise_exception: raise on failure (default) or return False.
        fast_mode: check one random direction u per input instead of every element (PyTorch's
            fast mode): ``<grad s, u>`` against ``(s(x + eps u) - s(x - eps u)) / (2 eps)``, two
            evaluations of ``fn`` per input instead of two per element.

    Method: with a fixed random cotangent ``v_k`` per output, ``s = sum_k <v_k, f_k(x)>``;
    the analytic ``mg.grad(s, x)`` (unused inputs count as zero) must match
    ``(s(x + eps e_i) - s(x - eps e_i)) / (2 eps)`` for every element ``i`` of every
    input that requires grad, and have that input's shape and dtype.  Costs two
    evaluations of ``fn`` per input element, so keep the inputs small.  The copies
    are perturbed in place, so ``fn`` must not hide a dependence on them from the
    tape (``x.detach()`` shares memory): gradcheck would rightly report it.

    Returns True if every check passes.

    Raises:
        GradcheckError (an AssertionError): naming the input index and shape, the
            worst element, the analytic and numeric values there and the tolerance.
        ValueError: no input requires grad.

    Example::

        >>> x = mg.tensor([1.0, 2.0], requires_grad=True)
        >>> gradcheck(lambda x: mg.tanh(x) * x, [x])
        True
    """
    return _check(fn, inputs, eps, atol, rtol, raise_exception, "gradcheck: gradient", fast_mode)


def _directional(fn, args, x: Tensor, u: np.ndarray, eps: float, cache, rng) -> float:
    """Central difference of s along ``u`` for input ``x``."""
    data, original = x._data, x._data.copy()
    values = []
    with mg.no_grad():
        for sign in (1, -1):
            data[...] = original + sign * eps * u
            outs = [np.array(o.data, dtype=np.float64, copy=True) for o in _float_outputs(fn(*args))]
            values.append(outs)
    data[...] = original
    cotangents = _cotangents(values[0], cache, rng)
    return float(sum(np.sum(v * (p - m)) for v, p, m in zip(cotangents, *values)) / (2 * eps))


def _check(fn, inputs, eps, atol, rtol, raise_exception, what: str, fast_mode: bool = False) -> bool:
    """gradcheck's body; ``what`` starts its error messages."""
    args = _leaf_copies(_as_list(inputs))
    wrt = [x for x in args if isinstance(x, Tensor) and x.requires_grad]
    if not wrt:
        raise ValueError("gradcheck: no input requires grad; pass Tensors with requires_grad=True")
    index = [k for k, x in enumerate(args) if isinstance(x, Tensor) and x.requires_grad]
    cache, rng = [], np.random.default_rng(_SEED)

    for k, x, analytic in zip(index, wrt, _analytic(fn, args, wrt, cache, rng)):
        name = f"{what} with respect to input {k} (shape {x.shape})"
        if analytic.shape != x.shape or analytic.dtype != x.dtype:
            return _fail(
                f"{name} has shape {analytic.shape} and dtype {analytic.dtype}; "
                f"expected shape {x.shape} and dtype {x.dtype}", raise_exception)
        if fast_mode:
            u = np.random.default_rng(_SEED + 2 + k).standard_normal(x.shape)
            numeric, projected = _directional(fn, args, x, u, eps, cache, rng), float(np.sum(analytic * u))
            if not abs(projected - numeric) <= atol + rtol * abs(numeric):
                return _fail(f"{name} does not match finite differences along a random direction (fast mode): "
                             f"<analytic, u> = {projected!r}, numeric {numeric!r} (tolerance atol={atol} + "
                             f"rtol={rtol} * |numeric|, eps={eps}); rerun with fast_mode=False to find the element",
                             raise_exception)
            continue
        numeric = _numeric(fn, args, x, eps, cache, rng)
        excess = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
        bad = ~(excess <= 0)  # NaN anywhere fails too
        if bad.any():
            flat = np.argmax(np.where(bad, np.nan_to_num(excess, nan=np.inf), -np.inf))
            worst = tuple(int(i) for i in np.unravel_index(flat, x.shape))
            return _fail(
                f"{name} does not match finite differences: worst at index {worst}: "
                f"analytic {float(analytic[worst])!r}, numeric {float(numeric[worst])!r} "
                f"(tolerance atol={atol} + rtol={rtol} * |numeric|, eps={eps}); "
                f"{int(bad.sum())} of {x.size} elements differ", raise_exception)
    return True


def gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True, fast_mode=False) -> bool:
    """Check second derivatives: :func:`gradcheck` of ``x -> mg.grad(<v, fn(x)>, x, create_graph=True)``.

    ``v`` is a fixed random cotangent per output of ``fn``; the first-order
    gradients are built with ``create_graph=True`` and differentiated again, so
    this compares Hessian-vector products with finite differences of gradients.
    Inputs that ``fn`` does not use get zero gradients (whose derivative is zero).
    Arguments, float64 copies, return value and errors are as :func:`gradcheck`.

    Example::

        >>> x = mg.tensor([1.0, 2.0], requires_grad=True)
        >>> gradgradcheck(lambda x: x ** 3, [x])
        True
    """
    cache, rng = [], np.random.default_rng(_SEED + 1)

    def first_order(*args):
        wrt = [x for x in args if isinstance(x, Tensor) and x.requires_grad]
        with mg.enable_grad():  # gradcheck evaluates under no_grad; this function needs the tape
            outputs = _float_outputs(fn(*args))
            s = _contract(outputs, _cotangents(outputs, cache, rng))
            if not s.requires_grad:
                return tuple(mg.zeros_like(x) for x in wrt)
            grads = mg.grad(s, wrt, create_graph=True, allow_unused=True)
        return tuple(mg.zeros_like(x) if g is None else g for g, x in zip(grads, wrt))

    return _check(first_order, inputs, eps, atol, rtol, raise_exception, "gradgradcheck: second derivative",
                  fast_mode)


def jvpcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True) -> bool:
    """Check ``fn``'s forward mode: for each input that requires grad, ``minigrad.func.jvp`` along a fixed
    random direction must match central finite differences of every output element.

    Arguments, float64 copies and errors as :func:`gradcheck`.
    """
    args = _leaf_copies(_as_list(inputs))
    index = [k for k, x in enumerate(args) if isinstance(x, Tensor) and x.requires_grad]
    if not index:
        raise ValueError("jvpcheck: no input requires grad; pass Tensors with requires_grad=True")
    for k in index:
        x = args[k]
        u = np.random.default_rng(_SEED + 3 + k).standard_normal(x.shape)

        def along(xk, k=k):
            return tuple(_float_outputs(fn(*args[:k], xk, *args[k + 1:])))

        _, tangents = mg.func.jvp(along, (Tensor._from_array(x._data.copy()),), (Tensor._from_array(u),))
        data, original = x._data, x._data.copy()
        with mg.no_grad():
            data[...] = original + eps * u
            plus = [np.array(o.data, dtype=np.float64, copy=True) for o in _float_outputs(fn(*args))]
            data[...] = original - eps * u
            minus = [np.array(o.data, dtype=np.float64, copy=True) for o in _float_outputs(fn(*args))]
        data[...] = original
        for j, (t, p, m) in enumerate(zip(tangents, plus, minus)):
            numeric = (p - m) / (2 * eps)
            if not np.all(np.abs(t.data - numeric) <= atol + rtol * np.abs(numeric)):
                worst = float(np.max(np.abs(t.data - numeric)))
                return _fail(f"jvpcheck: the tangent of output {j} along a random direction of input {k} (shape "
                             f"{x.shape}) does not match finite differences: largest difference {worst!r} "
                             f"(tolerance atol={atol} + rtol={rtol} * |numeric|, eps={eps})", raise_exception)
    return True


def check_grads(fn, inputs, order=2, modes=("rev",), **tolerances) -> bool:
    """HIPS autograd's ``check_grads``: ``"rev"`` runs :func:`gradcheck` (and :func:`gradgradcheck` if
    ``order == 2``), ``"fwd"`` runs :func:`jvpcheck` (forward mode, first order).

    ``tolerances`` are ``eps``, ``atol``, ``rtol`` (and ``fast_mode`` for the reverse checks).
    Returns True or raises :class:`GradcheckError`.  ``modes=("fwd", "rev")`` checks both; the default
    is reverse mode only, since a user's op may have no JVP rule.
    """
    if order not in (1, 2):
        raise ValueError(f"check_grads: order must be 1 or 2; got {order}")
    if not modes or set(modes) - {"fwd", "rev"}:
        raise ValueError(f"check_grads: modes must name 'fwd' and/or 'rev'; got {modes!r}")
    fast = {"fast_mode": tolerances.pop("fast_mode", False)}
    ok = True
    if "rev" in modes:
        ok = gradcheck(fn, inputs, **tolerances, **fast) and (order < 2 or gradgradcheck(fn, inputs, **tolerances, **fast))
    if ok and "fwd" in modes:
        ok = jvpcheck(fn, inputs, **tolerances)
    return ok


# ----------------------------------------------------------------------------- strategies
def _push_away(value: float, avoid, margin: float) -> float:
    for a in avoid:
        if abs(value - a) < margin:
            return a + math.copysign(margin, value - a)
    return value


def floats(low=-10.0, high=10.0, *, avoid=(), margin=0.1, dtype=np.float64):
    """Element strategy: finite floats in [low, high], no subnormals, at least ``margin`` from each point in ``avoid``.

    Values within ``margin`` of an avoided point are pushed out to distance
    ``margin`` (no filtering, so no rejected examples; a pushed value may leave
    [low, high] by up to ``margin``).  Use it to keep finite differences away from
    kinks: ``tensors(elements=floats(avoid=[0]))`` for abs and relu.

    Example::

        >>> positive = floats(0.1, 10)                 # log, sqrt, pow bases
    """
    width = np.dtype(dtype).itemsize * 8
    strategy = st.floats(low, high, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=width)
    if avoid:
        cast = np.dtype(dtype).type
        avoid = tuple(float(a) for a in avoid)
        strategy = strategy.map(lambda v: float(cast(_push_away(v, avoid, margin))))
    return strategy


def _shapes(shape, min_dims, max_dims, min_side, max_side):
    if shape is None:
        return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)
    return shape if isinstance(shape, st.SearchStrategy) else st.just(tuple(shape))


def tensors(shape=None, dtype=np.float64, elements=None, requires_grad=False,
            min_dims=0, max_dims=3, min_side=0, max_side=4, unique=False):
    """Strategy for :class:`minigrad.Tensor` built on ``hypothesis.extra.numpy.arrays``.

    Args:
        shape: a tuple, a strategy of tuples, or None for any shape with
            ``min_dims..max_dims`` dimensions of ``min_side..max_side`` each
            (size-0 and size-1 dimensions included by default).
        dtype: NumPy dtype of the data.
        elements: strategy for the values; default (float dtypes) finite floats in
            [-10, 10] without subnormals, see :func:`floats`.
        requires_grad: passed to the Tensor (floating dtypes only).
        unique: all elements distinct (as ``arrays(unique=True)``).

    Example::

        >>> @given(x=tensors(shape=(2, 3), requires_grad=True))
        ... def test_tanh(x):
        ...     assert gradcheck(mg.tanh, [x])
    """
    dtype = np.dtype(dtype)
    if elements is None and dtype.kind == "f":
        elements = floats(dtype=dtype)
    arrays = hnp.arrays(dtype, _shapes(shape, min_dims, max_dims, min_side, max_side), elements=elements, unique=unique)
    return arrays.map(lambda a: Tensor(a, requires_grad=requires_grad))


def broadcastable_shapes(shape, min_dims=0, max_dims=3, min_side=0, max_side=4):
    """Strategy for shapes that broadcast with ``shape`` (a tuple or a strategy of tuples).

    As ``hypothesis.extra.numpy.broadcastable_shapes``; size-1 and size-0 sides included.

    Example::

        >>> @given(data=st.data(), x=tensors(requires_grad=True))
        ... def test_add(data, x):
        ...     y = data.draw(tensors(shape=broadcastable_shapes(x.shape), requires_grad=True))
        ...     assert gradcheck(mg.add, [x, y])
    """
    def of(s):
        # widen the side bounds to shape's own sides, or a side of 5 could only ever be matched by 1
        lo, hi = min([min_side, *s]), max([max_side, *s])
        return hnp.broadcastable_shapes(tuple(s), min_dims=min_dims, max_dims=max(max_dims, min_dims),
                                        min_side=lo, max_side=hi)

    return shape.flatmap(of) if isinstance(shape, st.SearchStrategy) else of(shape)


class BroadcastableShapes(NamedTuple):
    """``input_shapes`` (a tuple of shapes) and the ``result_shape`` they broadcast to."""

    input_shapes: tuple
    result_shape: tuple


def mutually_broadcastable_shapes(num_shapes, base_shape=(), min_dims=0, max_dims=3, min_side=0, max_side=4):
    """Strategy for ``num_shapes`` shapes that broadcast together (and with ``base_shape``).

    Draws a :class:`BroadcastableShapes` ``(input_shapes, result_shape)``, as
    ``hypothesis.extra.numpy.mutually_broadcastable_shapes``.

    Example::

        >>> @given(shapes=mutually_broadcastable_shapes(3))
        ... def test_where_shape(shapes):
        ...     c, x, y = shapes.input_shapes
        ...     out = mg.where(np.ones(c, bool), mg.zeros(x), mg.zeros(y))
        ...     assert out.shape == shapes.result_shape
    """
    strategy = hnp.mutually_broadcastable_shapes(
        num_shapes=num_shapes, base_shape=tuple(base_shape), min_dims=min_dims,
        max_dims=max(max_dims, min_dims), min_side=min_side, max_side=max_side)
    return strategy.map(lambda b: BroadcastableShapes(tuple(b.input_shapes), tuple(b.result_shape)))


def broadcastable_tensors(num_tensors=2, dtype=np.float64, elements=None, requires_grad=True,
                          min_dims=0, max_dims=3, min_side=0, max_side=4):
    """Strategy for a tuple of ``num_tensors`` Tensors whose shapes broadcast together.

    ``elements`` is one strategy for all, or a sequence with one per tensor
    (e.g. a positive denominator).  Other arguments as :func:`tensors`.

    Example::

        >>> @given(xy=broadcastable_tensors(2, elements=[floats(), floats(0.5, 5)]))
        ... def test_div(xy):
        ...     assert check_grads(mg.div, xy)
    """
    per_tensor = list(elements) if isinstance(elements, (list, tuple)) else [elements] * num_tensors
    if len(per_tensor) != num_tensors:
        raise ValueError(f"broadcastable_tensors: got {len(per_tensor)} element strategies for {num_tensors} tensors")

    def build(shapes):
        return st.tuples(*[
            tensors(shape=s, dtype=dtype, elements=e, requires_grad=requires_grad)
            for s, e in zip(shapes.input_shapes, per_tensor)
        ])

    return mutually_broadcastable_shapes(num_tensors, min_dims=min_dims, max_dims=max_dims,
                                         min_side=min_side, max_side=max_side).flatmap(build)
