"""In-place initializers with PyTorch's names (``torch.nn.init``).

Each fills ``tensor`` in place (under ``no_grad``, bumping its version counter)
and returns it.  Random ones draw from ``rng``, a ``numpy.random.Generator``
(a fresh ``np.random.default_rng()`` if None), so a whole model is
reproducible from one seed.  Samples are drawn in float64 and cast to the
tensor's dtype.
"""
from __future__ import annotations

import math

import numpy as np

from ..modes import no_grad
from ..tensor import Tensor, _rng

__all__ = ["uniform_", "normal_", "xavier_uniform_", "orthogonal_", "zeros_", "ones_", "constant_"]


def _check(tensor, where: str):
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{where}: expected a minigrad Tensor; got {type(tensor).__name__}")
    if tensor.dtype.kind != "f":
        raise TypeError(f"{where}: expected a floating-point tensor; got dtype {tensor.dtype}")


def _fill(tensor: Tensor, values) -> Tensor:
    with no_grad():
        return tensor.copy_(values)


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0, rng=None) -> Tensor:
    """Fill with samples of U(a, b)."""
    _check(tensor, "uniform_")
    return _fill(tensor, _rng(rng).uniform(a, b, tensor.shape))


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, rng=None) -> Tensor:
    """Fill with samples of N(mean, std^2)."""
    _check(tensor, "normal_")
    return _fill(tensor, _rng(rng).normal(mean, std, tensor.shape))


def constant_(tensor: Tensor, val: float) -> Tensor:
    """Fill with ``val``."""
    _check(tensor, "constant_")
    return _fill(tensor, val)


def zeros_(tensor: Tensor) -> Tensor:
    """Fill with 0."""
    return constant_(tensor, 0.0)


def ones_(tensor: Tensor) -> Tensor:
    """Fill with 1."""
    return constant_(tensor, 1.0)


def _fans(tensor: Tensor, where: str) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight (out, in, *kernel), as PyTorch computes them."""
    _check(tensor, where)
    if tensor.ndim < 2:
        raise ValueError(f"{where}: needs a tensor with at least 2 dimensions; got shape {tensor.shape}")
    receptive = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def xavier_uniform_(tensor: Tensor, gain: float = 1.0, rng=None) -> Tensor:
    """Fill with U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010).

    Raises ValueError for tensors with fewer than 2 dimensions.
    """
    fan_in, fan_out = _fans(tensor, "xavier_uniform_")
    a = gain * math.sqrt(3.0) * math.sqrt(2.0 / (fan_in + fan_out))
    return uniform_(tensor, -a, a, rng)


def orthogonal_(tensor: Tensor, gain: float = 1.0, rng=None) -> Tensor:
    """Fill with a (semi-)orthogonal matrix times ``gain`` (Saxe et al. 2013).

    As ``torch.nn.init.orthogonal_``: the tensor is viewed as (rows, rest); a
    Gaussian matrix of that shape (transposed if wide) is QR-factorized and Q's
    columns are sign-corrected by diag(R), so Q is uniform over orthogonal
    matrices.  Rows are orthonormal if rows <= rest, else columns are.

    Raises ValueError for tensors with fewer than 2 dimensions.
    """
    _fans(tensor, "orthogonal_")  # checks the type and rank
    if tensor.size == 0:
        return tensor
    rows = tensor.shape[0]
    cols = tensor.size // rows
    flat = _rng(rng).standard_normal((rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return _fill(tensor, gain * q.reshape(tensor.shape))
