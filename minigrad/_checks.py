"""Argument checks shared by minigrad and minigrad_rnn: one mistake, one exception type and wording.

The wording follows PyTorch's where it has one (``torch.nn.RNN``'s "should be of type int",
"must be greater than zero", the dropout "should be a number in range [0, 1]").
"""
from __future__ import annotations

import numbers

import numpy as np


def check_size(value, name: str, where: str, minimum: int = 1) -> int:
    """``value`` if it is an integer >= ``minimum``.

    Raises:
        TypeError: not an integer (a bool is not one).
        ValueError: below ``minimum``.
    """
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{where}: {name} should be of type int, got: {type(value).__name__}")
    if value < minimum:
        bound = "greater than zero" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{where}: {name} must be {bound}; got {value}")
    return int(value)


def check_probability(p, name: str, where: str) -> float:
    """``p`` if it is a number in [0, 1] (a dropout probability). Raises ValueError otherwise."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
        raise ValueError(
            f"{where}: {name} should be a number in range [0, 1] representing the probability of an "
            f"element being zeroed; got {p!r}"
        )
    return float(p)


def float_dtype(dtype, where: str) -> np.dtype:
    """``dtype`` as a NumPy floating-point dtype. Raises TypeError for any other dtype."""
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"{where}: dtype must be a floating-point type (np.float32 or np.float64); got {dtype}")
    return dtype
