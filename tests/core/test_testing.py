"""minigrad.testing itself: gradcheck / gradgradcheck catch wrong derivatives and report
where, and the Hypothesis strategies generate what they promise."""
import doctest
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigrad as mg
import minigrad.testing
from minigrad.extend import defvjp, primitive
from minigrad.testing import (
    GradcheckError, broadcastable_shapes, broadcastable_tensors, check_grads, floats, gradcheck, gradgradcheck,
    mutually_broadcastable_shapes, tensors,
)

# exp with a VJP that is twice too large
WRONG_EXP = defvjp(primitive(np.exp, "wrong_exp"), lambda g, ans, x: g * ans * 2)
# exp whose VJP is right but treats exp(x) as a constant: first order passes, second order does not
CONSTANT_EXP = defvjp(primitive(np.exp, "constant_exp"), lambda g, ans, x: g * mg.Tensor(ans.data))
# a VJP that returns the wrong shape
SUMMED_EXP = defvjp(primitive(np.exp, "summed_exp"), lambda g, ans, x: (g * ans).sum())


def op(exp_op):
    return lambda x: exp_op(x)


def test_gradcheck_passes_correct_gradients():
    x = mg.tensor([[0.5, -1.0, 2.0]], requires_grad=True)
    w = mg.tensor([[1.0], [2.0], [-3.0]], requires_grad=True)
    assert gradcheck(lambda x, w: mg.tanh(x @ w) * mg.exp(x).sum(), [x, w]) is True
    assert gradgradcheck(lambda x, w: mg.tanh(x @ w) * mg.exp(x).sum(), [x, w]) is True


def test_gradcheck_catches_a_wrong_vjp_and_names_the_input():
    x = mg.tensor([0.5, -1.0, 2.0], requires_grad=True)
    c = mg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    with pytest.raises(GradcheckError, match=r"gradient with respect to input 2 \(shape \(3,\)\) does not match") as info:
        gradcheck(lambda scale, c, x: c * op(WRONG_EXP)(x) * scale, [2.0, c, x])
    message = str(info.value)
    worst = int(message.split("worst at index (")[1].split(",")[0])
    # the analytic value reported is the wrong one (2x), the numeric one the truth
    analytic = float(message.split("analytic ")[1].split(",")[0])
    numeric = float(message.split("numeric ")[1].split(" ")[0])
    assert np.isclose(analytic, 2 * numeric, rtol=1e-6)
    assert "atol=1e-05" in message and "rtol=0.001" in message
    assert 0 <= worst < 3
    assert isinstance(info.value, AssertionError)
    assert gradcheck(lambda x: op(WRONG_EXP)(x), [x], raise_exception=False) is False


def test_gradgradcheck_catches_a_wrong_second_derivative():
    x = mg.tensor([0.5, -1.0], requires_grad=True)
    assert gradcheck(op(CONSTANT_EXP), [x])
    with pytest.raises(GradcheckError, match=r"gradgradcheck: second derivative with respect to input 0 \(shape \(2,\)\)"):
        gradgradcheck(op(CONSTANT_EXP), [x])
    assert gradgradcheck(op(CONSTANT_EXP), [x], raise_exception=False) is False
    with pytest.raises(GradcheckError, match="gradgradcheck"):
        check_grads(op(CONSTANT_EXP), [x])
    assert check_grads(op(CONSTANT_EXP), [x], order=1)


def test_gradcheck_checks_the_gradient_shape_and_dtype():
    x = mg.tensor([0.5, -1.0], requires_grad=True)
    # a rule of the wrong shape is refused by reverse mode itself, naming the op and the input
    with pytest.raises(ValueError, match=r"summed_exp: the VJP rule of input 0 returned shape \(\); expected .* \(2,\)"):
        gradcheck(op(SUMMED_EXP), [x])

    def float32_gradient(x):  # a hook replaces x's gradient by a float32 one: refused by backward itself
        x.register_hook(lambda g: g.astype(np.float32))
        return x * 2

    with pytest.raises(RuntimeError, match=r"returned a gradient of shape \(2,\) and dtype float32; .* dtype float64"):
        gradcheck(float32_gradient, [x])


def test_gradcheck_works_on_float64_copies_and_passes_other_inputs_through():
    x = mg.tensor([0.5, -1.0], dtype=np.float32, requires_grad=True)
    constant = mg.tensor([3.0, 4.0], dtype=np.float32)
    seen = []

    def fn(x, constant, label):
        seen.append((x.dtype, constant.dtype, label))
        return x * constant

    assert gradcheck(fn, [x, constant, "label"])
    assert seen and all(args == (np.float64, np.float32, "label") for args in seen)
    assert x.dtype == np.float32 and x.grad is None and x.data.tolist() == [0.5, -1.0]  # untouched


def test_gradcheck_handles_several_outputs_unused_inputs_and_constant_outputs():
    x = mg.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    unused = mg.tensor([1.0], requires_grad=True)
    assert check_grads(lambda x, u: mg.split(x * x, [1, 2], axis=1), [x, unused])
    assert check_grads(lambda x: [x > 2, mg.exp(x) * 0.1, "not a tensor"], x)  # a single Tensor as inputs
    assert check_grads(lambda x: [x > 2, mg.ones(2)], [x])  # no output requires grad: zero gradients
    assert check_grads(lambda x: x, [x])  # the output aliases the input being perturbed
    assert check_grads(lambda x: x.reshape(3, 2).T, [x])  # views of it, too
    assert check_grads(lambda x: mg.exp(x), mg.zeros(0, 3, requires_grad=True))  # size 0


def test_gradcheck_needs_an_input_that_requires_grad():
    with pytest.raises(ValueError, match="no input requires grad"):
        gradcheck(mg.exp, [mg.tensor([1.0])])


def test_gradcheck_works_inside_no_grad():
    with mg.no_grad():
        assert check_grads(mg.tanh, [mg.tensor([0.3, -0.2], requires_grad=True)])


def test_importing_minigrad_does_not_import_hypothesis():
    code = "import minigrad, sys; assert 'hypothesis' not in sys.modules, 'hypothesis was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_docstring_examples_run():
    globs = {"given": given, "st": st, "np": np, "mg": mg}
    result = doctest.testmod(minigrad.testing, extraglobs=globs, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted >= 8


# ----------------------------------------------------------------------------- strategies
@given(x=tensors())
def test_tensors_default(x):
    assert isinstance(x, mg.Tensor) and x.dtype == np.float64 and not x.requires_grad
    assert 0 <= x.ndim <= 3 and all(0 <= n <= 4 for n in x.shape)
    assert np.all(np.abs(x.data) <= 10)
    assert not np.any((x.data != 0) & (np.abs(x.data) < np.finfo(np.float64).tiny))  # no subnormals


@given(x=tensors(shape=(2, 3), dtype=np.float32, requires_grad=True),
       y=tensors(shape=st.sampled_from([(1,), (4, 1)]), dtype=np.int32, elements=st.integers(0, 5)))
def test_tensors_with_shape_dtype_and_elements(x, y):
    assert x.shape == (2, 3) and x.dtype == np.float32 and x.requires_grad and x.is_leaf
    assert y.shape in [(1,), (4, 1)] and y.dtype == np.int32 and np.all((0 <= y.data) & (y.data <= 5))


@given(x=tensors(elements=floats(-1, 1, avoid=[0, 0.5], margin=0.2), unique=True, min_dims=1))
def test_floats_avoid_points_by_the_margin(x):
    assert np.all(np.abs(x.data) >= 0.2 - 1e-12) and np.all(np.abs(x.data - 0.5) >= 0.2 - 1e-12)
    assert len(np.unique(x.data)) == x.size


@given(data=st.data(), shape=st.tuples(st.integers(0, 5), st.integers(1, 2)))
def test_broadcastable_shapes(data, shape):
    other = data.draw(broadcastable_shapes(shape))
    assert len(other) <= 3
    np.broadcast_shapes(shape, other)  # raises if they do not broadcast
    from_strategy = data.draw(broadcastable_shapes(st.just(shape)))
    np.broadcast_shapes(shape, from_strategy)


@given(shapes=mutually_broadcastable_shapes(3, base_shape=(2,)))
def test_mutually_broadcastable_shapes(shapes):
    assert len(shapes.input_shapes) == 3
    assert np.broadcast_shapes((2,), *shapes.input_shapes) == shapes.result_shape


@given(xs=broadcastable_tensors(3, elements=[floats(), floats(1, 2), st.just(0.5)]))
def test_broadcastable_tensors(xs):
    x, y, z = xs
    assert all(t.requires_grad for t in xs)
    np.broadcast_shapes(x.shape, y.shape, z.shape)
    assert np.all((1 <= y.data) & (y.data <= 2)) and np.all(z.data == 0.5)


@given(xy=broadcastable_tensors(2, elements=[floats(-3, 3), floats(0.5, 5)]))
def test_one_line_property_test_of_a_new_op(xy):
    assert check_grads(lambda x, y: mg.exp(x) / y, xy)
