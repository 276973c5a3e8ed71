"""Forward mode and minigrad.func: every op's JVP rule against finite differences and against its VJP
(``<jvp(v), u> == <v, vjp(u)>``), the transforms with torch.func's names, their compositions, and
forward mode through a recurrent layer."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigrad as mg
from minigrad import func, ops
from minigrad.extend import Op, defjvp, defvjp, primitive
from minigrad.nn.utils import functional_call
from minigrad_rnn import LSTM

COND = np.array([[True, False, True, True], [False, True, False, True], [True, True, False, False]])

# op name -> (function of Tensors, input shapes, a transform of raw inputs into its smooth domain)
CASES = {
    "add": (lambda x, y: x + y, [(3, 4), (1, 4)], None),
    "sub": (lambda x, y: x - y, [(3, 1), (3, 4)], None),
    "mul": (lambda x, y: x * y, [(3, 4), (4,)], None),
    "div": (lambda x, y: x / y, [(3, 4), (3, 4)], lambda k, a: a if k == 0 else np.abs(a) + 1),
    "pow": (lambda x, y: x ** y, [(3, 4), (3, 4)], lambda k, a: np.abs(a) + 0.5 if k == 0 else a),
    "maximum": (mg.maximum, [(3, 4), (3, 4)], lambda k, a: a + 3 * k),
    "minimum": (mg.minimum, [(3, 4), (3, 4)], lambda k, a: a + 3 * k),
    "neg": (lambda x: -x, [(3, 4)], None),
    "exp": (mg.exp, [(3, 4)], None),
    "log": (mg.log, [(3, 4)], lambda k, a: np.abs(a) + 0.5),
    "sqrt": (mg.sqrt, [(3, 4)], lambda k, a: np.abs(a) + 0.5),
    "abs": (mg.abs, [(3, 4)], lambda k, a: np.sign(a) * (np.abs(a) + 0.2)),
    "tanh": (mg.tanh, [(3, 4)], None),
    "sigmoid": (mg.sigmoid, [(3, 4)], None),
    "relu": (mg.relu, [(3, 4)], lambda k, a: np.sign(a) * (np.abs(a) + 0.2)),
    "relu_backward": (ops.relu_backward, [(3, 4), (3, 4)], lambda k, a: np.sign(a) * (np.abs(a) + 0.2)),
    "safe_log": (ops.safe_log, [(3, 4)], lambda k, a: np.sign(a) * (np.abs(a) + 0.2)),
    "safe_log_backward": (ops.safe_log_backward, [(3, 4), (3, 4)], lambda k, a: np.sign(a) * (np.abs(a) + 0.2)),
    "sign": (ops.sign, [(3, 4)], lambda k, a: np.sign(a) * (np.abs(a) + 0.2)),
    "zeros_like": (ops.zeros_of, [(3, 4)], None),
    "maximum_weights": (ops.maximum_weights, [(3, 4), (4,)], lambda k, a: a + 3 * k),
    "minimum_weights": (ops.minimum_weights, [(3, 4), (4,)], lambda k, a: a + 3 * k),
    "clip_backward": (lambda g, x: ops.clip_backward(g, x, -0.5, 0.5), [(3, 4), (3, 4)],
                      lambda k, a: np.round(a) * 0.8 + 0.1 * np.tanh(a)),
    "extremum_weights": (lambda x: ops._extremum_weights(x, ops.max(x, axis=0), (0,), False), [(3, 4)],
                         lambda k, a: a + np.arange(a.size).reshape(a.shape)),
    "exponent_less_one": (ops.exponent_less_one, [(3, 4), (4,)], lambda k, a: np.sign(a) * (np.abs(a) + 0.2)),
    "tanh_backward": (ops.tanh_backward, [(3, 4), (3, 4)], None),
    "sigmoid_backward": (ops.sigmoid_backward, [(3, 4), (3, 4)], None),
    "tanh_derivative": (ops.tanh_derivative, [(3, 4)], None),
    "sigmoid_derivative": (ops.sigmoid_derivative, [(3, 4)], None),
    "clip": (lambda x: mg.clip(x, -0.5, 0.5), [(3, 4)], lambda k, a: np.round(a) * 0.8 + 0.1 * np.tanh(a)),
    "where": (lambda x, y: mg.where(COND, x, y), [(3, 4), (4,)], None),
    "sum_to": (lambda x: mg.sum_to(x, (1, 4)), [(3, 4)], None),
    "broadcast_to": (lambda x: mg.broadcast_to(x, (3, 4)), [(1, 4)], None),
    "matmul": (lambda x, y: x @ y, [(2, 3, 4), (4, 2)], None),
    "addmm": (mg.addmm, [(2,), (3, 4), (4, 2)], None),
    "sum": (lambda x: mg.sum(x, axis=1), [(3, 4)], None),
    "standardize": (lambda x: mg.standardize(x, axis=1, eps=0.1), [(3, 4)], None),
    "max": (lambda x: mg.max(x, axis=0), [(3, 4)], lambda k, a: a + np.arange(a.size).reshape(a.shape)),
    "min": (lambda x: mg.min(x, axis=1, keepdims=True), [(3, 4)], lambda k, a: a + np.arange(a.size).reshape(a.shape)),
    "reshape": (lambda x: mg.reshape(x, (4, 3)), [(3, 4)], None),
    "transpose": (lambda x: mg.transpose(x, 1, 0, 2), [(2, 3, 4)], None),
    "flip": (lambda x: mg.flip(x, 1), [(3, 4)], None),
    "astype": (lambda x: mg.astype(x, np.float32) * 1.0, [(3, 4)], None),
    "concatenate": (lambda x, y: mg.concatenate([x, y, x], axis=1), [(3, 4), (3, 2)], None),
    "getitem": (lambda x: x[1:, ::2], [(3, 4)], None),
    "scatter_add": (lambda x: ops.scatter_add(x, (slice(0, 2),), True, (3, 4)), [(2, 4)], None),
}


def test_every_op_of_the_table_has_a_case():
    table = {v.name for v in vars(ops).values() if isinstance(v, Op)}
    table |= {v.op.name for v in vars(ops).values() if isinstance(getattr(v, "op", None), Op)}
    assert table - set(CASES) == set()


def _inputs(name, seed):
    fn, shapes, domain = CASES[name]
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(shape) for shape in shapes]
    return fn, [domain(k, a) if domain else a for k, a in enumerate(xs)], rng


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(CASES)), seed=st.integers(0, 10_000))
def test_jvp_equals_finite_differences_and_the_transpose_of_the_vjp(name, seed):
    fn, xs, rng = _inputs(name, seed)
    vs = [rng.standard_normal(x.shape) for x in xs]
    primals = [mg.Tensor(x) for x in xs]
    out, tangent = func.jvp(fn, primals, [mg.Tensor(v) for v in vs])

    eps = 1e-2 if name == "astype" else 1e-6  # float32 rounding: a longer step (the op is linear)
    plus = fn(*[mg.Tensor(x + eps * v) for x, v in zip(xs, vs)]).data.astype(np.float64)
    minus = fn(*[mg.Tensor(x - eps * v) for x, v in zip(xs, vs)]).data.astype(np.float64)
    tolerance = 1e-4 if name == "astype" else 1e-6  # through float32
    np.testing.assert_allclose(tangent.data, (plus - minus) / (2 * eps), rtol=tolerance, atol=tolerance)

    u = rng.standard_normal(out.shape)
    _, vjp_fn = func.vjp(fn, *primals)
    cotangents = vjp_fn(mg.Tensor(u.astype(out.dtype)))
    forward = float(np.sum(tangent.data * u))
    reverse = sum(float(np.sum(v * c.data)) for v, c in zip(vs, cotangents))
    # through float32 each term rounds (relative 6e-8) and the terms may cancel: the tolerance is
    # relative to their size, not to the sum
    size = float(np.sum(np.abs(tangent.data * u)))
    assert forward == pytest.approx(reverse, rel=1e-9, abs=1e-6 * size if name == "astype" else 1e-9)


def test_grad_value_aux_and_argnums():
    x, y = mg.tensor([1.0, 2.0]), mg.tensor([3.0, -1.0])

    def f(x, y):
        return (x * x * y).sum(), {"x_norm": (x * x).sum()}

    (gx, gy), (value, aux) = func.grad_and_value(f, argnums=(0, 1), has_aux=True)(x, y)
    np.testing.assert_array_equal(gx.data, 2 * x.data * y.data)
    np.testing.assert_array_equal(gy.data, x.data ** 2)
    assert value.item() == -1.0 and aux["x_norm"].item() == 5.0
    gy_only, aux = func.grad(f, argnums=1, has_aux=True)(x, y)
    np.testing.assert_array_equal(gy_only.data, x.data ** 2)
    assert not x.requires_grad and x.grad is None  # the inputs are left alone


def test_grad_of_grad_and_unused_inputs_get_zeros():
    x = mg.tensor(1.5)
    third = func.grad(func.grad(func.grad(lambda x: x ** 4)))(x)
    assert third.item() == pytest.approx(24 * 1.5)
    unused = func.grad(lambda x, y: (x * 2).sum(), argnums=1)(mg.tensor([1.0]), mg.tensor([4.0, 5.0]))
    np.testing.assert_array_equal(unused.data, [0.0, 0.0])


def test_grad_through_functional_call_gives_a_dict_of_gradients():
    lstm = LSTM(2, 3, dtype=np.float64, rng=np.random.default_rng(0))
    x = mg.Tensor(np.random.default_rng(1).standard_normal((4, 1, 2)))
    params = dict(lstm.named_parameters())

    def loss(p):
        return (functional_call(lstm, p, (x,))[0] ** 2).sum()

    grads = func.grad(loss)(params)
    assert list(grads) == list(params)
    lstm.zero_grad()
    (lstm(x)[0] ** 2).sum().backward()
    for name, p in params.items():
        np.testing.assert_allclose(grads[name].data, p.grad.data, rtol=1e-12, atol=1e-14)


def test_jacobians_hessian_hvp_and_linearize_agree():
    x = mg.tensor([0.3, -0.7, 1.2])
    v = mg.tensor([1.0, -2.0, 0.5])

    def f(x):
        return mg.tanh(x) * mg.sum(x * x)

    j_rev, j_fwd = func.jacrev(f)(x), func.jacfwd(f)(x)
    np.testing.assert_allclose(j_rev.data, j_fwd.data, rtol=1e-12, atol=1e-14)

    def scalar(x):
        return mg.sum(mg.exp(x) * x) + mg.sum(x) ** 2

    expected = np.diag(np.exp(x.data) * (x.data + 2)) + 2
    np.testing.assert_allclose(func.hessian(scalar)(x).data, expected, rtol=1e-12)
    np.testing.assert_allclose(func.jacrev(func.jacrev(scalar))(x).data, expected, rtol=1e-12)
    value, product = func.hvp(scalar, x, v)
    assert value.item() == pytest.approx(scalar(x).item())
    np.testing.assert_allclose(product.data, expected @ v.data, rtol=1e-12)
    out, jvp_fn = func.linearize(f, x)
    np.testing.assert_allclose(jvp_fn(v).data, j_rev.data @ v.data, rtol=1e-12)
    np.testing.assert_array_equal(out.data, f(x).data)


def test_forward_over_forward_and_reverse_over_forward():
    x, v = mg.tensor([0.2, 1.1]), mg.tensor([1.0, 0.5])

    def directional(y):
        return func.jvp(lambda z: mg.exp(z) * z, (y,), (v,))[1]

    second = func.jvp(directional, (x,), (v,))[1]  # d2/dt2 f(x + t v), elementwise here
    np.testing.assert_allclose(second.data, np.exp(x.data) * (x.data + 2) * v.data ** 2, rtol=1e-12)
    np.testing.assert_allclose(func.jacrev(directional)(x).data, func.jacfwd(directional)(x).data, rtol=1e-12)


def test_forward_mode_through_an_lstm_matches_finite_differences():
    lstm = LSTM(2, 3, num_layers=2, bidirectional=True, dtype=np.float64, rng=np.random.default_rng(0))
    rng = np.random.default_rng(1)
    x, v = rng.standard_normal((5, 2, 2)), rng.standard_normal((5, 2, 2))
    (out, (h, c)), (t_out, (t_h, t_c)) = func.jvp(lambda x: lstm(x, lengths=[5, 3]), (mg.Tensor(x),), (mg.Tensor(v),))
    eps = 1e-6
    plus, minus = lstm(mg.Tensor(x + eps * v), lengths=[5, 3])[0].data, lstm(mg.Tensor(x - eps * v), lengths=[5, 3])[0].data
    np.testing.assert_allclose(t_out.data, (plus - minus) / (2 * eps), rtol=1e-6, atol=1e-8)
    w = lstm.weight_hh_l0
    dw = rng.standard_normal(w.shape)
    _, t_weights = func.jvp(lambda w: functional_call(lstm, {"weight_hh_l0": w}, (mg.Tensor(x),))[0], (w,),
                            (mg.Tensor(dw),))
    shifted = [functional_call(lstm, {"weight_hh_l0": mg.Tensor(w.data + s * eps * dw)}, (mg.Tensor(x),))[0].data
               for s in (1, -1)]
    np.testing.assert_allclose(t_weights.data, (shifted[0] - shifted[1]) / (2 * eps), rtol=1e-6, atol=1e-8)


def test_a_users_op_gets_forward_mode_from_defjvp():
    softplus = defjvp(defvjp(primitive(lambda x: np.logaddexp(0, x), "softplus"), lambda g, ans, x: g * mg.sigmoid(x)),
                      lambda t, ans, x: t * mg.sigmoid(x))
    x = mg.tensor([-1.0, 0.0, 2.0])
    _, t = func.jvp(softplus, (x,), (mg.ones(3),))
    np.testing.assert_allclose(t.data, 1 / (1 + np.exp(-x.data)))
    no_rule = defvjp(primitive(np.sin, "sine"), lambda g, ans, x: g * 0)
    with pytest.raises(RuntimeError, match="sine: input 0 has a forward-mode tangent but the op has no JVP rule"):
        func.jvp(no_rule, (x,), (mg.ones(3),))
    wrong = defjvp(primitive(np.cos, "cosine"), lambda t, ans, x: mg.ones(2))
    with pytest.raises(ValueError, match="cosine: the JVP rule of input 0 returned shape \\(2,\\); expected"):
        func.jvp(wrong, (x,), (mg.ones(3),))


@pytest.mark.parametrize("call, error, message", [
    (lambda: func.grad(lambda x: x * 2)(mg.tensor([1.0, 2.0])), RuntimeError,
     "expected f\\(\\*args\\) to return a scalar Tensor, got a tensor of shape \\(2,\\)"),
    (lambda: func.grad(lambda x: x.sum(), argnums=2)(mg.tensor([1.0])), ValueError,
     "grad: argnums 2 is out of range for a function called with 1 positional argument"),
    (lambda: func.jvp(mg.exp, (mg.tensor([1.0]),), (mg.tensor([1.0, 2.0]),)), ValueError,
     "jvp: tangent 0 has shape \\(2,\\) and dtype float64; expected the shape \\(1,\\)"),
    (lambda: func.jvp(mg.exp, (mg.tensor([1.0]),), ()), ValueError, "jvp: got 1 primals and 0 tangents"),
    (lambda: func.grad(lambda x: x.sum())(mg.tensor([1, 2])), TypeError, "floating-point tensors"),
])
def test_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_in_place_change_of_a_tensor_with_a_tangent_is_refused():
    def f(x):
        y = x * 2
        y.add_(1.0)
        return y

    with pytest.raises(RuntimeError, match="add_: in-place change of a tensor that carries a forward-mode tangent"):
        func.jvp(f, (mg.tensor([1.0]),), (mg.tensor([1.0]),))


def test_fast_mode_and_forward_mode_checks_catch_a_wrong_rule():
    from minigrad.testing import GradcheckError, check_grads, gradcheck

    good = defjvp(defvjp(primitive(np.sin, "sine2"), lambda g, ans, x: g * mg.Tensor(np.cos(x.data))),
                  lambda t, ans, x: t * mg.Tensor(np.cos(x.data)))
    bad = defjvp(defvjp(primitive(np.sin, "sine3"), lambda g, ans, x: g * 1.1 * mg.Tensor(np.cos(x.data))),
                 lambda t, ans, x: t * 1.1 * mg.Tensor(np.cos(x.data)))
    x = mg.tensor(np.linspace(-1, 1, 7), requires_grad=True)
    assert gradcheck(good, [x], fast_mode=True) and check_grads(good, [x], order=1, modes=("fwd", "rev"))
    with pytest.raises(GradcheckError, match="along a random direction \\(fast mode\\)"):
        gradcheck(bad, [x], fast_mode=True)
    with pytest.raises(GradcheckError, match="jvpcheck: the tangent of output 0"):
        check_grads(bad, [x], order=1, modes=("fwd",))
