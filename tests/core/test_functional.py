"""minigrad.functional: forward against hand NumPy computations, gradients and second
derivatives against finite differences, numerical stability at logits of magnitude 1e4."""
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minigrad as mg
from minigrad.testing import check_grads, floats, tensors

F = mg.functional


def np_log_softmax(a, axis=-1):
    shifted = a - a.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def np_logsumexp(a, axis=-1, keepdims=False):
    m = a.max(axis=axis, keepdims=True)
    out = np.log(np.exp(a - m).sum(axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


@st.composite
def logits_and_axis(draw):
    """Logits with a non-empty softmax axis (other dimensions may be empty)."""
    shape = list(draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4)))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    shape[axis] = max(shape[axis], 1)
    return draw(tensors(shape=tuple(shape), requires_grad=True)), axis


# ----------------------------------------------------------------------------- linear
@st.composite
def linear_case(draw):
    """input (..., in) with 0-2 leading axes (possibly empty), weight (out, in), bias or None."""
    n_in, n_out = draw(st.integers(0, 3)), draw(st.integers(1, 3))
    lead = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3))
    bias = draw(st.none() | tensors(shape=(n_out,), requires_grad=True))
    return (draw(tensors(shape=lead + (n_in,), requires_grad=True)),
            draw(tensors(shape=(n_out, n_in), requires_grad=True)), bias)


@given(case=linear_case())
def test_linear(case):
    x, weight, bias = case
    out = F.linear(x, weight, bias)
    expected = x.data @ weight.data.T + (0 if bias is None else bias.data)
    assert out.shape == x.shape[:-1] + (weight.shape[0],)
    np.testing.assert_allclose(out.data, expected, rtol=1e-12, atol=1e-12)
    args = [x, weight] + ([] if bias is None else [bias])
    assert check_grads(lambda *a: F.linear(*a), args)


def test_linear_names_the_shapes_it_expected():
    with pytest.raises(ValueError, match=r"linear: expected input \(\.\.\., in\) and weight \(out, in\); got shapes \(3, 4\) and \(2, 5\)"):
        F.linear(mg.zeros((3, 4)), mg.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"shapes \(4,\) and \(2, 3, 4\)"):
        F.linear(mg.zeros(4), mg.zeros((2, 3, 4)))


# ----------------------------------------------------------------------------- softmax family
@given(case=logits_and_axis())
def test_softmax(case):
    x, axis = case
    out = F.softmax(x, axis=axis)
    expected = np.exp(np_log_softmax(x.data, axis))
    np.testing.assert_allclose(out.data, expected, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(out.data.sum(axis=axis), 1.0, rtol=1e-12)
    assert check_grads(lambda x: F.softmax(x, axis=axis), [x])


@given(case=logits_and_axis())
def test_log_softmax(case):
    x, axis = case
    np.testing.assert_allclose(F.log_softmax(x, axis=axis).data, np_log_softmax(x.data, axis), rtol=1e-10, atol=1e-12)
    assert check_grads(lambda x: F.log_softmax(x, axis=axis), [x])


@given(case=logits_and_axis(), keepdims=st.booleans(), over_all=st.booleans())
def test_logsumexp(case, keepdims, over_all):
    x, axis = case
    if over_all and x.size:
        axis = None
    out = F.logsumexp(x, axis=axis, keepdims=keepdims)
    expected = np_logsumexp(x.data, axis, keepdims)
    assert out.shape == np.shape(expected)
    np.testing.assert_allclose(out.data, expected, rtol=1e-12, atol=1e-12)
    assert check_grads(lambda x: F.logsumexp(x, axis=axis, keepdims=keepdims), [x])


def test_softmax_family_over_an_empty_axis_as_pytorch():
    x = mg.zeros(2, 0, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert F.softmax(x).shape == (2, 0) and F.log_softmax(x).shape == (2, 0)
        np.testing.assert_array_equal(F.logsumexp(x).data, [-np.inf, -np.inf])  # log of an empty sum


# ----------------------------------------------------------------------------- cross_entropy
def np_cross_entropy(logits, target, ignore_index, reduction):
    valid = np.ones(target.shape, bool) if ignore_index is None else target != ignore_index
    logp = np_log_softmax(logits)
    picked = np.take_along_axis(logp, np.where(valid, target, 0)[..., None], axis=-1)[..., 0]
    loss = np.where(valid, -picked, 0.0)
    return {"none": loss, "sum": loss.sum(), "mean": loss.sum() / max(valid.sum(), 1)}[reduction]


@st.composite
def cross_entropy_case(draw):
    batch = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3))
    classes = draw(st.integers(1, 4))
    logits = draw(tensors(shape=batch + (classes,), requires_grad=True))
    ignore_index = draw(st.sampled_from([None, -100, 0]))
    choices = list(range(classes)) + ([ignore_index] if ignore_index is not None else [])
    target = draw(hnp.arrays(np.int64, batch, elements=st.sampled_from(choices)))
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    valid = target.size if ignore_index is None else int((target != ignore_index).sum())
    if reduction == "mean" and valid == 0:  # a mean over nothing is NaN; not what is tested here
        reduction = "sum"
    return logits, target, ignore_index, reduction


@given(case=cross_entropy_case())
def test_cross_entropy(case):
    logits, target, ignore_index, reduction = case
    loss = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction=reduction)
    expected = np_cross_entropy(logits.data, target, ignore_index, reduction)
    assert loss.shape == np.shape(expected)
    np.testing.assert_allclose(loss.data, expected, rtol=1e-10, atol=1e-12)
    assert check_grads(lambda l: F.cross_entropy(l, target, ignore_index=ignore_index, reduction=reduction), [logits])


def test_cross_entropy_by_hand():
    logits = mg.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 2.0, 3.0]], requires_grad=True)
    target = np.array([0, -100, 2])
    loss = F.cross_entropy(logits, target, ignore_index=-100)
    first, third = np.log1p(2 * np.exp(-2.0)), np.log(np.exp(-2.0) + np.exp(-1.0) + 1)
    # positions with the ignored target count neither in the sum nor in the mean's denominator
    np.testing.assert_allclose(loss.item(), (first + third) / 2, rtol=1e-14)
    loss.backward()
    np.testing.assert_array_equal(logits.grad.data[1], 0.0)
    p = np.exp(np_log_softmax(logits.data))
    np.testing.assert_allclose(logits.grad.data[[0, 2]], (p[[0, 2]] - np.eye(3)[[0, 2]]) / 2, rtol=1e-12)
    none = F.cross_entropy(logits, target, ignore_index=-100, reduction="none")
    np.testing.assert_allclose(none.data, [first, 0.0, third], rtol=1e-14)
    np.testing.assert_allclose(F.cross_entropy(logits, [0, 1, 2], reduction="sum").item(),
                               first + np.log(3) + third, rtol=1e-14)


# ----------------------------------------------------------------------------- mse_loss
@given(data=st.data(), x=tensors(requires_grad=True), reduction=st.sampled_from(["mean", "sum", "none"]))
def test_mse_loss(data, x, reduction):
    y = data.draw(tensors(shape=x.shape, requires_grad=True), label="target")
    if reduction == "mean" and x.size == 0:
        reduction = "sum"
    squares = (x.data - y.data) ** 2
    expected = {"none": squares, "sum": squares.sum(), "mean": squares.mean() if x.size else 0.0}[reduction]
    out = F.mse_loss(x, y, reduction=reduction)
    assert out.shape == np.shape(expected)
    np.testing.assert_allclose(out.data, expected, rtol=1e-12, atol=1e-12)
    assert check_grads(lambda x, y: F.mse_loss(x, y, reduction=reduction), [x, y])


# ----------------------------------------------------------------------------- dropout
@given(x=tensors(elements=floats(1, 10), requires_grad=True), p=st.sampled_from([0.1, 0.5, 0.9]),
       seed=st.integers(0, 2**32 - 1))
def test_dropout_scales_kept_values_and_their_gradient(x, p, seed):
    out = F.dropout(x, p, training=True, rng=np.random.default_rng(seed))
    kept = out.data != 0  # x is never 0, so a 0 means dropped
    np.testing.assert_allclose(out.data[kept], x.data[kept] / (1 - p), rtol=1e-15)
    (g,) = mg.grad(out.sum(), [x])
    np.testing.assert_allclose(g.data, kept / (1 - p), rtol=1e-15)
    # the same seed gives the same mask, so the op is a fixed linear map for check_grads
    assert check_grads(lambda x: F.dropout(x, p, rng=np.random.default_rng(seed)), [x])


def test_dropout_keeps_about_one_minus_p_and_is_identity_in_eval():
    x = mg.ones(100_000)
    out = F.dropout(x, 0.3, rng=np.random.default_rng(0))
    assert abs((out.data != 0).mean() - 0.7) < 0.01
    np.testing.assert_allclose(out.data.mean(), 1.0, atol=0.02)  # inverted dropout keeps the mean
    y = mg.tensor([1.0, -2.0, 3.0], requires_grad=True)
    assert F.dropout(y, 0.5, training=False) is y
    assert F.dropout(y, 0.0, rng=np.random.default_rng(0)) is y
    zero = F.dropout(y, 1.0)
    np.testing.assert_array_equal(zero.data, 0.0)
    zero.sum().backward()
    np.testing.assert_array_equal(y.grad.data, 0.0)


# ----------------------------------------------------------------------------- embedding
@st.composite
def embedding_case(draw):
    rows = draw(st.integers(1, 4))
    weight = draw(tensors(shape=(rows, draw(st.integers(0, 3))), requires_grad=True))
    indices = draw(hnp.arrays(np.int64, hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=4),
                              elements=st.integers(0, rows - 1)))
    return weight, indices, draw(st.none() | st.integers(0, rows - 1))


@given(case=embedding_case())
def test_embedding(case):
    weight, indices, padding_idx = case
    out = F.embedding(weight, indices, padding_idx=padding_idx)
    np.testing.assert_array_equal(out.data, weight.data[indices])  # padding rows are returned as they are
    assert out.shape == indices.shape + weight.shape[1:]
    v = np.random.default_rng(0).standard_normal(out.shape)
    (g,) = mg.grad((out * v).sum(), [weight])
    expected = np.zeros(weight.shape)
    np.add.at(expected, indices, v)  # repeated indices accumulate
    if padding_idx is not None:
        expected[padding_idx] = 0.0
    np.testing.assert_allclose(g.data, expected, rtol=1e-12, atol=1e-12)
    if padding_idx is None:  # with padding the gradient is zeroed on purpose: not a derivative
        assert check_grads(lambda w: F.embedding(w, indices), [weight])


def test_embedding_repeated_indices_and_padding_idx():
    weight = mg.tensor(np.arange(8.0).reshape(4, 2), requires_grad=True)
    F.embedding(weight, [[1, 1, 0], [1, 3, 0]], padding_idx=0).sum().backward()
    np.testing.assert_array_equal(weight.grad.data, [[0, 0], [3, 3], [0, 0], [1, 1]])


# ----------------------------------------------------------------------------- stability
BIG = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4 - 1, 3e3]])
STABLE = {  # name: (function of logits, expected value)
    "softmax": (F.softmax, np.array([[1, 0, 0], [1 / 3] * 3, [1 / (1 + np.exp(-1)), 1 / (1 + np.e), 0]])),
    "log_softmax": (F.log_softmax, np.array([[0, -2e4, -1e4], [-np.log(3)] * 3,
                                              np.array([0, -1, -7e3]) - np.log1p(np.exp(-1))])),
    "logsumexp": (F.logsumexp, np.array([1e4, -1e4 + np.log(3), 1e4 + np.log1p(np.exp(-1))])),
    "cross_entropy": (lambda x: F.cross_entropy(x, [1, 0, 2], reduction="none"),
                      np.array([2e4, np.log(3), 7e3 + np.log1p(np.exp(-1))])),
    "sigmoid": (mg.sigmoid, np.where(BIG > 0, 1.0, np.where(BIG < 0, 0.0, 0.5))),
    "tanh": (mg.tanh, np.sign(BIG)),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", STABLE)
def test_logits_of_magnitude_1e4_stay_finite_without_numpy_warnings(name, dtype):
    fn, expected = STABLE[name]
    x = mg.tensor(BIG, dtype=dtype, requires_grad=True)
    # underflow (exp(-2e4) == 0) is harmless and expected; every other floating-point event is an error
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
        warnings.simplefilter("error")
        out = fn(x)
        (g,) = mg.grad((out * np.ones(out.shape, dtype)).sum(), [x])
    assert out.dtype == dtype and g.dtype == dtype
    np.testing.assert_allclose(out.data, expected, rtol=1e-6 if dtype == np.float32 else 1e-12, atol=1e-12)
    assert np.isfinite(g.data).all()


def test_log_softmax_keeps_float32_accuracy_at_large_logits():
    x = mg.tensor([[-1e4, -1e4, -1e4], [1e4, 1e4 - 1, 3e3]], dtype=np.float32)
    expected = np_log_softmax(x.data.astype(np.float64))
    np.testing.assert_allclose(F.log_softmax(x).data, expected, rtol=1e-6)
    np.testing.assert_allclose(F.cross_entropy(x, [0, 1], reduction="none").data,
                               -expected[[0, 1], [0, 1]], rtol=1e-6)


def test_softmax_family_takes_integer_logits_as_float64():
    logits = mg.tensor([[1, 2, 3], [0, 0, 0]])
    expected = np.exp([[1.0, 2, 3], [0, 0, 0]])
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(mg.functional.softmax(logits).data, expected, rtol=1e-15)
    np.testing.assert_allclose(mg.functional.log_softmax(logits).data, np.log(expected), rtol=1e-15)
    np.testing.assert_allclose(mg.functional.logsumexp(logits).data, np.log(np.exp([[1.0, 2, 3], [0, 0, 0]]).sum(1)),
                               rtol=1e-15)
    assert mg.functional.softmax(logits).dtype == np.float64
