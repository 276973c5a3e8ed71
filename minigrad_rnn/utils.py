"""Nested recurrent states: map over them, check their shapes, detach them; input checks; eval mode.

A state is a Tensor (or NumPy array) or a tuple, list or dict of states (an LSTM's is the
tuple ``(h, c)``); ``None`` entries are kept as they are.  These few helpers
are what lets one sequence driver run any cell, whatever its state looks like.
"""
from __future__ import annotations

import contextlib

import numpy as np

from minigrad import Tensor, no_grad, ops


def tree_map(fn, tree, *others):
    """Apply ``fn`` to the tensors of ``tree`` (and the matching ones of ``others``), keeping the nesting."""
    if isinstance(tree, (Tensor, np.ndarray)):
        return fn(tree, *others)
    if tree is None:
        return None
    if isinstance(tree, dict):
        return {key: tree_map(fn, tree[key], *(o[key] for o in others)) for key in tree}
    if isinstance(tree, (tuple, list)):
        return type(tree)(tree_map(fn, *items) for items in zip(tree, *others))
    raise TypeError(f"a recurrent state must be a Tensor or a tuple, list or dict of them; got {type(tree).__name__}")


def tree_leaves(tree) -> list:
    """The tensors of a nested state, in order (dicts in insertion order)."""
    leaves = []
    tree_map(leaves.append, tree)
    return leaves


def tree_paths(tree, name: str = "hidden") -> list:
    """A printable name per leaf, for error messages: ``hidden``, ``hidden[0]``, ``hidden['c']``."""
    if isinstance(tree, dict):
        return [p for key in tree for p in tree_paths(tree[key], f"{name}[{key!r}]")]
    if isinstance(tree, (tuple, list)):
        return [p for i, item in enumerate(tree) for p in tree_paths(item, f"{name}[{i}]")]
    return [] if tree is None else [name]


def tree_unflatten(like, leaves):
    """A state nested as ``like`` whose tensors are ``leaves`` (in :func:`tree_leaves` order)."""
    leaves = iter(leaves)
    return tree_map(lambda _: next(leaves), like)


def same_structure(a, b) -> bool:
    """Whether two states nest the same way (same container types, lengths and keys)."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (Tensor, np.ndarray)):
        return isinstance(b, (Tensor, np.ndarray))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_structure(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return (isinstance(b, (tuple, list)) and len(a) == len(b)
                and all(same_structure(x, y) for x, y in zip(a, b)))
    return False


def detach_state(state):
    """The same nested state, cut from the graph: what truncated BPTT carries across chunks.

    ``state`` is a Tensor or tuples/lists/dicts of Tensors (e.g. an LSTM's ``(h_n, c_n)``);
    the result shares the data and nesting but does not require grad, so the next chunk's
    backward pass stops here (Williams & Peng 1990; as ``h.detach()`` in PyTorch)::

        state = None
        for chunk in chunks:                      # each (T_chunk, B, I)
            out, state = lstm(chunk, state)
            loss(out).backward()
            state = detach_state(state)

    Raises TypeError for anything that is not a Tensor, tuple, list, dict or None.
    """
    return tree_map(Tensor.detach, state)


def as_tensor(x, where: str) -> Tensor:
    """Tensors pass through; NumPy arrays become constant tensors (no copy)."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray):
        return Tensor._from_array(x)
    raise TypeError(f"{where}: expected a minigrad Tensor or a NumPy array; got {type(x).__name__}")


def check_input(where: str, x: Tensor, input_size, dtype):
    """PyTorch's input checks: feature size and dtype. Raises ValueError naming both values."""
    if input_size is not None and x.shape[-1] != input_size:
        raise ValueError(
            f"{where}: input.size(-1) must be equal to input_size. Expected {input_size}, got {x.shape[-1]}"
        )
    if dtype is not None and x.dtype != dtype:
        raise ValueError(
            f"{where}: input dtype ({x.dtype}) does not match weight dtype ({dtype}). "
            f"Convert the input with .astype(np.{dtype}) or build the module with dtype=np.{x.dtype}"
        )


def check_state(where: str, given, expected, batched: bool, batch_axis: int, name: str = "hx", hint: str = ""):
    """Check a user's state against ``expected`` (a zero state of the right shapes) and return it as Tensors.

    ``batched=False`` means the user's state lacks the batch axis ``batch_axis``; it is added
    (as PyTorch unsqueezes ``hx`` for unbatched input).  ``hint`` is appended to a wrong-batch
    message (e.g. about ``batch_first``).

    Raises:
        ValueError: a different nesting, number of dimensions, size or dtype, naming the
            expected and given shapes (``"LSTM: Expected hidden[0] size (2, 3, 6), got (1, 3, 6)"``).
    """
    if not same_structure(expected, given):
        raise ValueError(
            f"{where}: Expected {name} to be {_describe(expected)}, got {_describe(given)}"
        )
    kind = "batched" if batched else "unbatched"
    input_dims = (3 if batch_axis == 1 else 2) - (not batched)
    checked = []
    for path, want, got in zip(tree_paths(expected, name), tree_leaves(expected), tree_leaves(given)):
        got = as_tensor(got, where)
        shape = want.shape if batched else want.shape[:batch_axis] + want.shape[batch_axis + 1:]
        if got.ndim != len(shape):
            raise ValueError(
                f"{where}: For {kind} {input_dims}-D input, {path} should also be {len(shape)}-D "
                f"of size {shape}, got a {got.ndim}-D tensor of size {got.shape}"
            )
        if got.shape != shape:
            wrong_batch = batched and got.shape[batch_axis] != shape[batch_axis]
            raise ValueError(f"{where}: Expected {path} size {shape}, got {got.shape}" + (hint if wrong_batch else ""))
        if got.dtype != want.dtype:
            raise ValueError(f"{where}: {path} has dtype {got.dtype} but the weights are {want.dtype}")
        checked.append(got if batched else ops.expand_dims(got, batch_axis))
    return tree_unflatten(expected, checked)


def _describe(state) -> str:
    if isinstance(state, (Tensor, np.ndarray)):
        return "a tensor"
    if isinstance(state, (tuple, list)):
        return f"a {type(state).__name__} of {len(state)} ({', '.join(_describe(s) for s in state)})"
    if isinstance(state, dict):
        return f"a dict with keys {list(state)}"
    return type(state).__name__


@contextlib.contextmanager
def evaluating(model):
    """Inside the block: ``model`` in eval mode (no dropout) and nothing recorded on the tape.

    The mode the model had before is restored on exit, also after an error or when a
    generator holding the block is closed early (``model.train(was_training)``).
    """
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            yield model
    finally:
        model.train(was_training)
