"""Gradient clipping, where PyTorch keeps it (``torch.nn.utils``), and ``functional_call``.

The clipping functions work in place on the ``.grad`` arrays of the given
parameters, skip parameters whose ``grad`` is None, and keep the gradients' dtype.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_", "functional_call"]


def _grads(parameters, where: str) -> list:
    """The gradient arrays of a Tensor or an iterable of Tensors (None grads skipped)."""
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    grads = []
    for p in parameters:
        if not isinstance(p, Tensor):
            raise TypeError(f"{where}: expected Tensors (e.g. model.parameters()); got {type(p).__name__}")
        if p.grad is not None:
            grads.append(p.grad._data)
    return grads


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False):
    """Rescale gradients so that their global norm is at most ``max_norm`` (Pascanu et al. 2013).

    As ``torch.nn.utils.clip_grad_norm_``: the total norm is the ``norm_type``-norm
    of all gradients taken together (``float("inf")`` for the max-norm); every
    gradient is multiplied by ``min(1, max_norm / (total + 1e-6))``.

    Args:
        parameters: a Tensor or an iterable of Tensors (e.g. ``model.parameters()``).
        max_norm: the largest allowed total norm, >= 0.
        norm_type: p of the p-norm, > 0 or inf.
        error_if_nonfinite: raise instead of scaling when the total norm is NaN or inf.

    Returns:
        The total norm before clipping, as a float (an ``np.float64``, so ``.item()`` works too);
        0.0 when no parameter has a gradient.

    Raises:
        ValueError: negative ``max_norm`` or non-positive ``norm_type``.
        RuntimeError: ``error_if_nonfinite`` and the total norm is NaN or inf.
    """
    if not isinstance(max_norm, numbers.Real) or max_norm < 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be a number >= 0; got {max_norm!r}")
    norm_type = float(norm_type)
    if not norm_type > 0:
        raise ValueError(f"clip_grad_norm_: norm_type must be > 0 or inf; got {norm_type}")
    grads = _grads(parameters, "clip_grad_norm_")
    if not grads:
        return np.float64(0.0)
    # The norm of the per-tensor norms is the norm of everything concatenated.
    norms = np.array([np.linalg.norm(g.ravel(), norm_type) if g.size else 0.0 for g in grads], dtype=np.float64)
    total = np.float64(np.linalg.norm(norms, norm_type))
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is {total}; "
            "pass error_if_nonfinite=False to scale anyway"
        )
    scale = float(max_norm) / (float(total) + 1e-6)
    if not scale >= 1.0:  # also for a NaN norm, which then poisons the grads, as in PyTorch
        for g in grads:
            g *= scale
    return total


def clip_grad_value_(parameters, clip_value: float) -> None:
    """Clamp every gradient element into [-clip_value, clip_value], in place.

    As ``torch.nn.utils.clip_grad_value_``; the element-wise clipping of
    Karpathy's min-char-rnn (``np.clip(d, -5, 5, out=d)``) and char-rnn.

    Raises ValueError if ``clip_value`` is negative.
    """
    if not isinstance(clip_value, numbers.Real) or clip_value < 0:
        raise ValueError(f"clip_grad_value_: clip_value must be a number >= 0; got {clip_value!r}")
    for g in _grads(parameters, "clip_grad_value_"):
        np.clip(g, -clip_value, clip_value, out=g)


def functional_call(module, parameters: dict, args=(), kwargs=None):
    """``module(*args, **kwargs)`` with some parameters replaced by the given tensors, for this call only.

    As ``torch.func.functional_call``: ``parameters`` maps dotted names from
    ``module.named_parameters()`` to Tensors.  It makes a module a function of
    its parameters, e.g. for ``minigrad.testing.gradcheck``::

        gradcheck(lambda x, w: functional_call(lin, {"weight": w}, (x,)), [x, lin.weight])

    ``args`` may be a single non-tuple argument.  Raises KeyError for a name that
    is not a parameter of ``module``.
    """
    if not isinstance(args, tuple):
        args = (args,)
    owners = dict(module.named_modules())
    swapped = []
    try:
        for name, value in parameters.items():
            prefix, _, leaf = name.rpartition(".")
            owner = owners.get(prefix)
            if owner is None or leaf not in owner._parameters:
                raise KeyError(f"functional_call: {type(module).__name__} has no parameter named {name!r}")
            swapped.append((owner, leaf, owner.__dict__[leaf]))
            object.__setattr__(owner, leaf, value)  # bypass registration: the module keeps its Parameters
        return module(*args, **(kwargs or {}))
    finally:
        for owner, leaf, original in reversed(swapped):
            object.__setattr__(owner, leaf, original)
