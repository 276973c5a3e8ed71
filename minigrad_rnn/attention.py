"""Attention: let each step of a decoder pick what to read from all the encoder's states.

Both modules take a query (B, Hq) — a decoder's state — and keys and values (T, B, Hk), time-major
as the sequence driver's outputs, with optional ``lengths``.  They score every key against the
query, softmax the scores over time (padding excluded exactly: its weight is 0, not small), and
return the weighted sum of the values (the context, (B, Hv)) and the weights (B, T)::

    attention = AdditiveAttention(query_size=16, key_size=32, dtype=np.float64)
    context, weights = attention(h, encoder_out, lengths=[7, 5, 2])

* :class:`AdditiveAttention`: ``score(q, k_t) = v . tanh(W_q q + W_k k_t)`` (Bahdanau, Cho &
  Bengio 2015, "Neural Machine Translation by Jointly Learning to Align and Translate", eq. 6 and
  appendix A.1.2).
* :class:`MultiplicativeAttention`: ``"dot"``: ``q . k_t``; ``"general"``: ``q W k_t`` (Luong, Pham &
  Manning 2015, "Effective Approaches to Attention-based Neural Machine Translation", eq. 8).

A decoder that attends at every step computes the key-only part once per sequence:
``memory = attention.remember(keys, values, lengths)`` then ``attention.attend(query, memory)``.
"""
from __future__ import annotations

import math

import numpy as np

from minigrad import Tensor, functional as F, ops
from minigrad.nn import Module, Parameter, init
from minigrad.tensor import _rng

from minigrad._checks import check_size, float_dtype

from .utils import as_tensor

__all__ = ["AdditiveAttention", "MultiplicativeAttention", "Memory"]


class Memory:
    """What a decoder attends to: values (T, B, Hv), the keys as the scores need them, the padding mask.

    ``keys`` is (T, B, A) for additive attention (``W_k k_t``, computed once) and (T, B, Hq) for
    multiplicative attention (``W k_t`` for "general", the keys themselves for "dot").  ``valid`` is
    None or a (T, B) bool array, False on padding.
    """

    __slots__ = ("keys", "values", "valid")

    def __init__(self, keys: Tensor, values: Tensor, valid):
        self.keys, self.values, self.valid = keys, values, valid


def _valid(lengths, T: int, B: int, where: str):
    """(T, B) bool, ``t < lengths[b]``; None when every sequence has all T steps."""
    if lengths is None:
        return None
    lengths = np.asarray(lengths)
    if lengths.dtype.kind not in "iu" or lengths.shape != (B,):
        raise ValueError(f"{where}: lengths must be {B} integers (one per sequence of the batch); got {lengths!r}")
    if lengths.min() < 1 or lengths.max() > T:
        raise ValueError(f"{where}: every length must be in [1, {T}] (the keys have {T} steps); got {lengths.tolist()}")
    valid = np.arange(T)[:, None] < lengths[None, :]
    return None if valid.all() else valid


class _Attention(Module):
    """What both kinds share: the checks, the masked softmax over time and the weighted sum."""

    def remember(self, keys, values=None, lengths=None) -> Memory:
        """The encoder's side, once per sequence: keys (T, B, Hk), values (T, B, Hv) (the keys if None),
        ``lengths`` None or B ints in [1, T].  Raises ValueError on shapes or lengths that do not fit."""
        name = type(self).__name__
        keys = as_tensor(keys, name)
        values = keys if values is None else as_tensor(values, name)
        if keys.ndim != 3 or keys.shape[-1] != self.key_size:
            raise ValueError(f"{name}: keys must be (T, B, {self.key_size}); got shape {keys.shape}")
        if values.ndim != 3 or values.shape[:2] != keys.shape[:2]:
            raise ValueError(f"{name}: values must be (T, B, Hv) with the keys' T and B {keys.shape[:2]}; "
                             f"got shape {values.shape}")
        return Memory(self._project_keys(keys), values, _valid(lengths, *keys.shape[:2], name))

    def attend(self, query, memory: Memory) -> tuple[Tensor, Tensor]:
        """``(context (B, Hv), weights (B, T))`` for a query (B, Hq) against a :meth:`remember` ed memory.
        Raises ValueError for a query of the wrong shape."""
        query = as_tensor(query, type(self).__name__)
        T, B = memory.keys.shape[:2]
        if query.shape != (B, self.query_size):
            raise ValueError(f"{type(self).__name__}: query must be (B, query_size) = ({B}, {self.query_size}); "
                             f"got shape {query.shape}")
        scores = self._scores(query, memory.keys)  # (T, B)
        if memory.valid is not None:  # padding gets -inf, so exactly 0 weight and no gradient
            scores = ops.where(memory.valid, scores, -np.inf)
        weights = F.softmax(scores, axis=0)
        context = ops.sum(ops.expand_dims(weights, -1) * memory.values, axis=0)
        return context, ops.transpose(weights, 1, 0)

    def forward(self, query, keys, values=None, lengths=None) -> tuple[Tensor, Tensor]:
        """``(context (B, Hv), weights (B, T))``: :meth:`remember` then :meth:`attend`."""
        return self.attend(query, self.remember(keys, values, lengths))


class AdditiveAttention(_Attention):
    """Bahdanau attention: ``score(q, k_t) = v . tanh(W_q q + W_k k_t)``.

    Args:
        query_size: Hq, the query's features.
        key_size: Hk, the keys' features.
        hidden_size: the size A of the tanh layer (default ``query_size``).
        dtype: the parameters' dtype: ``weight_query`` (A, Hq), ``weight_key`` (A, Hk) and ``v`` (A,),
            which start U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as ``torch.nn.Linear``.
        rng: the ``numpy.random.Generator`` they are drawn from.

    Raises:
        ValueError: a size that is not a positive integer.
    """

    def __init__(self, query_size: int, key_size: int, hidden_size: int | None = None, *, dtype=np.float32,
                 rng=None):
        super().__init__()
        name = type(self).__name__
        hidden_size = query_size if hidden_size is None else hidden_size
        for size, what in ((query_size, "query_size"), (key_size, "key_size"), (hidden_size, "hidden_size")):
            check_size(size, what, name)
        dtype, rng = float_dtype(dtype, name), _rng(rng)
        self.query_size, self.key_size, self.hidden_size = query_size, key_size, hidden_size

        def uniform(shape, fan_in):
            bound = 1 / math.sqrt(fan_in)
            return init.uniform_(Parameter(np.empty(shape, dtype)), -bound, bound, rng)

        self.weight_query = uniform((hidden_size, query_size), query_size)
        self.weight_key = uniform((hidden_size, key_size), key_size)
        self.v = uniform((hidden_size,), hidden_size)

    def _project_keys(self, keys):
        return keys @ self.weight_key.T  # (T, B, A): once per sequence, not once per query

    def _scores(self, query, keys):
        return ops.tanh(keys + query @ self.weight_query.T) @ self.v  # (T, B)


class MultiplicativeAttention(_Attention):
    """Luong attention: ``score(q, k_t) = q . k_t`` ("dot") or ``q W k_t`` ("general").

    Args:
        query_size: Hq, the query's features.
        key_size: Hk, the keys' features ("dot" needs Hk == Hq).
        score: "general" (default) or "dot".
        dtype: the dtype of "general"'s ``weight`` (Hq, Hk), which starts U(-1/sqrt(Hk), 1/sqrt(Hk)).
        rng: the ``numpy.random.Generator`` it is drawn from.

    Raises:
        ValueError: an unknown ``score``, or "dot" with ``query_size != key_size``.
    """

    def __init__(self, query_size: int, key_size: int, score: str = "general", *, dtype=np.float32, rng=None):
        super().__init__()
        name = type(self).__name__
        check_size(query_size, "query_size", name)
        check_size(key_size, "key_size", name)
        if score not in ("general", "dot"):
            raise ValueError(f"{name}: score must be 'general' or 'dot'; got {score!r}")
        if score == "dot" and query_size != key_size:
            raise ValueError(f"{name}: 'dot' scores need query_size == key_size; got {query_size} and {key_size}")
        self.query_size, self.key_size, self.score = query_size, key_size, score
        if score == "general":
            bound = 1 / math.sqrt(key_size)
            self.weight = init.uniform_(Parameter(np.empty((query_size, key_size), float_dtype(dtype, name))),
                                        -bound, bound, _rng(rng))

    def _project_keys(self, keys):
        return keys if self.score == "dot" else keys @ self.weight.T  # (T, B, Hq)

    def _scores(self, query, keys):
        return ops.sum(keys * query, axis=-1)  # (T, B)

    def extra_repr(self) -> str:
        return f"{self.query_size}, {self.key_size}, score={self.score!r}"
