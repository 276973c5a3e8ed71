"""Property tests of every core op: forward against NumPy, gradient and second derivative
against finite differences (minigrad.testing.check_grads), over generated shapes that
include broadcasting and size-0 / size-1 dimensions.

Generated data stays away from points where an op is not differentiable (finite
differences straddling a kink disagree with any one-sided derivative): |x| >= 0.1 for
abs and relu, positive bases for log / sqrt / pow, values on a grid for max / min /
maximum / minimum so no two are within the finite-difference step.  Ties are tested
on their own.
"""
import operator

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minigrad as mg
from minigrad.testing import broadcastable_tensors, check_grads, floats, mutually_broadcastable_shapes, tensors

POSITIVE = floats(0.1, 10)
NONZERO = floats(avoid=[0])
GRID = st.integers(-100, 100).map(lambda i: i / 8)  # distinct values are >= 0.125 apart
HALVES = st.integers(-20, 20).map(lambda i: i / 2)  # never equal to a QUARTERS value
QUARTERS = HALVES.map(lambda v: v + 0.25)


def assert_forward(out, expected):
    """``out`` is a Tensor holding NumPy's result: same shape, dtype and values."""
    expected = np.asarray(expected)
    assert isinstance(out, mg.Tensor)
    assert out.shape == expected.shape
    assert out.dtype == expected.dtype
    np.testing.assert_allclose(out.data, expected, rtol=1e-12, atol=1e-12)


def axes(ndim):
    """None, one (possibly negative) axis, or a tuple of distinct axes (maybe empty)."""
    if ndim == 0:
        return st.sampled_from([None, ()])
    return st.one_of(st.none(), st.integers(-ndim, ndim - 1), st.lists(st.integers(0, ndim - 1), unique=True).map(tuple))


def reduced(axis, ndim):
    """The axes ``axis`` reduces, as a set of non-negative ints."""
    if axis is None:
        return set(range(ndim))
    return {a % ndim for a in ((axis,) if isinstance(axis, int) else axis)}


# ----------------------------------------------------------------------------- elementwise unary
UNARY = {  # name: (function, method, NumPy reference, elements)
    "neg": (mg.neg, operator.neg, np.negative, floats()),
    "exp": (mg.exp, lambda x: x.exp(), np.exp, floats(-5, 5)),
    "log": (mg.log, lambda x: x.log(), np.log, POSITIVE),
    "sqrt": (mg.sqrt, lambda x: x.sqrt(), np.sqrt, POSITIVE),
    "abs": (mg.abs, abs, np.abs, NONZERO),
    "tanh": (mg.tanh, lambda x: x.tanh(), np.tanh, floats()),
    "sigmoid": (mg.sigmoid, lambda x: x.sigmoid(), lambda a: 1 / (1 + np.exp(-a)), floats()),
    "relu": (mg.relu, lambda x: x.relu(), lambda a: np.maximum(a, 0), NONZERO),
    "clip": (lambda x: mg.clip(x, -1, 2), lambda x: x.clip(-1, 2), lambda a: np.clip(a, -1, 2),
             floats(-3, 3, avoid=[-1, 2])),
    "clip_min": (lambda x: mg.clip(x, min=0.5), lambda x: x.clip(0.5), lambda a: np.maximum(a, 0.5),
                 floats(avoid=[0.5])),
    "clip_max": (lambda x: mg.clip(x, max=0.5), lambda x: x.clip(max=0.5), lambda a: np.minimum(a, 0.5),
                 floats(avoid=[0.5])),
    "pow_2": (lambda x: x ** 2, lambda x: mg.pow(x, 2), np.square, floats()),
    "pow_3": (lambda x: x ** 3, lambda x: mg.pow(x, 3.0), lambda a: a ** 3, floats()),
    "pow_-1.5": (lambda x: x ** -1.5, lambda x: mg.pow(x, -1.5), lambda a: a ** -1.5, POSITIVE),
}


@pytest.mark.parametrize("name", UNARY)
@given(data=st.data())
def test_unary(name, data):
    fn, method, reference, elements = UNARY[name]
    x = data.draw(tensors(elements=elements, requires_grad=True), label="x")
    assert_forward(fn(x), reference(x.data))
    assert_forward(method(x), reference(x.data))
    assert check_grads(fn, [x])


def test_kinks_take_pytorch_subgradients():
    x = mg.tensor([-1.0, 0.0, 2.0, 3.0], requires_grad=True)
    (mg.abs(x) + mg.relu(x) + mg.clip(x, 0.0, 2.0)).sum().backward()
    # abs'(0) = 0, relu'(0) = 0, clip passes the gradient on its closed interval
    np.testing.assert_array_equal(x.grad.data, [-1.0, 1.0, 3.0, 2.0])


# ----------------------------------------------------------------------------- elementwise binary
BINARY = {  # name: (function, operator, NumPy reference, elements of x, elements of y)
    "add": (mg.add, operator.add, np.add, floats(), floats()),
    "sub": (mg.sub, operator.sub, np.subtract, floats(), floats()),
    "mul": (mg.mul, operator.mul, np.multiply, floats(), floats()),
    "div": (mg.div, operator.truediv, np.true_divide, floats(), floats(-5, 5, avoid=[0], margin=0.5)),
    "pow": (mg.pow, operator.pow, np.power, floats(0.5, 3), floats(-2, 2)),
    "maximum": (mg.maximum, None, np.maximum, HALVES, QUARTERS),
    "minimum": (mg.minimum, None, np.minimum, HALVES, QUARTERS),
}


@pytest.mark.parametrize("name", BINARY)
@given(data=st.data())
def test_binary_broadcasting(name, data):
    fn, op, reference, x_elements, y_elements = BINARY[name]
    x, y = data.draw(broadcastable_tensors(2, elements=[x_elements, y_elements]), label="x, y")
    assert_forward(fn(x, y), reference(x.data, y.data))
    if op is not None:
        assert_forward(op(x, y), reference(x.data, y.data))
    assert check_grads(fn, [x, y])


REFLECTED = {  # name: (expression with a constant on the left, NumPy reference, elements)
    "radd": (lambda x: 2.5 + x, lambda a: 2.5 + a, floats()),
    "rsub": (lambda x: 2.5 - x, lambda a: 2.5 - a, floats()),
    "rmul": (lambda x: 2.5 * x, lambda a: 2.5 * a, floats()),
    "rtruediv": (lambda x: 2.5 / x, lambda a: 2.5 / a, NONZERO),
    "rpow": (lambda x: 2.5 ** x, lambda a: 2.5 ** a, floats(-3, 3)),
    "numpy_scalar": (lambda x: np.float64(2.5) * x, lambda a: 2.5 * a, floats()),
    "ndarray": (lambda x: np.full(x.shape[-1:], 2.5) - x, lambda a: np.full(a.shape[-1:], 2.5) - a, floats()),
}


@pytest.mark.parametrize("name", REFLECTED)
@given(data=st.data())
def test_reflected(name, data):
    fn, reference, elements = REFLECTED[name]
    x = data.draw(tensors(elements=elements, requires_grad=True, min_dims=1), label="x")
    assert_forward(fn(x), reference(x.data))
    assert check_grads(fn, [x])


@given(x=tensors(requires_grad=True))
def test_maximum_and_minimum_split_ties_equally(x):
    for fn in (mg.maximum, mg.minimum):
        (g,) = mg.grad(fn(x, mg.Tensor(x.data)).sum(), [x])  # a tie everywhere: half goes to x
        np.testing.assert_array_equal(g.data, np.full(x.shape, 0.5))
    y = mg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    z = mg.tensor([2.0, 2.0, 2.0], requires_grad=True)
    gy, gz = mg.grad(mg.maximum(y, z).sum(), [y, z])
    np.testing.assert_array_equal(gy.data, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(gz.data, [1.0, 0.5, 0.0])


@given(data=st.data(), shapes=mutually_broadcastable_shapes(3))
def test_where(data, shapes):
    c_shape, x_shape, y_shape = shapes.input_shapes
    condition = data.draw(hnp.arrays(bool, c_shape), label="condition")
    x = data.draw(tensors(shape=x_shape, requires_grad=True), label="x")
    y = data.draw(tensors(shape=y_shape, requires_grad=True), label="y")
    expected = np.where(condition, x.data, y.data)
    assert_forward(mg.where(condition, x, y), expected)
    assert_forward(mg.where(mg.Tensor(condition), x, y), expected)
    assert check_grads(lambda x, y: mg.where(condition, x, y), [x, y])


COMPARISONS = [operator.lt, operator.le, operator.gt, operator.ge, operator.eq, operator.ne]


@pytest.mark.parametrize("op", COMPARISONS, ids=lambda op: op.__name__)
@given(xy=broadcastable_tensors(2, elements=st.integers(-3, 3).map(float)))
def test_comparisons_give_bool_tensors_without_grad(op, xy):
    x, y = xy
    for out, expected in [(op(x, y), op(x.data, y.data)), (op(x, 1.0), op(x.data, 1.0))]:
        assert isinstance(out, mg.Tensor) and not out.requires_grad
        assert out.dtype == np.bool_
        np.testing.assert_array_equal(out.data, expected)


# ----------------------------------------------------------------------------- matmul
@st.composite
def matmul_operands(draw):
    """1-D, 2-D and batched operands (batch dimensions broadcast), sizes 0..2."""
    n, k, m = (draw(st.integers(0, 2)) for _ in range(3))
    x_batch, y_batch = draw(mutually_broadcastable_shapes(2, max_dims=2, max_side=2)).input_shapes
    x_shape = (k,) if draw(st.booleans()) else x_batch + (n, k)
    y_shape = (k,) if draw(st.booleans()) else y_batch + (k, m)
    return draw(tensors(shape=x_shape, requires_grad=True)), draw(tensors(shape=y_shape, requires_grad=True))


@given(xy=matmul_operands())
def test_matmul(xy):
    x, y = xy
    expected = np.matmul(x.data, y.data)
    assert_forward(mg.matmul(x, y), expected)
    assert_forward(x @ y, expected)
    assert_forward(x.data @ y, expected)  # ndarray @ Tensor: the reflected form
    assert check_grads(mg.matmul, [x, y])


@st.composite
def addmm_operands(draw):
    """input broadcastable to (n, m), mat1 (n, k), mat2 (k, m), sizes 0..3."""
    n, k, m = (draw(st.integers(0, 3)) for _ in range(3))
    input_shape = draw(st.sampled_from([(n, m), (m,), (1, m), (n, 1), ()]))
    return [draw(tensors(shape=shape, requires_grad=True)) for shape in (input_shape, (n, k), (k, m))]


@given(operands=addmm_operands())
def test_addmm(operands):
    bias, x, w = operands
    assert_forward(mg.addmm(bias, x, w), bias.data + x.data @ w.data)
    assert check_grads(mg.addmm, operands)


def test_addmm_promotes_as_the_sum_would_and_names_bad_shapes():
    x, w = mg.ones((2, 3), dtype=np.float32), mg.ones((3, 4), dtype=np.float32)
    assert mg.addmm(mg.ones(4, dtype=np.float32), x, w).dtype == np.float32
    assert mg.addmm(mg.ones(4), x, w).dtype == np.float64  # float64 input: promoted, as input + x @ w
    with pytest.raises(ValueError, match=r"addmm: input of shape \(3, 2, 4\) does not broadcast"):
        mg.addmm(mg.ones((3, 2, 4)), x, w)
    with pytest.raises(ValueError, match=r"addmm: expected matrices .* \(2, 3\) and \(4, 3\)"):
        mg.addmm(mg.ones(4), x, mg.ones((4, 3)))


def test_a_weight_used_at_many_steps_gets_its_gradient_summed_in_one_deferred_matmul(monkeypatch):
    # x_t @ w for many t: reverse mode keeps the (x_t, g_t) factors and sums them in one matmul,
    # in several batches once they pass the memory budget; the result must equal the plain sum.
    from minigrad import autograd

    rng = np.random.default_rng(0)
    w = mg.Tensor(rng.standard_normal((6, 5)), requires_grad=True)
    xs = [mg.Tensor(rng.standard_normal((4, 6))) for _ in range(9)]
    gs = [rng.standard_normal((4, 5)) for _ in range(9)]
    expected = sum(x.data.T @ g for x, g in zip(xs, gs)) + 2 * w.data  # plus an ordinary use of w
    for budget in (autograd._OUTER_BUDGET, 100):  # one batch; a batch every three steps (44 elements each)
        monkeypatch.setattr(autograd, "_OUTER_BUDGET", budget)
        w.grad = None
        loss = (w * w).sum()
        for x, g in zip(xs, gs):
            loss = loss + ((x @ w) * mg.Tensor(g)).sum()
        loss.backward()
        np.testing.assert_allclose(w.grad.data, expected, rtol=1e-12)
        (hvp,) = mg.grad(((xs[0] @ w) ** 2).sum(), [w], create_graph=True)  # the graph-building path
        np.testing.assert_allclose(hvp.data, 2 * xs[0].data.T @ (xs[0].data @ w.data), rtol=1e-12)


# ----------------------------------------------------------------------------- reductions
@st.composite
def reduction_case(draw, elements=None, unique=False, nonempty=True):
    """(x, axis, keepdims) with every reduced axis non-empty when ``nonempty``."""
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    axis = draw(axes(len(shape)))
    if nonempty:
        shape = tuple(max(n, 1) if i in reduced(axis, len(shape)) else n for i, n in enumerate(shape))
    x = draw(tensors(shape=shape, elements=elements, unique=unique, requires_grad=True))
    return x, axis, draw(st.booleans())


REDUCTIONS = {  # name: (function, NumPy reference, case strategy)
    "sum": (mg.sum, np.sum, reduction_case(nonempty=False)),
    "mean": (mg.mean, np.mean, reduction_case()),
    "max": (mg.max, np.max, reduction_case(elements=GRID, unique=True)),
    "min": (mg.min, np.min, reduction_case(elements=GRID, unique=True)),
}


@pytest.mark.parametrize("name", REDUCTIONS)
@given(data=st.data())
def test_reductions(name, data):
    fn, reference, case = REDUCTIONS[name]
    x, axis, keepdims = data.draw(case, label="x, axis, keepdims")
    expected = reference(x.data, axis=axis, keepdims=keepdims)
    assert_forward(fn(x, axis=axis, keepdims=keepdims), expected)
    assert_forward(getattr(x, name)(axis, keepdims), expected)
    assert check_grads(lambda x: fn(x, axis=axis, keepdims=keepdims), [x])


@given(case=reduction_case(), data=st.data())
def test_var(case, data):
    x, axis, keepdims = case
    count = int(np.prod([x.shape[a] for a in reduced(axis, x.ndim)]))
    ddof = data.draw(st.integers(0, min(1, count - 1)), label="ddof")
    expected = np.var(x.data, axis=axis, keepdims=keepdims, ddof=ddof)
    assert_forward(mg.var(x, axis=axis, keepdims=keepdims, ddof=ddof), expected)
    assert_forward(x.var(axis, keepdims, ddof), expected)
    assert check_grads(lambda x: mg.var(x, axis=axis, keepdims=keepdims, ddof=ddof), [x])


@given(case=reduction_case(), eps=st.sampled_from([0.1, 1.0]))
def test_standardize(case, eps):
    x, axis, _ = case
    mu = np.mean(x.data, axis=axis, keepdims=True)
    expected = (x.data - mu) / np.sqrt(np.var(x.data, axis=axis, keepdims=True) + eps)
    assert_forward(mg.standardize(x, axis=axis, eps=eps), expected)
    assert check_grads(lambda x: mg.standardize(x, axis=axis, eps=eps), [x])


@pytest.mark.parametrize("axis", [-1, (0, 2), None])
def test_standardize_vjp_kernel_equals_its_rule(axis):
    # backward without a graph runs the NumPy kernel (lazy_vjp); with create_graph, the rule in ops
    rng = np.random.default_rng(0)
    x = mg.tensor(rng.standard_normal((3, 4, 5)) * 3 + 1, requires_grad=True)
    g = rng.standard_normal((3, 4, 5))
    (kernel,) = mg.grad((mg.standardize(x, axis) * g).sum(), [x])
    (rule,) = mg.grad((mg.standardize(x, axis) * g).sum(), [x], create_graph=True)
    np.testing.assert_allclose(kernel.data, rule.data, rtol=1e-12, atol=1e-12)
    assert np.abs(kernel.data).max() > 0.1


def test_standardize_rejects_a_negative_eps_and_a_bad_axis():
    x = mg.ones((2, 3))
    with pytest.raises(ValueError, match=r"standardize: eps must be >= 0; got -1.0"):
        mg.standardize(x, eps=-1.0)
    with pytest.raises(ValueError, match="standardize"):
        mg.standardize(x, axis=2)
    assert mg.standardize(mg.ones(3, dtype=np.float32)).dtype == np.float32


def test_max_and_min_split_ties_equally():
    x = mg.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]], requires_grad=True)
    (mg.max(x, axis=1).sum() + mg.min(x)).backward()
    third = 1 / 3
    np.testing.assert_allclose(x.grad.data, [[1.0, 0.5, 0.5], [third, third, third]], rtol=1e-15)


# ----------------------------------------------------------------------------- shape ops
@given(data=st.data(), x=tensors(requires_grad=True))
def test_reshape(data, x):
    sides = list(data.draw(st.permutations(x.shape), label="sides"))
    for _ in range(data.draw(st.integers(0, 2), label="ones")):
        sides.insert(data.draw(st.integers(0, len(sides)), label="at"), 1)
    if sides and x.size and data.draw(st.booleans(), label="infer"):
        sides[data.draw(st.integers(0, len(sides) - 1), label="inferred")] = -1
    shape = tuple(sides)
    expected = x.data.reshape(shape)
    assert_forward(mg.reshape(x, shape), expected)
    assert_forward(x.reshape(*shape), expected)
    assert check_grads(lambda x: mg.reshape(x, shape), [x])


@given(data=st.data(), x=tensors(requires_grad=True))
def test_transpose(data, x):
    axes_ = tuple(data.draw(st.permutations(range(x.ndim)), label="axes"))
    assert_forward(mg.transpose(x, *axes_), np.transpose(x.data, axes_))
    assert_forward(x.transpose(axes_), np.transpose(x.data, axes_))
    assert_forward(x.transpose(), x.data.T)
    assert_forward(x.T, x.data.T)
    assert check_grads(lambda x: mg.transpose(x, *axes_), [x])


@given(x=tensors(requires_grad=True, min_dims=2))
def test_matrix_transpose(x):
    assert_forward(x.mT, np.swapaxes(x.data, -1, -2))
    assert check_grads(lambda x: x.mT, [x])


@given(data=st.data(), x=tensors(requires_grad=True, min_dims=1))
def test_swapaxes(data, x):
    a1, a2 = (data.draw(st.integers(-x.ndim, x.ndim - 1), label="axis") for _ in range(2))
    assert_forward(mg.swapaxes(x, a1, a2), np.swapaxes(x.data, a1, a2))
    assert_forward(x.swapaxes(a1, a2), np.swapaxes(x.data, a1, a2))
    assert check_grads(lambda x: mg.swapaxes(x, a1, a2), [x])


@given(data=st.data(), x=tensors(requires_grad=True))
def test_expand_dims(data, x):
    axis = data.draw(st.integers(-x.ndim - 1, x.ndim), label="axis")
    assert_forward(mg.expand_dims(x, axis), np.expand_dims(x.data, axis))
    assert_forward(x.expand_dims(axis), np.expand_dims(x.data, axis))
    assert check_grads(lambda x: mg.expand_dims(x, axis), [x])


@given(data=st.data(), x=tensors(requires_grad=True, min_side=0, max_side=2))
def test_squeeze(data, x):
    ones = [i for i, n in enumerate(x.shape) if n == 1]
    choices = st.none()
    if ones:  # one size-1 axis (possibly negative) or several
        choices |= st.sampled_from(ones + [i - x.ndim for i in ones]) | st.lists(st.sampled_from(ones), unique=True).map(tuple)
    axis = data.draw(choices, label="axis")
    assert_forward(mg.squeeze(x, axis), np.squeeze(x.data, axis))
    assert_forward(x.squeeze(axis), np.squeeze(x.data, axis))
    assert check_grads(lambda x: mg.squeeze(x, axis), [x])


@given(data=st.data(), shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3))
def test_broadcast_to(data, shape):
    kept = data.draw(st.integers(0, len(shape)), label="trailing dims kept")
    x_shape = tuple(1 if data.draw(st.booleans(), label="to 1") else n for n in shape[len(shape) - kept:])
    x = data.draw(tensors(shape=x_shape, requires_grad=True), label="x")
    assert_forward(mg.broadcast_to(x, shape), np.broadcast_to(x.data, shape))
    assert_forward(x.broadcast_to(shape), np.broadcast_to(x.data, shape))
    assert check_grads(lambda x: mg.broadcast_to(x, shape), [x])
    # sum_to is its adjoint: sum a broadcast cotangent back down
    y = data.draw(tensors(shape=shape, requires_grad=True), label="y")
    assert_forward(mg.sum_to(y, x_shape), np.sum(y.data, axis=tuple(range(len(shape) - kept)))
                   .sum(axis=tuple(i for i, n in enumerate(x_shape) if n == 1), keepdims=True).reshape(x_shape))
    assert check_grads(lambda y: mg.sum_to(y, x_shape), [y])


@given(data=st.data(), x=tensors(requires_grad=True))
def test_flip(data, x):
    axis = data.draw(axes(x.ndim), label="axis")
    assert_forward(mg.flip(x, axis), np.flip(x.data, axis))
    assert_forward(x.flip(axis), np.flip(x.data, axis))
    assert check_grads(lambda x: mg.flip(x, axis), [x])


@given(x=tensors(requires_grad=True))
def test_astype(x):
    assert_forward(mg.astype(x, np.float32), x.data.astype(np.float32))
    assert_forward(x.astype(np.int64), x.data.astype(np.int64))
    assert not x.astype(np.int64).requires_grad  # integer results leave the tape
    # float32 rounding: a wider step; the op is linear so the step costs no accuracy
    assert check_grads(lambda x: x.astype(np.float32) * 2, [x], eps=1e-2, atol=1e-3)
    x32 = mg.Tensor(x.data, dtype=np.float32, requires_grad=True)
    (g,) = mg.grad((x32.astype(np.float64) * 3).sum(), [x32])
    assert g.dtype == np.float32  # the gradient is cast back to the input's dtype
    np.testing.assert_array_equal(g.data, np.full(x.shape, 3, np.float32))


@given(data=st.data(), shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=3))
def test_concatenate(data, shape):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    a = axis % len(shape)
    xs = []
    for _ in range(data.draw(st.integers(1, 3), label="count")):
        side = data.draw(st.integers(0, 3), label="side")
        xs.append(data.draw(tensors(shape=shape[:a] + (side,) + shape[a + 1:], requires_grad=data.draw(st.booleans())),
                            label="x"))
    xs[0].requires_grad_()
    assert_forward(mg.concatenate(xs, axis), np.concatenate([x.data for x in xs], axis))
    assert check_grads(lambda *xs: mg.concatenate(xs, axis), xs)


@given(data=st.data(), shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3))
def test_stack(data, shape):
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)), label="axis")
    xs = [data.draw(tensors(shape=shape, requires_grad=True), label="x") for _ in range(data.draw(st.integers(1, 3)))]
    assert_forward(mg.stack(xs, axis), np.stack([x.data for x in xs], axis))
    assert check_grads(lambda *xs: mg.stack(xs, axis), xs)


@st.composite
def split_case(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4))
    return draw(tensors(shape=shape, requires_grad=True)), draw(st.integers(-len(shape), len(shape) - 1))


def split_sizes(n, size):
    """torch.split: pieces of ``size``, the last smaller; always at least one piece."""
    return [min(size, n - s) for s in range(0, n, size)] or [0]


def chunk_sizes(n, chunks):
    """torch.chunk: pieces of ceil(n / chunks), maybe fewer than ``chunks``; ``chunks`` empty ones if n == 0."""
    return split_sizes(n, -(-n // chunks)) if n else [0] * chunks


def assert_pieces(pieces, x, sizes, axis):
    expected = np.split(x.data, np.cumsum(sizes)[:-1], axis)
    assert isinstance(pieces, list) and len(pieces) == len(expected)
    for piece, e in zip(pieces, expected):
        assert_forward(piece, e)


@given(case=split_case(), data=st.data())
def test_split(case, data):
    x, axis = case
    n = x.shape[axis]
    size = data.draw(st.integers(1, n + 1), label="split size")
    assert_pieces(mg.split(x, size, axis), x, split_sizes(n, size), axis)
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=3), label="cuts"))
    sections = np.diff([0, *cuts, n]).tolist()  # zero-length sections allowed, as torch.split
    assert_pieces(x.split(sections, axis), x, sections, axis)
    assert check_grads(lambda x: mg.split(x, size, axis), [x])
    assert check_grads(lambda x: mg.split(x, sections, axis), [x])


@given(case=split_case(), data=st.data())
def test_chunk(case, data):
    x, axis = case
    n = x.shape[axis]
    chunks = data.draw(st.integers(1, n + 2), label="chunks")
    assert_pieces(mg.chunk(x, chunks, axis), x, chunk_sizes(n, chunks), axis)
    assert_pieces(x.chunk(chunks, axis), x, chunk_sizes(n, chunks), axis)
    assert check_grads(lambda x: mg.chunk(x, chunks, axis), [x])


def test_split_and_chunk_pieces_match_pytorch():
    x = mg.arange(5.0)
    assert [p.shape for p in mg.chunk(x, 4)] == [(2,), (2,), (1,)]  # 3 pieces, as torch
    assert [p.shape for p in mg.split(x, 10)] == [(5,)]
    assert [p.shape for p in mg.split(x, [0, 5])] == [(0,), (5,)]


def test_split_of_an_empty_axis_gives_one_empty_piece_as_pytorch():
    assert [p.shape for p in mg.split(mg.zeros(0, 3), 2)] == [(0, 3)]


def test_chunk_of_an_empty_axis_gives_chunks_empty_pieces_as_pytorch():
    assert [p.shape for p in mg.chunk(mg.zeros(0, 3), 3)] == [(0, 3)] * 3


# ----------------------------------------------------------------------------- indexing
@given(data=st.data(), x=tensors(requires_grad=True))
def test_getitem_basic(data, x):
    index = data.draw(hnp.basic_indices(x.shape, allow_newaxis=True), label="index")
    assert_forward(x[index], x.data[index])
    assert check_grads(lambda x: x[index], [x])


@given(data=st.data(), x=tensors(requires_grad=True, min_dims=1, min_side=1))
def test_getitem_integer_arrays(data, x):
    # one integer array per dimension, repeats included: their gradients accumulate
    result_shapes = hnp.array_shapes(min_dims=0, max_dims=2)
    index = data.draw(hnp.integer_array_indices(x.shape, result_shape=result_shapes), label="index")
    assert_forward(x[index], x.data[index])
    assert check_grads(lambda x: x[index], [x])
    # an array on one axis with slices around it (the embedding lookup pattern)
    axis = data.draw(st.integers(0, x.ndim - 1), label="axis")
    n = x.shape[axis]
    rows = data.draw(hnp.arrays(np.intp, result_shapes, elements=st.integers(-n, n - 1)), label="rows")
    mixed = (slice(None),) * axis + (rows,)
    assert_forward(x[mixed], x.data[mixed])
    assert_forward(x[(slice(None),) * axis + (mg.Tensor(rows),)], x.data[mixed])  # an integer Tensor index
    assert check_grads(lambda x: x[mixed], [x])


@given(data=st.data(), x=tensors(requires_grad=True))
def test_getitem_boolean_mask(data, x):
    mask = data.draw(hnp.arrays(bool, x.shape), label="mask")
    assert_forward(x[mask], x.data[mask])
    assert check_grads(lambda x: x[mask], [x])


def test_getitem_repeated_indices_accumulate():
    x = mg.tensor([10.0, 20.0, 30.0], requires_grad=True)
    x[[0, 0, 2, 0]].sum().backward()
    np.testing.assert_array_equal(x.grad.data, [3.0, 0.0, 1.0])
    y = mg.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    (y[np.array([1, 1]), np.array([0, 0])] * mg.tensor([2.0, 5.0])).sum().backward()
    np.testing.assert_array_equal(y.grad.data, [[0.0, 0.0], [7.0, 0.0]])


@pytest.mark.parametrize("x_shape, w_shape", [((2, 3, 4), (4, 0)), ((0, 3, 4), (4, 2)), ((2, 3, 4), (4, 2))])
def test_matmul_of_a_batch_with_a_matrix_folds_the_batch_in_backward(x_shape, w_shape):
    rng = np.random.default_rng(0)
    x = mg.Tensor(rng.standard_normal(x_shape), requires_grad=True)
    w = mg.Tensor(rng.standard_normal(w_shape), requires_grad=True)
    (x @ w).sum().backward()
    ones = np.ones(x_shape[:-1] + w_shape[-1:])
    rows = int(np.prod(x_shape[:-1]))
    np.testing.assert_allclose(w.grad.data, x.data.reshape(rows, x_shape[-1]).T @ ones.reshape(rows, w_shape[-1]))
    np.testing.assert_allclose(x.grad.data, ones @ w.data.T)


def test_a_hook_on_a_weight_used_at_many_steps_sees_its_whole_gradient_once():
    rng = np.random.default_rng(1)
    w = mg.Tensor(rng.standard_normal((3, 2)), requires_grad=True)
    w_t = w.T  # a non-leaf used at every step, as the recurrent cells use weight_hh.T
    w_t.retain_grad()
    seen = []
    w_t.register_hook(lambda g: seen.append(np.array(g.data)))
    xs = [mg.Tensor(rng.standard_normal((4, 2))) for _ in range(5)]
    sum(((x @ w_t) ** 2).sum() for x in xs).backward()
    expected = sum(2 * x.data.T @ (x.data @ w.data.T) for x in xs)
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], expected, rtol=1e-12)
    np.testing.assert_allclose(w_t.grad.data, expected, rtol=1e-12)
    np.testing.assert_allclose(w.grad.data, expected.T, rtol=1e-12)
