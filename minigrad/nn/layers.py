"""Layers, activations and losses with PyTorch's names, arguments and default initialization.

Every layer with parameters takes ``dtype=`` (float32 by default; float64 for
gradient checks) and every random initialization takes ``rng=``, a
``numpy.random.Generator`` (a fresh ``np.random.default_rng()`` if None), so a
run is reproducible from one seed.
"""
from __future__ import annotations

import math
import numbers
from collections import OrderedDict

import numpy as np

from .. import functional as F
from .. import ops
from .._checks import check_probability, check_size, float_dtype
from ..modes import no_grad
from ..tensor import Tensor, _rng, as_operand
from . import init
from .module import Module, Parameter

__all__ = [
    "Linear", "Embedding", "Dropout", "LayerNorm", "Sequential",
    "Tanh", "Sigmoid", "ReLU", "CrossEntropyLoss", "MSELoss",
]


class Linear(Module):
    """y = x @ weight.T + bias, as ``torch.nn.Linear``.

    Shapes: input (..., in_features) -> output (..., out_features);
    ``weight`` (out_features, in_features), ``bias`` (out_features,) or None.

    Initialization as PyTorch: kaiming_uniform_(a=sqrt(5)) for the weight, which
    is U(-1/sqrt(in_features), 1/sqrt(in_features)), and the same for the bias.

    Raises:
        ValueError: non-integer or negative sizes; at call, an input whose last
            dimension is not ``in_features``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=np.float32, rng=None):
        super().__init__()
        check_size(in_features, "in_features", "Linear", minimum=0)
        check_size(out_features, "out_features", "Linear", minimum=0)
        dtype = float_dtype(dtype, "Linear")
        rng = _rng(rng)
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
        self.weight = init.uniform_(Parameter(np.empty((out_features, in_features), dtype=dtype)), -bound, bound, rng)
        if bias:
            self.bias = init.uniform_(Parameter(np.empty(out_features, dtype=dtype)), -bound, bound, rng)
        else:
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        x = as_operand(x)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear: input of shape {x.shape} must end in in_features={self.in_features} "
                f"(expected (..., {self.in_features}))"
            )
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A lookup table: integer indices (any shape) -> rows of ``weight``, as ``torch.nn.Embedding``.

    Shapes: indices (*) of integers in [0, num_embeddings) -> (*, embedding_dim);
    ``weight`` (num_embeddings, embedding_dim), initialized N(0, 1) with the
    ``padding_idx`` row zeroed.  That row receives no gradient (it stays zero
    under training).  A negative ``padding_idx`` counts from the end, as PyTorch.

    Raises:
        ValueError: bad sizes or ``padding_idx`` out of range; at call, non-integer
            or out-of-range indices (from ``functional.embedding``).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx=None, dtype=np.float32, rng=None):
        super().__init__()
        check_size(num_embeddings, "num_embeddings", "Embedding", minimum=0)
        check_size(embedding_dim, "embedding_dim", "Embedding", minimum=0)
        if padding_idx is not None:
            if not isinstance(padding_idx, numbers.Integral) or not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(
                    f"Embedding: padding_idx must be an integer in [-{num_embeddings}, {num_embeddings}); "
                    f"got {padding_idx!r}"
                )
            padding_idx = int(padding_idx) % num_embeddings
        dtype = float_dtype(dtype, "Embedding")
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.weight = init.normal_(Parameter(np.empty((num_embeddings, embedding_dim), dtype=dtype)), rng=rng)
        if padding_idx is not None:
            with no_grad():
                self.weight[padding_idx] = 0

    def forward(self, indices) -> Tensor:
        return F.embedding(self.weight, indices, self.padding_idx)

    def extra_repr(self) -> str:
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


class Dropout(Module):
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p), in training mode only.

    As ``torch.nn.Dropout`` (inverted dropout, Srivastava et al. 2014); the identity
    after ``eval()``.  Masks are drawn from ``rng`` (kept by the module, so saving
    ``rng.bit_generator.state`` makes a run resumable).  Any shape; dtype kept.

    Raises ValueError unless 0 <= p <= 1.
    """

    def __init__(self, p: float = 0.5, rng=None):
        super().__init__()
        check_probability(p, "p", "Dropout")
        self.p = float(p)
        self.rng = _rng(rng)

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training, self.rng)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LayerNorm(Module):
    """Normalize over the last ``len(normalized_shape)`` dimensions, as ``torch.nn.LayerNorm``.

    y = (x - mean) / sqrt(var + eps) * weight + bias, with the biased variance
    (Ba, Kiros & Hinton 2016).  Shapes: input (*, *normalized_shape) -> same;
    ``weight`` and ``bias`` have shape ``normalized_shape`` and start at ones and
    zeros; ``elementwise_affine=False`` drops both, ``bias=False`` the bias only.

    Raises:
        ValueError: bad ``normalized_shape``; at call, an input whose trailing
            dimensions are not ``normalized_shape``.
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 dtype=np.float32):
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        normalized_shape = tuple(normalized_shape)
        if not normalized_shape or not all(isinstance(n, numbers.Integral) and n > 0 for n in normalized_shape):
            raise ValueError(f"LayerNorm: normalized_shape must be positive integers; got {normalized_shape}")
        dtype = float_dtype(dtype, "LayerNorm")
        self.normalized_shape = tuple(int(n) for n in normalized_shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        self.register_parameter("weight", Parameter(np.ones(normalized_shape, dtype)) if elementwise_affine else None)
        has_bias = elementwise_affine and bias
        self.register_parameter("bias", Parameter(np.zeros(normalized_shape, dtype)) if has_bias else None)
        self._axes = tuple(range(-len(normalized_shape), 0))

    def forward(self, x: Tensor) -> Tensor:
        x = as_operand(x)
        k = len(self.normalized_shape)
        if x.ndim < k or x.shape[x.ndim - k:] != self.normalized_shape:
            raise ValueError(
                f"LayerNorm: input of shape {x.shape} must end in normalized_shape {self.normalized_shape}"
            )
        y = ops.standardize(x, self._axes, self.eps)
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class Sequential(Module):
    """Modules applied in order, registered as "0", "1", ... (or by the names of an OrderedDict).

    As ``torch.nn.Sequential``: ``Sequential(Linear(1, 8), Tanh(), Linear(8, 1))``
    or ``Sequential(OrderedDict(fc=Linear(1, 8), act=Tanh()))``.  Supports
    ``len``, iteration, integer indexing and ``append``.

    Raises TypeError if an item is not a Module.
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            items = modules[0].items()
        else:
            items = ((str(i), m) for i, m in enumerate(modules))
        for name, module in items:
            self._add(name, module)

    def _add(self, name: str, module):
        if not isinstance(module, Module):
            raise TypeError(f"Sequential: item {name!r} must be a Module; got {type(module).__name__}")
        setattr(self, name, module)

    def append(self, module: Module) -> "Sequential":
        self._add(str(len(self._modules)), module)
        return self

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x

    def __getitem__(self, index):
        items = list(self._modules.values())
        return Sequential(*items[index]) if isinstance(index, slice) else items[index]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class Tanh(Module):
    """Element-wise tanh, as ``torch.nn.Tanh``. Any shape."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.tanh(x)


class Sigmoid(Module):
    """Element-wise logistic sigmoid 1 / (1 + exp(-x)), as ``torch.nn.Sigmoid``. Any shape."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.sigmoid(x)


class ReLU(Module):
    """Element-wise max(x, 0), as ``torch.nn.ReLU``. Any shape."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.relu(x)


class CrossEntropyLoss(Module):
    """Softmax cross-entropy of logits (..., C) against integer targets (...), as ``torch.nn.CrossEntropyLoss``.

    The class axis is the last one (PyTorch's is 1; the same for (N, C) logits).
    ``ignore_index`` positions give no loss and no gradient and are left out of
    the mean.  ``reduction``: "mean" | "sum" | "none".  Errors as
    ``functional.cross_entropy``.
    """

    def __init__(self, ignore_index=None, reduction: str = "mean"):
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"CrossEntropyLoss: reduction must be 'mean', 'sum' or 'none'; got {reduction!r}")
        self.ignore_index, self.reduction = ignore_index, reduction

    def forward(self, logits: Tensor, target) -> Tensor:
        return F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction=self.reduction)

    def extra_repr(self) -> str:
        ignore = "" if self.ignore_index is None else f"ignore_index={self.ignore_index}, "
        return f"{ignore}reduction={self.reduction!r}"


class MSELoss(Module):
    """Mean squared error of input and target of equal shapes, as ``torch.nn.MSELoss``.

    ``reduction``: "mean" | "sum" | "none".  Raises ValueError if the shapes differ.
    """

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"MSELoss: reduction must be 'mean', 'sum' or 'none'; got {reduction!r}")
        self.reduction = reduction

    def forward(self, input: Tensor, target) -> Tensor:  # noqa: A002 - PyTorch's name
        return F.mse_loss(input, target, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
