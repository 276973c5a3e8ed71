"""The op table: every primitive op, its NumPy forward beside its vector-Jacobian product (VJP) rules.

Each op is declared once with :mod:`minigrad.extend`, the API users add their own ops with,
in the style of HIPS autograd's ``numpy_vjps.py`` and PyTorch's ``derivatives.yaml``::

    exp = unary("exp", np.exp, lambda g, ans, x: g * ans, "Elementwise e**x.")

A rule ``rule(g, ans, *inputs, **params)`` maps the cotangent ``g`` of the output ``ans`` to
the cotangent of one input.  Rules are written with the ops of this module, so the backward
pass can itself be recorded and differentiated (``create_graph=True``).  The rules of the
elementwise binary ops return cotangents of the output's shape and :func:`binary` sums them
back to each input's (:func:`sum_to`, HIPS autograd's ``unbroadcast``).

Every tape entry ``(op, inputs, params)`` re-runs as ``op.forward(*arrays, **params)``.
Ops that are compositions of other ops (``mean``, ``var``, ``stack``, ``split``, ...) need
no rule of their own; multi-pass NumPy kernels live in :mod:`minigrad._kernels`.
"""
from __future__ import annotations

import builtins
import itertools
import math
import numbers

import numpy as np

from . import _kernels as K
from .extend import Op, defjvp, defjvp_argnums, defvjp, defvjp_argnum, primitive, saves, set_broadcasting_ops, trust
from .modes import refuse_value_read
from .tensor import Tensor, as_operand

_const = Tensor._from_array  # a constant tensor around an array
_record = Tensor._from_op  # the output of an op, on the tape if an input requires grad


# ----------------------------------------------------------------------------- constructors
def _binary(op, x, y) -> Tensor:
    if type(x) is not Tensor:
        x = as_operand(x, y if isinstance(y, Tensor) else None, op.name)
    if type(y) is not Tensor:
        y = as_operand(y, x, op.name)
    try:
        data = op.forward(x._data, y._data)
    except ValueError as error:
        try:
            np.broadcast_shapes(x.shape, y.shape)
        except ValueError:
            raise ValueError(
                f"{op.name}: shapes {x.shape} and {y.shape} cannot be broadcast together "
                "(expected trailing dimensions that are equal or 1)"
            ) from None
        raise ValueError(f"{op.name}: {error} (x has dtype {x.dtype}, y has dtype {y.dtype})") from None
    return _record(op, data, (x, y))


def _unary(op, x, **params) -> Tensor:
    if type(x) is not Tensor:
        x = as_operand(x, op=op.name)
    return _record(op, op.forward(x._data, **params), (x,), params)


def _public(fn, op, doc: str):
    fn.__name__ = fn.__qualname__ = op.name
    fn.__doc__, fn.op = doc, op
    return fn


def binary(name: str, forward, rule_x, rule_y, doc: str):
    """Declare a broadcasting elementwise op of two inputs; returns its public function (the Op as ``.op``).

    ``rule_x(g, ans, x, y)``, ``rule_y``: each input's elementwise derivative times ``g``.  As VJP rules
    they return cotangents of the output's shape, which this sums back to each input's.  An elementwise
    op's Jacobian is diagonal, so the same rules, given an input's tangent ``t`` for ``g``, are its JVP
    rules (forward mode; the tangent broadcasts to the output).
    """
    op = defvjp(primitive(forward, name, broadcasts=True, elementwise=True), _unbroadcasting(rule_x, 0),
                _unbroadcasting(rule_y, 1))
    defjvp(op, rule_x, rule_y)
    return _public(lambda x, y: _binary(op, x, y), op, doc)


def _unbroadcasting(rule, i: int):
    """``rule`` with its result summed back to the shape of input ``i`` (HIPS autograd's ``unbroadcast_f``)."""
    def unbroadcast(g, ans, x, y):
        gx, shape = rule(g, ans, x, y), (y if i else x)._data.shape
        return gx if gx._data.shape == shape else sum_to(gx, shape)
    return unbroadcast


def unary(name: str, forward, rule, doc: str):
    """Declare an elementwise op of one input; returns its public function (the Op as ``.op``).

    ``rule(g, ans, x)`` is ``g`` times the elementwise derivative: the VJP rule, and (the Jacobian
    being diagonal) the JVP rule too, given a tangent for ``g``."""
    op = defjvp(defvjp(primitive(forward, name, elementwise=True), rule), rule)
    return _public(lambda x: _unary(op, x), op, doc)


# ----------------------------------------------------------------------------- arithmetic
# Each op: its NumPy forward and, per input, g times its elementwise derivative: the VJP rule
# (reverse mode) and, with the input's tangent for g, the JVP rule (forward mode).
add = binary("add", np.add, lambda g, ans, x, y: g, lambda g, ans, x, y: g, "x + y with NumPy broadcasting.")
sub = binary("sub", np.subtract, lambda g, ans, x, y: g, lambda g, ans, x, y: -g, "x - y with NumPy broadcasting.")
mul = binary("mul", np.multiply, lambda g, ans, x, y: g * y, lambda g, ans, x, y: g * x,
             "x * y with NumPy broadcasting.")
div = binary("div", np.true_divide, lambda g, ans, x, y: g / y, lambda g, ans, x, y: -g * ans / y,
             "x / y with NumPy broadcasting (true division).")
pow = binary("pow", np.power,  # noqa: A001 - the field's name for it
             lambda g, ans, x, y: g * y * x ** exponent_less_one(x, y), lambda g, ans, x, y: g * ans * safe_log(x),
             "x ** y with NumPy broadcasting; d/dy uses log(x), taken as 0 where x <= 0.")
maximum = binary("maximum", np.maximum,
                 lambda g, ans, x, y: g * maximum_weights(x, y), lambda g, ans, x, y: g * maximum_weights(y, x),
                 "Elementwise maximum with broadcasting; ties split the gradient equally (a NaN gets all of it).")
minimum = binary("minimum", np.minimum,
                 lambda g, ans, x, y: g * minimum_weights(x, y), lambda g, ans, x, y: g * minimum_weights(y, x),
                 "Elementwise minimum with broadcasting; ties split the gradient equally (a NaN gets all of it).")
neg = unary("neg", np.negative, lambda g, ans, x: -g, "-x.")


# Zeros of a tensor's shape as an op, not a constant a rule makes: the derivative of a mask, 0 even
# where the cotangent is inf or NaN (as PyTorch's), and a compiled program writes it like any op.
ZEROS_LIKE = defvjp(primitive(np.zeros_like, "zeros_like", elementwise=True), lambda g, ans, x: zeros_of(g))
defjvp(ZEROS_LIKE, lambda t, ans, x: zeros_of(t))


def zeros_of(x: Tensor) -> Tensor:
    """Zeros of ``x``'s shape and dtype, as an op of the tape (its derivative is 0)."""
    return _record(ZEROS_LIKE, np.zeros_like(x._data), (x,))


_zero = lambda g, ans, *inputs, **params: zeros_of(g)  # noqa: E731 - the derivative of a mask
# How much of maximum's (minimum's) cotangent goes to x: 1 where it wins, 1/2 on a tie, 0 where it
# loses.  Masks computed from the values are ops (of derivative 0), not constants a rule makes, so
# every rule is an expression of ops and a compiled program recomputes them (as relu_backward).
maximum_weights = binary("maximum_weights", lambda x, y: K.tie_weights(x, y, np.less), _zero, _zero,
                         "The share of maximum's cotangent x gets: 1 where x > y, 1/2 where x == y, else 0.")
minimum_weights = binary("minimum_weights", lambda x, y: K.tie_weights(x, y, np.greater), _zero, _zero,
                         "The share of minimum's cotangent x gets: 1 where x < y, 1/2 where x == y, else 0.")


# y - 1, but 1 where x == y == 0: there d(x**y)/dx = y * x**(y - 1) is 0 (as PyTorch), not 0 * inf = NaN.
# An op, not a branch on the values, so a compiled step's backward has it too; d/dy is 1 (0 on that point
# of measure zero is not worth a second mask).
exponent_less_one = binary("exponent_less_one", lambda x, y: np.where((x == 0) & (y == 0), 1, y - 1).astype(y.dtype),
                            lambda g, ans, x, y: g * 0, lambda g, ans, x, y: g,
                            "y - 1, but 1 where x == y == 0 (pow's rule for x).")


# ----------------------------------------------------------------------------- elementwise
exp = unary("exp", np.exp, lambda g, ans, x: g * ans, "Elementwise e**x.")
log = unary("log", np.log, lambda g, ans, x: g / x,
            "Elementwise natural logarithm (log(0) = -inf, negative -> NaN, as NumPy).")
sqrt = unary("sqrt", np.sqrt, lambda g, ans, x: g / (ans * 2), "Elementwise square root.")
abs = unary("abs", np.abs, lambda g, ans, x: g * sign(x),  # noqa: A001
            "Elementwise |x|; its derivative at 0 and at NaN is taken as 0 (as PyTorch).")
tanh = unary("tanh", np.tanh, lambda g, ans, x: tanh_backward(g, ans), "Elementwise hyperbolic tangent.")
sigmoid = unary("sigmoid", K.sigmoid, lambda g, ans, x: sigmoid_backward(g, ans),
                "Elementwise logistic function 1 / (1 + e**-x), computed without overflow for any finite x.")
relu = unary("relu", K.relu, lambda g, ans, x: relu_backward(g, x),
             "Elementwise max(x, 0); derivative 0 at 0, and the gradient passes at NaN (as PyTorch).")
# Masks computed from an input's values are ops too, not constants made inside a rule: then the
# backward pass is all on the tape, and minigrad.compile can write it out (PyTorch's threshold_backward).
relu_backward = binary("relu_backward", K.relu_backward,
                       lambda gg, ans, g, x: relu_backward(gg, x), _zero,
                       "The VJP of relu as one op: g where x > 0 (or NaN), else 0.")
# log(x) where x > 0, else 0, for pow's d/dy, and its VJP g / x where x > 0: ops, not a mask made from
# the values inside a rule, so pow's backward is all on the tape and compiles (as relu_backward).
safe_log_backward = binary("safe_log_backward", K.safe_log_backward,
                           lambda gg, ans, g, x: safe_log_backward(gg, x),
                           lambda gg, ans, g, x: -safe_log_backward(safe_log_backward(gg * g, x), x),
                           "The VJP of safe_log as one op: g / x where x > 0, else 0.")
safe_log = unary("safe_log", K.safe_log, lambda g, ans, x: safe_log_backward(g, x),
                 "log(x) where x > 0, else 0 (pow's derivative in its exponent, as PyTorch's).")
sign = unary("sign", K.sign, _zero,
             "Elementwise sign, 0 at 0 and at NaN (the derivative of |x|); its own derivative is 0.")
# The VJPs of tanh and sigmoid as one fused op each (as PyTorch's tanh_backward): one NumPy
# pass instead of three tape ops per VJP, and still differentiable, by their own rules.  A compiled
# loop splits each into g times the derivative, which it computes for all steps at once.
tanh_derivative = unary("tanh_derivative", K.tanh_derivative, lambda g, ans, y: g * y * -2,
                        "1 - y**2, the derivative of tanh at x where y = tanh(x).")
sigmoid_derivative = unary("sigmoid_derivative", K.sigmoid_derivative, lambda g, ans, y: g * (1 - y * 2),
                           "y * (1 - y), the derivative of sigmoid at x where y = sigmoid(x).")
tanh_backward = binary("tanh_backward", K.tanh_backward,
                       lambda gg, ans, g, y: tanh_backward(gg, y), lambda gg, ans, g, y: gg * g * y * -2,
                       "The VJP of tanh written as one op: g * (1 - y**2) where y = tanh(x).")
sigmoid_backward = binary("sigmoid_backward", K.sigmoid_backward,
                          lambda gg, ans, g, y: sigmoid_backward(gg, y), lambda gg, ans, g, y: gg * g * (1 - y * 2),
                          "The VJP of sigmoid written as one op: g * y * (1 - y) where y = sigmoid(x).")

# clip's VJP as one op, g where min <= x <= max, else 0 (a mask of the values, as an op)
CLIP_BACKWARD = defvjp(primitive(lambda g, x, min, max: np.where(K.inside(x, min, max), g, 0).astype(g.dtype),  # noqa: A002
                                 "clip_backward", elementwise=True),
                       lambda gg, ans, g, x, min, max: clip_backward(gg, x, min, max), _zero)  # noqa: A002
defjvp(CLIP_BACKWARD, *CLIP_BACKWARD.rules)
CLIP = defvjp(primitive(lambda x, min, max: np.clip(x, min, max), "clip", elementwise=True),  # noqa: A002
              lambda g, ans, x, min, max: clip_backward(g, x, min, max))  # noqa: A002
defjvp(CLIP, *CLIP.rules)  # elementwise: the VJP rule is the JVP rule


def clip_backward(g, x, min, max) -> Tensor:  # noqa: A002
    """The VJP of clip as one op: ``g`` where ``min <= x <= max``, else 0."""
    return _record(CLIP_BACKWARD, CLIP_BACKWARD.forward(g._data, x._data, min, max), (g, x), {"min": min, "max": max})


WHERE = defvjp(primitive(lambda x, y, condition: np.where(condition, x, y), "where", broadcasts=True),
               lambda g, ans, x, y, condition: sum_to(where(condition, g, 0), x._data.shape),
               lambda g, ans, x, y, condition: sum_to(where(condition, 0, g), y._data.shape))
defjvp(WHERE, lambda t, ans, x, y, condition: where(condition, t, 0), lambda t, ans, x, y, condition: where(condition, 0, t))


def clip(x, min=None, max=None) -> Tensor:  # noqa: A002 - NumPy/PyTorch argument names
    """Elementwise clamp to [min, max] (either may be None); the gradient passes where min <= x <= max."""
    if min is None and max is None:
        raise ValueError("clip: at least one of min and max must be given")
    return _unary(CLIP, x, min=min, max=max)


def where(condition, x, y) -> Tensor:
    """Elementwise ``x if condition else y`` with broadcasting (``np.where``); no gradient flows to ``condition``."""
    condition = np.asarray(condition._data if isinstance(condition, Tensor) else condition)
    if condition.dtype != bool:
        condition = condition.astype(bool)
    x = as_operand(x, y if isinstance(y, Tensor) else None)
    y = as_operand(y, x)
    try:
        data = WHERE.forward(x._data, y._data, condition=condition)
    except ValueError:
        raise ValueError(
            f"where: condition {condition.shape}, x {x.shape} and y {y.shape} cannot be broadcast together"
        ) from None
    return _record(WHERE, data, (x, y), {"condition": condition})


# ----------------------------------------------------------------------------- broadcasting
SUM_TO = defvjp(primitive(K.sum_to, "sum_to"), lambda g, ans, x, shape: broadcast_to(g, x.shape))
BROADCAST_TO = defvjp(primitive(np.broadcast_to, "broadcast_to"), lambda g, ans, x, shape: sum_to(g, x.shape))
defjvp(SUM_TO, lambda t, ans, x, shape: sum_to(t, shape))
defjvp(BROADCAST_TO, lambda t, ans, x, shape: broadcast_to(t, shape))


def sum_to(x: Tensor, shape) -> Tensor:
    """Sum ``x`` over broadcast dimensions down to ``shape`` (the adjoint of :func:`broadcast_to`)."""
    if x._data.shape == shape:  # the common case: no broadcasting happened
        return x
    shape = tuple(shape)
    if x._data.shape == shape:  # the same shape, given as a list
        return x
    return _record(SUM_TO, K.sum_to(x._data, shape), (x,), {"shape": shape})


def broadcast_to(x, shape) -> Tensor:
    """As ``np.broadcast_to`` (a read-only view). Raises ValueError if the shapes are incompatible."""
    x, shape = as_operand(x), tuple(shape)
    if x.shape == shape:
        return x
    try:
        data = np.broadcast_to(x._data, shape)
    except ValueError:
        raise ValueError(f"broadcast_to: cannot broadcast a tensor of shape {x.shape} to shape {shape}") from None
    return _record(BROADCAST_TO, data, (x,), {"shape": shape})


set_broadcasting_ops(sum_to, broadcast_to)


# ----------------------------------------------------------------------------- matmul
def _mT(x: Tensor) -> Tensor:
    """Swap the last two axes (the matrix transpose of a batch of matrices)."""
    axes = list(range(x.ndim))
    axes[-2], axes[-1] = axes[-1], axes[-2]
    return transpose(x, *axes)


def _matmul_vjp_y(g, ans, x, y):
    if y.ndim == 2 and x.ndim > 2:  # fold the batch into rows: one matmul, no (batch, n, m) temporary
        rows = math.prod(x.shape[:-1])  # not -1: ambiguous when a dimension is 0
        return _mT(reshape(x, (rows, x.shape[-1]))) @ reshape(g, (rows, g.shape[-1]))
    return sum_to(_mT(x) @ g, y._data.shape)


def _matmul_lazy_y(total, i, g, ans, x, y) -> bool:
    """Add the VJP of a matrix ``y``, x.T @ g over all rows, to ``total`` as factors (summed later in one matmul)."""
    if i != 1 or y._data.ndim != 2:
        return False
    if x._data.ndim == 2:
        total.add_outer(x._data, g._data)
    else:
        rows = math.prod(x.shape[:-1])  # not -1: ambiguous when a dimension is 0
        total.add_outer(x._data.reshape(rows, x.shape[-1]), g._data.reshape(rows, g.shape[-1]))
    return True


def _addmm_lazy(total, i, g, ans, input, mat1, mat2) -> bool:  # noqa: A002
    if i != 2:
        return False
    total.add_outer(mat1._data, g._data)
    return True


MATMUL = defvjp(primitive(np.matmul, "matmul", broadcasts=True),
                lambda g, ans, x, y: sum_to(g @ _mT(y), x._data.shape), _matmul_vjp_y)
MATMUL.lazy_vjp = _matmul_lazy_y
defjvp(MATMUL, lambda t, ans, x, y: t @ y, lambda t, ans, x, y: x @ t)
ADDMM = defvjp(primitive(K.addmm, "addmm", broadcasts=True),
               lambda g, ans, input, mat1, mat2: sum_to(g, input._data.shape),  # noqa: A002
               lambda g, ans, input, mat1, mat2: g @ _mT(mat2),  # noqa: A002
               lambda g, ans, input, mat1, mat2: _mT(mat1) @ g)  # noqa: A002
ADDMM.lazy_vjp = _addmm_lazy
defjvp(ADDMM, lambda t, ans, input, mat1, mat2: t, lambda t, ans, input, mat1, mat2: t @ mat2,  # noqa: A002
       lambda t, ans, input, mat1, mat2: mat1 @ t)  # noqa: A002


def matmul(x, y) -> Tensor:
    """Matrix product as ``np.matmul``: 1-D, 2-D and batched operands with broadcast batch dimensions.

    Raises:
        ValueError: a 0-d operand, or inner dimensions that differ (names both shapes).
    """
    x, y = as_operand(x, y if isinstance(y, Tensor) else None), as_operand(y, x if isinstance(x, Tensor) else None)
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError(f"matmul: operands must have at least 1 dimension; got shapes {x.shape} and {y.shape}")
    if x.shape[-1] != y.shape[-2 if y.ndim > 1 else 0]:
        raise ValueError(
            f"matmul: shapes {x.shape} and {y.shape} are not aligned: expected x.shape[-1] == y.shape[-2] "
            f"({x.shape[-1]} != {y.shape[-2 if y.ndim > 1 else 0]})"
        )
    if x.ndim == 1 or y.ndim == 1:  # vectors: promote to matrices, multiply, drop the added axis
        xm = reshape(x, (1, -1)) if x.ndim == 1 else x
        ym = reshape(y, (-1, 1)) if y.ndim == 1 else y
        out = matmul(xm, ym)
        shape = out.shape[:-1] if y.ndim == 1 else out.shape
        if x.ndim == 1:
            shape = shape[:-1] if y.ndim == 1 else shape[:-2] + shape[-1:]
        return reshape(out, shape)
    try:
        data = np.matmul(x._data, y._data)
    except ValueError:
        raise ValueError(f"matmul: batch dimensions of shapes {x.shape} and {y.shape} cannot be broadcast") from None
    return _record(MATMUL, data, (x, y))


def addmm(input, mat1, mat2) -> Tensor:  # noqa: A002 - PyTorch's argument name
    """``input + mat1 @ mat2`` as one op, as ``torch.addmm`` (beta = alpha = 1).

    mat1 (n, k) and mat2 (k, m) are matrices; input broadcasts to (n, m).  The sum
    is written into the product's buffer, so a recurrent step ``x_t + h @ W``
    makes one (n, m) array instead of two.

    Raises:
        ValueError: operands that are not matrices, inner dimensions that differ, or
            an input that does not broadcast to (n, m) (the message names the shapes).
    """
    input = as_operand(input, mat1 if isinstance(mat1, Tensor) else None)  # noqa: A001
    mat1, mat2 = as_operand(mat1, mat2 if isinstance(mat2, Tensor) else None), as_operand(mat2, mat1)
    if mat1.ndim != 2 or mat2.ndim != 2 or mat1.shape[1] != mat2.shape[0]:
        raise ValueError(f"addmm: expected matrices (n, k) and (k, m); got shapes {mat1.shape} and {mat2.shape}")
    shape = (mat1.shape[0], mat2.shape[1])
    try:
        data = K.addmm(input._data, mat1._data, mat2._data)
    except ValueError:
        data = None
    if data is None or data.shape != shape:
        raise ValueError(f"addmm: input of shape {input.shape} does not broadcast to the product's shape {shape}")
    return _record(ADDMM, data, (input, mat1, mat2))


# ----------------------------------------------------------------------------- reductions
def _expand_reduced(g: Tensor, x: Tensor, axis, keepdims) -> Tensor:
    """Broadcast the cotangent of a reduction back over the reduced axes of ``x``."""
    if axis is not None and not keepdims:
        shape = list(x.shape)
        for a in axis:
            shape[a] = 1
        g = reshape(g, shape)
    return broadcast_to(g, x.shape)


# Where x attains its max/min over axis, ties splitting the weight: a mask of the values, as an op of
# derivative 0 (x's cotangent is g * 0; the extremum's, g * 0 summed back to its shape).
EXTREMUM_WEIGHTS = defvjp(primitive(K.extremum_weights, "extremum_weights"),
                          lambda g, ans, x, extremum, axis, keepdims: zeros_of(g),
                          lambda g, ans, x, extremum, axis, keepdims: zeros_of(sum(g, axis, keepdims)))
defjvp(EXTREMUM_WEIGHTS, lambda t, ans, x, extremum, axis, keepdims: zeros_of(t),
       lambda t, ans, x, extremum, axis, keepdims: zeros_of(_expand_reduced(t, x, axis, keepdims)))


def _extremum_weights(x, ans, axis, keepdims) -> Tensor:
    return _record(EXTREMUM_WEIGHTS, K.extremum_weights(x._data, ans._data, axis, keepdims), (x, ans),
                   {"axis": axis, "keepdims": keepdims})


def _extremum_vjp(g, ans, x, axis, keepdims):
    # the cotangent goes to the arg-extrema, split equally between ties
    return _expand_reduced(g, x, axis, keepdims) * _extremum_weights(x, ans, axis, keepdims)


def _extremum_jvp(t, ans, x, axis, keepdims):
    # the tangent of the arg-extrema, averaged over ties (the transpose of the VJP's split)
    return sum(t * _extremum_weights(x, ans, axis, keepdims), axis, keepdims)


# np.add.reduce is np.sum without its Python wrapper (a third of a small sum's time)
SUM = defvjp(primitive(np.add.reduce, "sum"), lambda g, ans, x, axis, keepdims: _expand_reduced(g, x, axis, keepdims))
MAX = defvjp(primitive(np.max, "max"), _extremum_vjp)
MIN = defvjp(primitive(np.min, "min"), _extremum_vjp)
defjvp(SUM, lambda t, ans, x, axis, keepdims: sum(t, axis, keepdims))
defjvp(MAX, _extremum_jvp)
defjvp(MIN, _extremum_jvp)


def _normalize_axis(axis, ndim: int, op: str) -> tuple | None:
    """Axis (int, tuple or None) as a sorted tuple of non-negative ints; a clear error if out of range."""
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis) if isinstance(axis, (tuple, list)) else None
    if axes is None or not builtins.all(isinstance(a, numbers.Integral) and not isinstance(a, bool) for a in axes):
        raise TypeError(f"{op}: axis must be an int, a tuple of ints or None; got {axis!r}")
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"{op}: axis {a} is out of range for a tensor with {ndim} dimensions")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: repeated axis in {axis}")
    return tuple(sorted(out))


def _reduce(op, x, axis, keepdims) -> Tensor:
    x = as_operand(x)
    axis = _normalize_axis(axis, x.ndim, op.name)
    try:
        data = op.forward(x._data, axis=axis, keepdims=keepdims)
    except ValueError as error:  # e.g. max of an empty axis
        raise ValueError(f"{op.name}: {error} (input shape {x.shape}, axis {axis})") from None
    return _record(op, data, (x,), {"axis": axis, "keepdims": keepdims})


def sum(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Sum over ``axis`` (int, tuple or None for all), as ``np.sum``."""
    return _reduce(SUM, x, axis, keepdims)


def max(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Maximum over ``axis``; ties share the gradient equally. Raises ValueError on an empty reduction."""
    return _reduce(MAX, x, axis, keepdims)


def min(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Minimum over ``axis``; ties share the gradient equally."""
    return _reduce(MIN, x, axis, keepdims)


def _count(x: Tensor, axes) -> int:
    return x.size if axes is None else math.prod(x.shape[a] for a in axes)


def mean(x, axis=None, keepdims: bool = False) -> Tensor:
    """Arithmetic mean over ``axis``, as ``np.mean``."""
    x = as_operand(x, op="mean")
    axis = _normalize_axis(axis, x.ndim, "mean")
    return sum(x, axis, keepdims) / _count(x, axis)


def var(x, axis=None, keepdims: bool = False, ddof: int = 0) -> Tensor:
    """Variance over ``axis`` with ``ddof`` delta degrees of freedom (NumPy's default 0; PyTorch's is 1)."""
    x = as_operand(x, op="var")
    axis = _normalize_axis(axis, x.ndim, "var")
    centered = x - mean(x, axis, keepdims=True)
    return sum(centered * centered, axis, keepdims) / (_count(x, axis) - ddof)


def _standardize_rule(g, ans, x, axis, eps):
    # y = (x - mean) * r, r = (var + eps)**-0.5: dx = r * (g - mean(g) - y * mean(g * y)) (Ba et al.
    # 2016; PyTorch's layer_norm_backward).  r is recomputed from x with ops, so that the rule is
    # differentiable too.  The Jacobian is symmetric, so the same rule is the JVP of a tangent g.
    r = (var(x, axis, keepdims=True) + eps) ** -0.5
    return r * (g - mean(g, axis, keepdims=True) - ans * mean(g * ans, axis, keepdims=True))


def _standardize_lazy(total, i, g, ans, x, axis, eps) -> bool:
    """The same VJP as the rule, by one NumPy kernel, where no graph is built."""
    total.add(Tensor._from_array(K.standardize_vjp(g._data, ans._data, x._data, axis, eps)), False)
    return True


STANDARDIZE = defjvp(defvjp(primitive(K.standardize, "standardize"), _standardize_rule), _standardize_rule)
STANDARDIZE.lazy_vjp = _standardize_lazy


def standardize(x, axis=-1, eps: float = 1e-5) -> Tensor:
    """``(x - mean(x)) / sqrt(var(x) + eps)`` over ``axis`` (int, tuple, or None for all), with the
    biased variance: the normalization of a layer norm, as one op (``jax.nn.standardize``; PyTorch's
    ``layer_norm`` without weight and bias).  Same shape and float dtype as ``x``; its VJP is
    ``r * (g - mean(g) - y * mean(g * y))`` with ``r = 1 / sqrt(var + eps)``.

    Raises:
        ValueError: ``eps`` is negative, or an axis is out of range.
        TypeError: ``axis`` is not an int, a tuple of ints or None.
    """
    x = as_operand(x, op="standardize")
    axis = _normalize_axis(axis, x.ndim, "standardize")
    if not eps >= 0:
        raise ValueError(f"standardize: eps must be >= 0; got {eps!r}")
    if x.dtype.kind != "f":
        x = astype(x, np.float64)
    return _record(STANDARDIZE, K.standardize(x._data, axis, float(eps)), (x,), {"axis": axis, "eps": float(eps)})


# ----------------------------------------------------------------------------- shape
RESHAPE = defvjp(primitive(lambda x, shape: x.reshape(shape), "reshape"), lambda g, ans, x, shape: reshape(g, x.shape))
TRANSPOSE = defvjp(primitive(np.transpose, "transpose"), lambda g, ans, x, axes: transpose(g, *np.argsort(axes)))
FLIP = defvjp(primitive(np.flip, "flip"), lambda g, ans, x, axis: flip(g, axis))
ASTYPE = defvjp(primitive(lambda x, dtype: x.astype(dtype), "astype"), lambda g, ans, x, dtype: astype(g, x.dtype))
CONCATENATE = defvjp_argnum(
    primitive(lambda *arrays, axis, bounds: np.concatenate(arrays, axis=axis), "concatenate"),
    lambda i, g, ans, inputs, axis, bounds: g[(slice(None),) * axis + (slice(bounds[i], bounds[i + 1]),)])
defjvp(RESHAPE, lambda t, ans, x, shape: reshape(t, shape))
defjvp(TRANSPOSE, lambda t, ans, x, axes: transpose(t, *axes))
defjvp(FLIP, lambda t, ans, x, axis: flip(t, axis))
defjvp(ASTYPE, lambda t, ans, x, dtype: astype(t, dtype))


def _concatenate_jvp(argnums, tangents, ans, inputs, axis, bounds):
    """The inputs' tangents, zeros where an input has none, concatenated: one op for all of them."""
    given = dict(zip(argnums, tangents))
    return concatenate([given.get(i, _const(np.zeros(x.shape, ans.dtype))) for i, x in enumerate(inputs)], axis)


defjvp_argnums(CONCATENATE, _concatenate_jvp)


def reshape(x, *shape) -> Tensor:
    """As ``np.reshape``; ``reshape(t, 2, 3)`` or ``reshape(t, (2, 3))``, one dimension may be -1."""
    x = as_operand(x)
    shape = tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], numbers.Integral) else tuple(shape)
    try:
        data = x._data.reshape(shape)
    except ValueError:
        raise ValueError(f"reshape: cannot reshape a tensor of shape {x.shape} ({x.size} elements) into shape {shape}") from None
    if data.shape == x.shape:
        return x
    return _record(RESHAPE, data, (x,), {"shape": data.shape})


def transpose(x, *axes) -> Tensor:
    """Permute axes as ``np.transpose``; no axes reverses them."""
    x = as_operand(x)
    if len(axes) == 1 and not isinstance(axes[0], numbers.Integral):
        axes = tuple(axes[0])
    if not axes:
        axes = tuple(range(x.ndim))[::-1]
    else:
        for a in axes:
            if not isinstance(a, numbers.Integral) or isinstance(a, bool) or not -x.ndim <= a < builtins.max(x.ndim, 1):
                raise ValueError(f"transpose: axis {a!r} is out of range for a tensor of shape {x.shape} "
                                 f"(valid: integers from {-x.ndim} to {x.ndim - 1})")
        axes = tuple(int(a) % builtins.max(x.ndim, 1) for a in axes)
    if sorted(axes) != list(range(x.ndim)):
        raise ValueError(f"transpose: axes {axes} are not a permutation of the {x.ndim} axes of shape {x.shape}")
    return _record(TRANSPOSE, x._data.transpose(axes), (x,), {"axes": axes})


def swapaxes(x, axis1: int, axis2: int) -> Tensor:
    """Interchange two axes, as ``np.swapaxes``."""
    x = as_operand(x)
    (a1,), (a2,) = _normalize_axis(axis1, x.ndim, "swapaxes"), _normalize_axis(axis2, x.ndim, "swapaxes")
    axes = list(range(x.ndim))
    axes[a1], axes[a2] = axes[a2], axes[a1]
    return transpose(x, *axes)


def expand_dims(x, axis: int) -> Tensor:
    """Insert a size-1 axis at ``axis``, as ``np.expand_dims`` (``unsqueeze`` in PyTorch)."""
    x = as_operand(x)
    if not -x.ndim - 1 <= axis <= x.ndim:
        raise ValueError(f"expand_dims: axis {axis} is out of range for a tensor of shape {x.shape}")
    axis %= x.ndim + 1
    return reshape(x, x.shape[:axis] + (1,) + x.shape[axis:])


def squeeze(x, axis=None) -> Tensor:
    """Remove size-1 axes (all, or those in ``axis``), as ``np.squeeze``. Raises ValueError if one is not size 1."""
    x = as_operand(x)
    axes = _normalize_axis(axis, x.ndim, "squeeze")
    if axes is None:
        axes = tuple(i for i, n in enumerate(x.shape) if n == 1)
    for a in axes:
        if x.shape[a] != 1:
            raise ValueError(f"squeeze: axis {a} of shape {x.shape} has size {x.shape[a]}, expected 1")
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if i not in axes))


def flip(x, axis=None) -> Tensor:
    """Reverse the order of elements along ``axis`` (all axes if None), as ``np.flip``."""
    x = as_operand(x)
    axis = _normalize_axis(axis, x.ndim, "flip")
    return _record(FLIP, FLIP.forward(x._data, axis=axis), (x,), {"axis": axis})


def astype(x, dtype) -> Tensor:
    """Cast to ``dtype``; the gradient is cast back to the input's dtype."""
    x = as_operand(x)
    dtype = np.dtype(dtype)
    if dtype == x.dtype:
        return x
    if x.requires_grad and dtype.kind != "f":
        return _const(x._data.astype(dtype))  # not differentiable: leaves the tape
    return _record(ASTYPE, x._data.astype(dtype), (x,), {"dtype": dtype})


def concatenate(tensors, axis: int = 0) -> Tensor:
    """Join tensors along an existing axis, as ``np.concatenate``.

    Raises:
        ValueError: an empty sequence, different numbers of dimensions, or sizes
            that differ off ``axis`` (the message lists every shape).
    """
    tensors = [as_operand(t) for t in tensors]
    if not tensors:
        raise ValueError("concatenate: need at least one tensor")
    shapes = [t.shape for t in tensors]
    ndim = tensors[0].ndim
    if ndim == 0 or any(t.ndim != ndim for t in tensors):
        raise ValueError(f"concatenate: all tensors need the same number (>= 1) of dimensions; got shapes {shapes}")
    (axis,) = _normalize_axis(axis, ndim, "concatenate")
    if any(s[:axis] + s[axis + 1 :] != shapes[0][:axis] + shapes[0][axis + 1 :] for s in shapes):
        raise ValueError(f"concatenate: shapes {shapes} must match in every dimension except axis {axis}")
    bounds = (0, *itertools.accumulate(s[axis] for s in shapes))
    data = CONCATENATE.forward(*(t._data for t in tensors), axis=axis, bounds=bounds)
    return _record(CONCATENATE, data, tuple(tensors), {"axis": axis, "bounds": bounds})


def stack(tensors, axis: int = 0) -> Tensor:
    """Join same-shaped tensors along a new axis, as ``np.stack``. Raises ValueError on differing shapes."""
    tensors = [as_operand(t) for t in tensors]
    if not tensors:
        raise ValueError("stack: need at least one tensor")
    if any(t.shape != tensors[0].shape for t in tensors):
        raise ValueError(f"stack: all tensors must have the same shape; got {[t.shape for t in tensors]}")
    return concatenate([expand_dims(t, axis) for t in tensors], axis=axis % (tensors[0].ndim + 1))


def split(x, split_size_or_sections, axis: int = 0) -> list:
    """Split into pieces along ``axis``, as ``torch.split``: an int gives pieces of that size
    (the last may be smaller); a list gives the size of each piece (they must sum to the axis length)."""
    x = as_operand(x)
    (axis,) = _normalize_axis(axis, x.ndim, "split")
    n = x.shape[axis]
    if isinstance(split_size_or_sections, numbers.Integral):
        if split_size_or_sections <= 0:
            raise ValueError(f"split: split size must be positive; got {split_size_or_sections}")
        sizes = [builtins.min(split_size_or_sections, n - s) for s in range(0, n, split_size_or_sections)] or [0]
    else:
        sizes = list(split_size_or_sections)
        if builtins.sum(sizes) != n:
            raise ValueError(f"split: sections {sizes} sum to {builtins.sum(sizes)}, expected axis {axis} length {n}")
    starts = np.cumsum([0] + sizes).tolist()
    lead = (slice(None),) * axis
    return [x[lead + (slice(a, b),)] for a, b in zip(starts[:-1], starts[1:])]


def chunk(x, chunks: int, axis: int = 0) -> list:
    """Split into ``chunks`` equal pieces along ``axis`` (e.g. the 4 LSTM gates), as ``torch.chunk``."""
    x = as_operand(x)
    (axis,) = _normalize_axis(axis, x.ndim, "chunk")
    if chunks <= 0:
        raise ValueError(f"chunk: number of chunks must be positive; got {chunks}")
    if x.shape[axis] == 0:  # PyTorch gives ``chunks`` empty pieces
        return split(x, [0] * chunks, axis)
    return split(x, -(-x.shape[axis] // chunks), axis)


# ----------------------------------------------------------------------------- indexing
GETITEM = defvjp(primitive(lambda x, index, basic: x[index], "getitem"),
                 lambda g, ans, x, index, basic: scatter_add(g, index, basic, x.shape))
SCATTER_ADD = defvjp(primitive(K.scatter_add, "scatter_add"),
                     lambda g, ans, x, index, basic, shape: _getitem(g, index, basic))
defjvp(GETITEM, lambda t, ans, x, index, basic: _getitem(t, index, basic))
defjvp(SCATTER_ADD, lambda t, ans, x, index, basic, shape: scatter_add(t, index, basic, shape))


def _getitem_lazy(total, i, g, ans, x, index, basic) -> bool:
    """Add the slice cotangent straight into the input's dense cotangent buffer (linear-time BPTT)."""
    K.add_at(total.buffer(), g._data, index, basic)
    return True


GETITEM.lazy_vjp = _getitem_lazy


def _normalize_index(index):
    """Tensors in an index become arrays; report whether it is basic (a view, no repeats)."""
    if type(index) is int or type(index) is slice:  # x[t] in a time loop: the common cases first
        return index, True
    items = index if isinstance(index, tuple) else (index,)
    if builtins.all(type(i) is slice for i in items):  # e.g. the gate blocks of a recurrent step
        return index, True
    items = tuple(t._data if isinstance(t, Tensor) else t for t in items)
    basic = builtins.all(
        isinstance(i, (slice, type(None), type(Ellipsis))) or (isinstance(i, numbers.Integral) and not isinstance(i, bool))
        for i in items
    )
    return (items if isinstance(index, tuple) else items[0]), basic


def _getitem(x: Tensor, index, basic: bool) -> Tensor:
    try:
        data = x._data[index]
    except (IndexError, TypeError, ValueError) as error:
        raise IndexError(f"getitem: invalid index for a tensor of shape {x.shape}: {error}") from None
    return _record(GETITEM, data, (x,), {"index": index, "basic": basic})


def getitem(x, index) -> Tensor:
    """``x[index]`` with NumPy basic slicing and integer/boolean array indexing.

    The VJP scatters the cotangent back; repeated integer indices accumulate (as ``np.add.at``).
    Raises IndexError naming the shape for an invalid or out-of-bounds index.
    """
    index, basic = _normalize_index(index)
    return _getitem(as_operand(x), index, basic)


def scatter_add(g, index, basic: bool, shape) -> Tensor:
    """Zeros of ``shape`` with ``g`` added at ``index``: the adjoint of ``getitem`` (HIPS autograd's ``untake``)."""
    g = as_operand(g)
    return _record(SCATTER_ADD, K.scatter_add(g._data, index, basic, shape), (g,),
                   {"index": index, "basic": basic, "shape": shape})


# The rules of the built-in ops return their input's shape by construction (the gradient tests check
# each of them): reverse mode calls them without the per-call check a user's rule gets.
for _value in list(globals().values()):
    _op = getattr(_value, "op", _value)
    if isinstance(_op, Op):
        trust(_op)

# What these ops' rules read (extend.saves); every other op keeps all its values saved.  A linear
# layer's output (reshape of addmm) is then saved by nothing: a compiled loop may reuse its memory.
for _op in (add.op, sub.op, neg.op, SUM, SUM_TO, BROADCAST_TO, RESHAPE, TRANSPOSE, FLIP, ASTYPE, CONCATENATE,
            GETITEM, SCATTER_ADD):
    saves(_op)  # shapes and dtypes only
saves(mul.op, 0, 1)
saves(MATMUL, 0, 1)
saves(ADDMM, 1, 2)


# ----------------------------------------------------------------------------- Tensor methods
def _reflected(fn):
    return lambda self, other: fn(other, self)


def _compare(fn):
    def compare(self, other):
        refuse_value_read(f"a comparison ({fn.__name__})")
        return _const(fn(self._data, other._data if isinstance(other, Tensor) else other))
    return compare


Tensor.__add__, Tensor.__radd__ = add, _reflected(add)
Tensor.__sub__, Tensor.__rsub__ = sub, _reflected(sub)
Tensor.__mul__, Tensor.__rmul__ = mul, _reflected(mul)
Tensor.__truediv__, Tensor.__rtruediv__ = div, _reflected(div)
Tensor.__pow__, Tensor.__rpow__ = pow, _reflected(pow)
Tensor.__matmul__, Tensor.__rmatmul__ = matmul, _reflected(matmul)
Tensor.__neg__ = neg
Tensor.__pos__ = lambda self: self
Tensor.__getitem__ = getitem
for _name, _fn in [("__lt__", np.less), ("__le__", np.less_equal), ("__gt__", np.greater),
                   ("__ge__", np.greater_equal), ("__eq__", np.equal), ("__ne__", np.not_equal)]:
    setattr(Tensor, _name, _compare(_fn))
for _fn in [exp, log, sqrt, abs, tanh, sigmoid, relu, clip, sum, mean, max, min, var, reshape, transpose,
            swapaxes, expand_dims, squeeze, broadcast_to, flip, astype, split, chunk, matmul]:
    setattr(Tensor, _fn.__name__, _fn)
Tensor.__abs__ = abs
Tensor.T = property(lambda self: transpose(self), doc="The tensor with its axes reversed.")
Tensor.mT = property(_mT, doc="The last two axes swapped (batched matrix transpose).")
