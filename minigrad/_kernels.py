"""NumPy kernels that the op table in ``ops.py`` names as forwards or uses inside VJP rules.

Plain functions on arrays, no tensors: the ones that save a temporary by writing in place,
or that need more than one NumPy call.
"""
from __future__ import annotations

import numpy as np


def sum_to(a: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum ``a`` over the dimensions that broadcasting added or stretched, down to ``shape``."""
    lead = a.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and a.shape[lead + i] != 1)
    return (np.add.reduce(a, axis=axes) if axes else a).reshape(shape)


def addmm(input: np.ndarray, mat1: np.ndarray, mat2: np.ndarray) -> np.ndarray:  # noqa: A002
    """``input + mat1 @ mat2``, the sum written into the product's buffer (one (n, m) array, not two)."""
    out = np.matmul(mat1, mat2)
    if input.dtype == out.dtype:
        return np.add(out, input, out=out)
    return out + input  # e.g. a float64 input with float32 matrices: promote, as input + mat1 @ mat2 would


def sigmoid(a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """1 / (1 + exp(-a)) in a's float dtype (integers compute in float64, float16 in float32);
    into ``out`` if given (a buffer of a's shape and result dtype, as a ufunc's ``out=``).

    Three passes in one new array, each rounding once.  Where exp(-a) overflows (a below -88 in
    float32, -709 in float64) it is inf and the result 0: the true value rounded, except that
    results in the subnormal range (below 1e-38, resp. 1e-308) become 0 as well.
    """
    if a.dtype.kind != "f":
        a = a.astype(np.float64)
    elif a.dtype.itemsize < 4:  # float16's exp overflows already at a = -11
        y = sigmoid(a.astype(np.float32)).astype(a.dtype)
        if out is None:
            return y
        out[...] = y
        return out
    with np.errstate(over="ignore"):  # exp(-a) = inf gives sigmoid 0, as it should
        z = np.negative(a, out=np.empty_like(a) if out is None else out)  # (out=: a 0-d input gives an array)
        np.exp(z, out=z)
    z += 1
    return np.reciprocal(z, out=z)


def relu(a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """max(a, 0), NaN passing through (``np.maximum``); into ``out`` if given (as a ufunc's ``out=``)."""
    return np.maximum(a, 0, out=out)


# Integers of each float width: relu_backward selects g or 0 by masking g's bits.
_SAME_WIDTH_INTS = {2: np.int16, 4: np.int32, 8: np.int64}


def relu_backward(g: np.ndarray, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """g where x > 0 or x is NaN, else 0 (PyTorch's ``threshold_backward``: 0 even where g is inf
    or NaN), in g's dtype; into ``out`` if given (as a ufunc's ``out=``).

    Branch-free: g's bits AND a mask of all ones or all zeros.  ``np.where`` branches per element,
    and on a mask of random signs it mispredicts: 6 ns an element against 0.6 for these passes,
    which cost 2-3 us more per call, so small arrays keep ``np.where``.
    """
    if g.size >= 2048 and g.shape == x.shape and g.dtype.kind == "f" and g.dtype.itemsize in _SAME_WIDTH_INTS \
            and (out is None or out.dtype == g.dtype):  # (the size first: small arrays pay one test)
        ints = _SAME_WIDTH_INTS[g.dtype.itemsize]  # (longdouble has none of its width)
        mask = np.less_equal(x, 0).astype(ints)
        mask -= 1  # 0 where x <= 0, else -1: all bits set
        if out is None:
            mask &= g.view(ints)
            return mask.view(g.dtype)
        np.bitwise_and(g.view(ints), mask, out=out.view(ints))
        return out
    y = np.where(x <= 0, 0, g).astype(g.dtype, copy=False)
    if out is None:
        return y
    out[...] = y
    return out


def _reciprocal_std(centered: np.ndarray, axis: tuple | None, eps: float, count: int) -> np.ndarray:
    """1 / sqrt(mean(centered**2) + eps) over ``axis``, kept as (.., 1) dims."""
    variance = np.add.reduce(np.multiply(centered, centered), axis=axis, keepdims=True) * (1 / count if count else np.nan)
    return 1 / np.sqrt(variance + eps)  # an empty reduction: NaN, as np.mean's


def _centered(x: np.ndarray, axis: tuple | None) -> tuple[np.ndarray, int]:
    """x - mean(x) over ``axis`` (a new array), and how many elements each mean is over."""
    total = np.add.reduce(x, axis=axis, keepdims=True)
    count = x.size // total.size if total.size else 0
    return np.asarray(x - total * (1 / count if count else np.nan)), count  # (a 0-d x gives NumPy scalars)


def standardize(x: np.ndarray, axis: tuple | None, eps: float) -> np.ndarray:
    """(x - mean) / sqrt(var + eps) over ``axis`` (the biased variance), in x's float dtype.
    (``np.add.reduce`` times 1/count, not ``np.mean``, whose Python wrapper costs more than the sum.)"""
    centered, count = _centered(x, axis)
    centered *= _reciprocal_std(centered, axis, eps, count)
    return centered


def standardize_vjp(g: np.ndarray, y: np.ndarray, x: np.ndarray, axis: tuple | None, eps: float) -> np.ndarray:
    """The VJP of ``y = standardize(x)``: r * (g - mean(g) - y * mean(g * y)), r = 1 / sqrt(var(x) + eps)."""
    centered, count = _centered(x, axis)
    r = _reciprocal_std(centered, axis, eps, count)
    scale = 1 / count if count else np.nan
    mean_gy = np.add.reduce(np.multiply(g, y, out=centered), axis=axis, keepdims=True) * scale
    dx = np.subtract(g, np.multiply(y, mean_gy, out=centered), out=centered)  # centered's buffer, reused
    dx -= np.add.reduce(g, axis=axis, keepdims=True) * scale
    dx *= r
    return dx


def safe_log(x: np.ndarray) -> np.ndarray:
    """log(x) where x > 0, else 0 (pow's d/dy at x <= 0, as PyTorch's)."""
    positive = x > 0
    return np.where(positive, np.log(np.where(positive, x, 1)), 0).astype(x.dtype, copy=False)


def safe_log_backward(g: np.ndarray, x: np.ndarray) -> np.ndarray:
    """g / x where x > 0, else 0: the VJP of :func:`safe_log`."""
    positive = x > 0
    return np.where(positive, g / np.where(positive, x, 1), 0).astype(np.result_type(g, x), copy=False)


def tanh_derivative(y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """1 - y**2, where y = tanh(x); into ``out`` if given (as a ufunc's ``out=``)."""
    d = np.multiply(y, y, out=np.empty_like(y) if out is None else out)
    return np.subtract(1, d, out=d)


def sigmoid_derivative(y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """y * (1 - y), where y = sigmoid(x); into ``out`` if given (as a ufunc's ``out=``)."""
    d = np.subtract(1, y, out=np.empty_like(y) if out is None else out)
    d *= y
    return d


def tanh_backward(g: np.ndarray, y: np.ndarray) -> np.ndarray:
    """g * (1 - y**2), where y = tanh(x)."""
    return _times(g, tanh_derivative(y))


def sigmoid_backward(g: np.ndarray, y: np.ndarray) -> np.ndarray:
    """g * y * (1 - y), where y = sigmoid(x)."""
    return _times(g, sigmoid_derivative(y))


def _times(g, d):
    """g * d, written into ``d`` (a temporary of ours) unless g broadcasts it or changes its dtype."""
    if g.shape == d.shape and g.dtype == d.dtype:
        return np.multiply(g, d, out=d)
    return g * d


def tie_weights(a: np.ndarray, b: np.ndarray, loses) -> np.ndarray:
    """How much of the cotangent of maximum/minimum goes to ``a``: 0 where it loses, 1/2 on ties, else 1.

    As PyTorch: where ``a`` is NaN it neither loses nor ties, so it gets the whole cotangent.
    """
    w = 1 - loses(a, b).astype(np.result_type(a, b))
    w -= 0.5 * (a == b)
    return w


def sign(a: np.ndarray) -> np.ndarray:
    """The derivative of |a|: its sign, 0 at 0 and at NaN (as PyTorch's abs backward)."""
    return np.nan_to_num(np.sign(a, out=np.empty_like(a)), copy=False)


def inside(a: np.ndarray, lo, hi) -> np.ndarray:
    """Where ``lo <= a <= hi`` (either bound may be None): where clip passes the gradient."""
    mask = np.ones(a.shape, dtype=bool)
    if lo is not None:
        mask &= a >= lo
    if hi is not None:
        mask &= a <= hi
    return mask


def extremum_weights(x: np.ndarray, ans: np.ndarray, axis, keepdims: bool) -> np.ndarray:
    """Where ``x`` attains its max/min over ``axis``, with ties (and NaNs, where the extremum is NaN) splitting the weight equally."""
    a = ans if keepdims or axis is None else np.expand_dims(ans, axis)
    mask = x == a
    if np.isnan(ans).any():  # a NaN is the extremum (NaN propagates): it gets the cotangent, as PyTorch's max
        mask |= np.isnan(x) & np.isnan(a)
    mask = mask.astype(x.dtype)
    mask /= mask.sum(axis=axis, keepdims=True)
    return mask


def scatter_add(g: np.ndarray, index, basic: bool, shape) -> np.ndarray:
    """Zeros of ``shape`` with ``g`` added at ``index`` (repeated indices accumulate, as ``np.add.at``)."""
    out = np.zeros(shape, dtype=g.dtype)
    add_at(out, g, index, basic)
    return out


def add_at(buffer: np.ndarray, g: np.ndarray, index, basic: bool) -> None:
    """``buffer[index] += g`` in place; ``basic`` indices (a view, no repeats) add through the view."""
    if not basic:
        np.add.at(buffer, index, g)
        return
    view = buffer[index]
    if type(view) is np.ndarray:  # add through the view: `buffer[index] += g` would copy it back
        view += g
    else:  # a single element
        buffer[index] += g
