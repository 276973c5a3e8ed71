"""Nests of tensors (tuples, lists, dicts) as flat lists of leaves and back, and a packed array's views.
"""
from __future__ import annotations

import math

import numpy as np

from .. import ops
from ..tensor import Tensor


# --------------------------------------------------------------------------- nested inputs and outputs
def flatten(tree, where: str = "scan/compile") -> tuple[list, object]:
    """The tensors of a nest of tuples, lists and dicts (in order), and its structure.

    Raises:
        TypeError: a leaf is not a Tensor (the message starts with ``where``).
    """
    if isinstance(tree, Tensor):
        return [tree], None
    if isinstance(tree, (tuple, list)):
        leaves, shapes = [], []
        for item in tree:
            sub, shape = flatten(item, where)
            leaves += sub
            shapes.append((len(sub), shape))
        return leaves, (type(tree), tuple(shapes))
    if isinstance(tree, dict):
        leaves, shapes = flatten(list(tree.values()), where)
        return leaves, (dict, (tuple(tree), shapes))
    raise TypeError(f"{where}: expected Tensors nested in tuples, lists and dicts; got {type(tree).__name__}")


def unflatten(structure, leaves):
    """The nest ``structure`` (from :func:`flatten`) holding ``leaves``."""
    if structure is None:
        return leaves[0]
    kind, shapes = structure
    if kind is dict:
        keys, inner = shapes
        return dict(zip(keys, unflatten(inner, leaves)))
    items, start = [], 0
    for n, shape in shapes:
        items.append(unflatten(shape, leaves[start:start + n]))
        start += n
    return kind(items)


def split_packed(packed, shapes) -> list:
    """Views of ``packed`` (an array or Tensor), one per shape, in order."""
    parts, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        part = packed[start:start + size]
        parts.append(part.reshape(shape) if isinstance(part, np.ndarray) else ops.reshape(part, shape))
        start += size
    return parts


def _in_order_of(tree, structure):
    """``tree`` with each dict's keys in the order ``structure`` (from :func:`flatten`) has them, where
    they are the same keys: a step may build its carry's dict anew, as eager allows."""
    if structure is None or not isinstance(tree, (dict, list, tuple)):
        return tree
    kind, shapes = structure
    if kind is dict:
        keys, inner = shapes
        if not isinstance(tree, dict) or set(tree) != set(keys):
            return tree
        return dict(zip(keys, _in_order_of([tree[k] for k in keys], inner)))
    if not isinstance(tree, kind) or len(tree) != len(shapes):
        return tree
    return kind(_in_order_of(item, sub) for item, (_, sub) in zip(tree, shapes))


def _describe(tree) -> str:
    """A nest's structure with each leaf as its shape and dtype, for error messages."""
    if isinstance(tree, Tensor):
        return f"{tree.dtype}{list(tree.shape)}"
    if isinstance(tree, dict):
        return "{" + ", ".join(f"{k!r}: {_describe(v)}" for k, v in tree.items()) + "}"
    inner = ", ".join(_describe(v) for v in tree)
    return f"({inner}{',' if len(tree) == 1 else ''})" if isinstance(tree, tuple) else f"[{inner}]"
