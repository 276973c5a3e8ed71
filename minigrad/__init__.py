"""minigrad: a small, readable reverse-mode autograd engine on NumPy.

    import minigrad as mg
    x = mg.Tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()          # x.grad == [2., 4.]

Layout: ``ops`` (the op table: every primitive's NumPy forward beside its VJP rules),
``extend`` (``primitive``/``defvjp``: how the table is declared, and how users add ops),
``autograd`` (the tape, per-thread grad modes, reverse mode and ``grad``), ``tensor`` (the
Tensor and creation helpers), ``functional`` (``linear`` and losses built from ops), ``nn``,
``compiler`` (``compile`` and ``scan``: a traced step run as generated NumPy), ``func`` (torch.func's
transforms: grad, vjp, jvp by forward mode, Jacobians, Hessians), ``optim``, ``serialization``, ``memory`` (keeping freed memory between training steps), ``graph``
(``to_dot``/``draw``: pictures of the tape), and
``testing`` (gradcheck and Hypothesis strategies; imported on demand).
"""
from . import extend, ops  # noqa: F401  (ops binds the operators and methods onto Tensor)
from .modes import detect_anomaly, enable_grad, is_grad_enabled, no_grad
from .entries import tape
from .memory import retain_freed_memory
from .ops import (
    abs, add, addmm, astype, broadcast_to, chunk, clip, concatenate, div, exp, expand_dims, flip, log, matmul,
    max, maximum, mean, min, minimum, mul, neg, pow, relu, reshape, sigmoid, split, sqrt, squeeze, stack,
    standardize, sub, sum, sum_to, swapaxes, tanh, transpose, var, where,
)
from .autograd import grad
from .tensor import Tensor, arange, ones, ones_like, rand, randn, tensor, uniform, zeros, zeros_like
from . import functional, nn, optim  # noqa: E402
from .serialization import load, save  # noqa: E402
from .compiler import compile, scan  # noqa: E402, A004
from . import func  # noqa: E402
from .checkpointing import checkpoint  # noqa: E402
from . import graph  # noqa: E402
from .graph import draw, to_dot  # noqa: E402

__version__ = "0.1.0"
