"""Buffer donation (``scan(..., donate_xs=True)``, JAX's): which memory a loop may write over, and
recomputing it from its tape entries when a graph is differentiated again.
"""
from __future__ import annotations

import weakref

import numpy as np

from .. import entries
from ..tensor import Tensor


_DONATED = weakref.WeakValueDictionary()  # id -> each array a loop has written over (donate_xs)


def refuse_donated(tensors, where: str):
    """Raise if one of ``tensors`` is memory an earlier loop was donated: it holds that loop's saved
    activations now, not its old values (JAX refuses a donated buffer the same way).

    Raises:
        RuntimeError: naming ``where`` and the tensor's shape.
    """
    for t in tensors:
        owner = entries.owner(t._data)
        if _DONATED.get(id(owner)) is owner:
            raise RuntimeError(
                f"{where}: a tensor of shape {t.shape} was donated to an earlier compiled loop, which wrote its "
                "activations over it; compute it anew instead of keeping it (e.g. a cell's project)")


def _donate(over_xs: dict, stacks: list, x_leaves: list, others: list) -> list:
    """Put each stack that may go over a donated xs (:func:`_over_xs`) into that tensor's array, if
    the array is contiguous, shares no memory with the loop's other inputs and holds values only
    recorded ops made, none saving them; returns which xs were so donated."""
    donated = []
    for s, k in over_xs.items():
        x = x_leaves[k]._data
        if x.flags.c_contiguous and x.flags.writeable and donatable(x_leaves[k]) and \
                not any(np.may_share_memory(x, other) for other in others + [y._data for y in x_leaves] if other is not x):
            stacks[s] = x
            donated.append(k)
            _DONATED[id(entries.owner(x))] = entries.owner(x)
    return donated


def donatable(t: Tensor, made_after: int = -1) -> bool:
    """Whether a loop may write over the memory of ``t`` (any shape and dtype) and replay its tape to
    get it back: its values were made by recorded ops, each newer than the tape entry index
    ``made_after``, whose VJP rules read none of them (:func:`minigrad.extend.saves`).  A leaf, a
    view of one, or memory an op saved for its backward is not donatable."""
    return _made_by_ops(t, entries.owner(t._data), made_after)


def _made_by_ops(t: Tensor, memory: np.ndarray, made_after: int) -> bool:
    # A function of its own, not a recursive closure: that would be a reference cycle holding
    # ``memory`` until the garbage collector ran (a checkpointed LSTM's peak went 158 -> 241 MB).
    entry = t._entry
    if entry is None or entry.inputs is None or entry.index <= made_after or entry.op.saves_output \
            or entry.op.saved_inputs is None:
        return False
    return all(i not in entry.op.saved_inputs and _made_by_ops(x, memory, made_after)
               for i, x in enumerate(entry.inputs) if np.may_share_memory(x._data, memory))


def _recompute(t: Tensor, memory: np.ndarray) -> Tensor:
    """``t`` made again, recorded, by replaying the tape entries that wrote its values into ``memory``
    (a donated array, since written over): the same function of the same inputs."""
    entry = t._entry
    inputs = tuple(_recompute(x, memory) if np.may_share_memory(x._data, memory) else x for x in entry.inputs)
    return entry.op(*inputs, **entry.params)
