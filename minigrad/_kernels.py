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
    return (a.sum(axis=axes) if axes else a).reshape(shape)


def addmm(input: np.ndarray, mat1: np.ndarray, mat2: np.ndarray) -> np.ndarray:  # noqa: A002
    """``input + mat1 @ mat2``, the sum written into the product's buffer (one (n, m) array, not two)."""
    out = np.matmul(mat1, mat2)
    if input.dtype == out.dtype:
        return np.add(out, input, out=out)
    return out + input  # e.g. a float64 input with float32 matrices: promote, as input + mat1 @ mat2 would


def sigmoid(a: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-a)) with one new array; integer input computes in float64."""
    a = a if a.dtype.kind == "f" else a.astype(np.float64)
    # Clamp x from below so exp(-x) stays finite: where the clamp bites, sigmoid(x) is already
    # below the smallest normal float, so nothing is lost and no overflow warning is raised.
    z = np.maximum(a, _exp_floor(a.dtype), out=np.empty_like(a))
    np.negative(z, out=z)
    np.exp(z, out=z)
    z += 1
    return np.reciprocal(z, out=z)


def _exp_floor(dtype, _cache={}):  # noqa: B006 - a per-dtype cache
    if dtype not in _cache:
        _cache[dtype] = dtype.type(np.log(np.finfo(dtype).tiny))
    return _cache[dtype]


# tanh and sigmoid get fused backward kernels (as PyTorch's tanh_backward): one NumPy pass
# instead of three tape ops per VJP.
def tanh_backward(g: np.ndarray, y: np.ndarray) -> np.ndarray:
    """g * (1 - y**2), where y = tanh(x)."""
    d = np.multiply(y, y, out=np.empty_like(y))
    np.subtract(1, d, out=d)
    return _times(g, d)


def sigmoid_backward(g: np.ndarray, y: np.ndarray) -> np.ndarray:
    """g * y * (1 - y), where y = sigmoid(x)."""
    d = np.subtract(1, y, out=np.empty_like(y))
    d *= y
    return _times(g, d)


def _times(g, d):
    """g * d, written into ``d`` (a temporary of ours) unless g broadcasts it or changes its dtype."""
    if g.shape == d.shape and g.dtype == d.dtype:
        return np.multiply(g, d, out=d)
    return g * d


def tie_weights(a: np.ndarray, b: np.ndarray, strict) -> np.ndarray:
    """How much of the cotangent of maximum/minimum goes to ``a``: 1 where it wins, 1/2 on ties (as PyTorch)."""
    w = strict(a, b).astype(np.result_type(a, b))
    w += 0.5 * (a == b)
    return w


def inside(a: np.ndarray, lo, hi) -> np.ndarray:
    """Where ``lo <= a <= hi`` (either bound may be None): where clip passes the gradient."""
    mask = np.ones(a.shape, dtype=bool)
    if lo is not None:
        mask &= a >= lo
    if hi is not None:
        mask &= a <= hi
    return mask


def extremum_weights(x: np.ndarray, ans: np.ndarray, axis, keepdims: bool) -> np.ndarray:
    """Where ``x`` attains its max/min over ``axis``, with ties splitting the weight equally."""
    a = ans if keepdims or axis is None else np.expand_dims(ans, axis)
    mask = (x == a).astype(x.dtype)
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
