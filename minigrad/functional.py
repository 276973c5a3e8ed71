"""``linear``, losses and activations built from minigrad ops (and the softmax shift, an op while tracing).

All are numerically stable: the log-sum-exp trick keeps logits of magnitude
1e4 finite in value and gradient, with no NumPy warnings.
"""
from __future__ import annotations

import math

import numpy as np

from . import ops
from ._checks import check_probability
from .modes import MODE
from .extend import defjvp, defvjp, primitive
from .tensor import Tensor, _rng, as_operand

_REDUCTIONS = ("mean", "sum", "none")


def _finite_max(x: np.ndarray, axes) -> np.ndarray:
    m = np.max(x, axis=axes, keepdims=True, initial=-np.inf)
    return np.where(np.isfinite(m), m, 0)  # an all -inf row stays -inf, not NaN


# The shift cancels out of a softmax, so its derivative is taken as zero.  Eagerly it is a constant;
# while a step is traced it is an op (with a zero derivative), so that the compiled step computes it
# afresh from its own values instead of repeating the traced ones.
def _zero(g, ans, x, axes):
    return ops.broadcast_to(ans * 0, x.shape)


_MAX_SHIFT = defjvp(defvjp(primitive(_finite_max, "max_shift"), _zero), lambda t, ans, x, axes: ans * 0)


def _max_shift(x, axis, where: str):
    """``x`` as a tensor and its max over ``axis``, not differentiated: exp(x - max) is <= 1, never overflows."""
    x = as_operand(x, op=where)
    if x.dtype.kind != "f":  # integer logits: compute in float64, as np.exp would
        x = ops.astype(x, np.float64)
    axes = ops._normalize_axis(axis, x.ndim, where)
    if MODE.get().tracing:
        return x, _MAX_SHIFT(x, axes=axes)
    return x, _finite_max(x._data, axes)


def _log_sum_exp(shifted: Tensor, axis) -> Tensor:
    with np.errstate(divide="ignore"):  # an empty axis sums to 0 and gives -inf, as PyTorch
        return ops.log(ops.sum(ops.exp(shifted), axis=axis, keepdims=True))


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:  # noqa: A002 - PyTorch's name
    """``input @ weight.T + bias``, as ``torch.nn.functional.linear``.

    input (..., in) or (in,), weight (out, in), bias (out,) or None -> (..., out).  The
    leading axes are flattened first, so a whole sequence (T, B, in) is ONE 2-D GEMM
    (NumPy runs a batched matmul as one GEMM per leading index), and the bias is added
    into the product's buffer by :func:`minigrad.addmm`.

    Raises:
        ValueError: weight not 2-D, or input not ending in weight's in (names the shapes).
    """
    input, weight = as_operand(input, op="linear"), as_operand(weight, op="linear")  # noqa: A001
    if weight.ndim != 2 or input.ndim == 0 or input.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: expected input (..., in) and weight (out, in); got shapes {input.shape} and {weight.shape}")
    rows = ops.reshape(input, (math.prod(input.shape[:-1]), input.shape[-1]))  # not -1: ambiguous when in is 0
    y = rows @ weight.T if bias is None else ops.addmm(bias, rows, weight.T)
    return ops.reshape(y, input.shape[:-1] + (weight.shape[0],))


def logsumexp(x: Tensor, axis=-1, keepdims: bool = False) -> Tensor:
    """log(sum(exp(x), axis)), stably (``scipy.special.logsumexp``). ``axis=None`` reduces everything."""
    x, m = _max_shift(x, axis, "logsumexp")
    out = _log_sum_exp(x - m, axis) + m
    return out if keepdims else ops.squeeze(out, axis) if axis is not None else ops.reshape(out, ())


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """exp(x) / sum(exp(x)) along ``axis``, stably."""
    x, m = _max_shift(x, axis, "softmax")
    e = ops.exp(x - m)
    return e / ops.sum(e, axis=axis, keepdims=True)


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """x - logsumexp(x) along ``axis``: log-probabilities, stably (the shift is never added back,
    so float32 keeps its relative accuracy at logits of 1e4)."""
    x, m = _max_shift(x, axis, "log_softmax")
    shifted = x - m
    return shifted - _log_sum_exp(shifted, axis)


def _reduce(loss: Tensor, reduction: str, where: str, count=None) -> Tensor:
    if reduction == "none":
        return loss
    total = ops.sum(loss)
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / (loss.size if count is None else count)
    raise ValueError(f"{where}: reduction must be one of {_REDUCTIONS}; got {reduction!r}")


def cross_entropy(logits: Tensor, target, ignore_index=None, reduction: str = "mean") -> Tensor:
    """Softmax cross-entropy over the class axis -1, as ``torch.nn.functional.cross_entropy``.

    Args:
        logits: float (..., C) unnormalized scores.
        target: integer class indices of shape ``logits.shape[:-1]``, values in [0, C).
        ignore_index: a target value whose positions contribute neither loss nor gradient
            (``"mean"`` then averages over the other positions, as PyTorch).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (loss per position, shape of ``target``).

    Returns the loss in nats.

    Raises:
        ValueError: target shape != logits.shape[:-1], non-integer targets, a class index out
            of range, or an unknown reduction.
    """
    logits = as_operand(logits)
    target = np.asarray(target.data if isinstance(target, Tensor) else target)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"cross_entropy: reduction must be one of {_REDUCTIONS}; got {reduction!r}")
    if logits.ndim == 0 or target.shape != logits.shape[:-1]:
        raise ValueError(
            f"cross_entropy: logits of shape {logits.shape} need a target of shape {logits.shape[:-1]} "
            f"(class axis -1); got target shape {target.shape}"
        )
    if target.dtype.kind not in "iu":
        raise ValueError(f"cross_entropy: target must hold integer class indices; got dtype {target.dtype}")
    n_classes = logits.shape[-1]
    target = target.reshape(-1)
    valid = np.ones(target.shape, dtype=bool) if ignore_index is None else target != ignore_index
    if np.any((target[valid] < 0) | (target[valid] >= n_classes)):
        bad = target[valid][(target[valid] < 0) | (target[valid] >= n_classes)][0]
        raise ValueError(f"cross_entropy: target {bad} is out of range for {n_classes} classes")
    logp = ops.reshape(log_softmax(logits, axis=-1), (-1, n_classes))
    picked = logp[np.arange(target.size), np.where(valid, target, 0)]
    loss = -picked if ignore_index is None else ops.where(valid, -picked, 0)
    loss = ops.reshape(loss, logits.shape[:-1])
    return _reduce(loss, reduction, "cross_entropy", count=int(valid.sum()) if ignore_index is not None else None)


def mse_loss(input: Tensor, target, reduction: str = "mean") -> Tensor:  # noqa: A002 - PyTorch's name
    """Mean squared error, as ``torch.nn.functional.mse_loss``. Raises ValueError if the shapes differ."""
    input = as_operand(input)
    target = as_operand(target, input)
    if input.shape != target.shape:
        raise ValueError(f"mse_loss: input shape {input.shape} and target shape {target.shape} must be equal")
    diff = input - target
    return _reduce(diff * diff, reduction, "mse_loss")


def dropout(x: Tensor, p: float = 0.5, training: bool = True, rng=None) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p) (inverted dropout,
    Srivastava et al. 2014; as ``torch.nn.functional.dropout``). Identity when not training.

    ``rng`` is a ``numpy.random.Generator`` (fresh if None). Raises ValueError unless 0 <= p <= 1.
    """
    check_probability(p, "p", "dropout")
    x = as_operand(x)
    if not training or p == 0:
        return x
    if p == 1:
        return x * 0
    keep = _rng(rng).random(x.shape) >= p
    return x * Tensor._from_array(keep.astype(x.dtype) / np.asarray(1 - p, dtype=x.dtype))


def embedding(weight: Tensor, indices, padding_idx=None) -> Tensor:
    """Rows of ``weight`` (V, D) picked by integer ``indices`` (any shape) -> (*indices.shape, D).

    As ``torch.nn.functional.embedding``: repeated indices accumulate gradient;
    positions equal to ``padding_idx`` pass no gradient to that row.

    Raises:
        ValueError: non-integer indices, or an index outside [0, V).
    """
    indices = np.asarray(indices.data if isinstance(indices, Tensor) else indices)
    if indices.dtype.kind not in "iu":
        raise ValueError(f"embedding: indices must be integers; got dtype {indices.dtype}")
    n = weight.shape[0]
    if indices.size and (indices.min() < 0 or indices.max() >= n):
        bad = indices.min() if indices.min() < 0 else indices.max()
        raise ValueError(f"embedding: index {bad} is out of range for a table of {n} rows (weight shape {weight.shape})")
    rows = weight[indices]
    if padding_idx is None:
        return rows
    padded = (indices == padding_idx)[..., None]
    return ops.where(padded, rows.detach(), rows)  # padding rows: same values, no gradient
