"""The op table and minigrad.extend: every tape entry replays from (op, input arrays, params); a user's op
gets what a built-in gets; wrong use of the extension API is a clear error."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigrad as mg
from minigrad import ops
from minigrad.extend import Op, defvjp, defvjp_argnum, primitive, saves
from minigrad.testing import check_grads, floats, tensors

W = mg.Tensor(np.linspace(-1, 1, 16).reshape(4, 4), requires_grad=True)
B = mg.Tensor(np.linspace(0.5, -0.5, 4), requires_grad=True)

# Steps of a program, each (3, 4) -> (3, 4), that together use every primitive of the op table.
STEPS = {
    "add/sub/mul/div": lambda y: (y + 1) * y - y / 3,
    "pow/abs/neg": lambda y: -(mg.abs(y) ** 1.5),
    "exp/log/sqrt": lambda y: mg.log(mg.exp(y) + 1) - mg.sqrt(mg.abs(y)),
    "tanh/sigmoid/relu": lambda y: mg.tanh(y) + mg.sigmoid(y) * mg.relu(y),
    "maximum/minimum": lambda y: mg.maximum(y, 0.1) + mg.minimum(y, y * 2),
    "clip/where": lambda y: mg.where(y > 0, mg.clip(y, -0.5, 0.5), y * 0.5),
    "sum_to/broadcast_to": lambda y: y + mg.broadcast_to(mg.sum_to(y, (1, 4)), (3, 4)),
    "matmul/addmm": lambda y: mg.addmm(B, y, W) - y @ W,
    "standardize": lambda y: mg.standardize(y) + mg.standardize(y, axis=0, eps=0.1) * y,
    "sum/max/min": lambda y: y - mg.max(y, axis=1, keepdims=True) + mg.min(y, axis=0) + mg.sum(y, axis=1, keepdims=True),
    "reshape/transpose/flip": lambda y: mg.flip(mg.transpose(mg.reshape(mg.reshape(y, (12,)) * 2, (4, 3))), 0),
    "astype": lambda y: mg.astype(mg.astype(y, np.float32) * 2, np.float64),
    "concatenate/getitem": lambda y: mg.concatenate([y[:, :2], y[[2, 0, 1], 2:]], axis=1),
    "scatter_add": lambda y: y + ops.scatter_add(y[1:], (slice(0, 2),), True, (3, 4)),
    "fused backward ops": lambda y: ops.tanh_backward(y, mg.tanh(y)) + ops.sigmoid_backward(y, mg.sigmoid(y)),
    "derivatives": lambda y: ops.tanh_derivative(mg.tanh(y)) * ops.sigmoid_derivative(mg.sigmoid(y)),
    "masks as ops": lambda y: ops.relu_backward(y, y - 0.5) * ops.sign(y) + ops.exponent_less_one(y * 0, y[0] * 0),
    "safe log": lambda y: ops.safe_log(y) + ops.safe_log_backward(y, y - 0.5),
    "masks of maximum, minimum, clip, max": lambda y: ops.maximum_weights(y, y[0]) + ops.minimum_weights(y[1], y)
    + ops.clip_backward(y, y * 2, -0.5, 0.5) + ops._extremum_weights(y, mg.max(y, axis=1), (1,), False)
    + ops.zeros_of(y),
}


def _replay_every_entry(out):
    lines = mg.tape(out)
    for line in lines:
        replayed = line.entry.replay()
        assert replayed.dtype == line.output.dtype and replayed.shape == line.output.shape, line
        np.testing.assert_array_equal(replayed, line.output.data, err_msg=str(line))
    return {line.op for line in lines}


@settings(max_examples=60, deadline=None)
@given(x=tensors(shape=(3, 4), requires_grad=True, elements=floats(-3, 3)),
       program=st.lists(st.sampled_from(sorted(STEPS)), min_size=1, max_size=6))
def test_replaying_each_tape_entry_reproduces_its_output_bit_for_bit(x, program):
    y = x
    for name in program:
        y = STEPS[name](y)
    _replay_every_entry(y.sum())


def test_the_replay_program_covers_every_op_of_the_table():
    x = mg.tensor(np.linspace(-2, 2, 12).reshape(3, 4), requires_grad=True)
    used = set()
    for step in STEPS.values():
        used |= _replay_every_entry(step(x).sum())
    table = {v.name for v in vars(ops).values() if isinstance(v, Op)}
    table |= {v.op.name for v in vars(ops).values() if isinstance(getattr(v, "op", None), Op)}
    assert table - used == set()


def test_replay_of_a_freed_entry_is_refused():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    y = mg.exp(x)
    (line,) = mg.tape(y)
    y.sum().backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        line.entry.replay()


# ----------------------------------------------------------------------------- a user's op
softplus = defvjp(primitive(lambda x: np.logaddexp(0, x), "softplus"), lambda g, ans, x: g * mg.sigmoid(x))


def test_a_user_op_is_stable_and_differentiable_to_second_order():
    x = mg.tensor([-800.0, -1.0, 0.0, 2.0, 800.0], requires_grad=True)
    y = softplus(x)
    np.testing.assert_allclose(y.data, [0.0, np.log1p(np.exp(-1.0)), np.log(2), 2 + np.log1p(np.exp(-2.0)), 800.0])
    (g,) = mg.grad(y.sum(), x, create_graph=True)
    s = 0.5 * (1 + np.tanh(x.data / 2))  # sigmoid without overflow
    np.testing.assert_allclose(g.data, s, atol=1e-300)  # (minigrad's sigmoid floors at the tiniest normal)
    (h,) = mg.grad(g.sum(), x)
    np.testing.assert_allclose(h.data, s * (1 - s), atol=1e-300)
    assert mg.tape(y)[0].op == "softplus"


@given(x=tensors(requires_grad=True, elements=floats(-5, 5)))
def test_a_user_op_passes_check_grads(x):
    assert check_grads(softplus, [x])


def test_a_user_op_gets_hooks_version_checks_and_anomaly_mode():
    x = mg.tensor([0.0, 1.0], requires_grad=True)
    seen = []
    y = softplus(x)
    y.register_hook(lambda g: seen.append(g.data.copy()) or g * 2)
    y.sum().backward()
    np.testing.assert_allclose(seen, [[1.0, 1.0]])
    np.testing.assert_allclose(x.grad.data, 2 / (1 + np.exp(-x.data)))

    leaf = mg.tensor([0.0, 1.0])
    w = mg.tensor([1.0, 1.0], requires_grad=True)
    z = softplus(w * leaf)
    leaf.add_(1)  # leaf was saved by mul, which feeds the user's op
    with pytest.raises(RuntimeError, match="mul: input 1 .* modified in place"):
        z.sum().backward()

    bad = defvjp(primitive(np.log, "my_log"), lambda g, ans, x: g / x)
    with mg.detect_anomaly(), np.errstate(divide="ignore"), \
            pytest.raises(FloatingPointError, match=r"my_log forward output holds NaN or Inf"):
        bad(mg.tensor([0.0, 1.0], requires_grad=True))


def test_a_user_op_declares_what_its_rules_read():
    def scale_op():  # x * s, whose rule reads neither value: g * s is a parameter
        return defvjp(primitive(lambda x, s: x * s, "scale"), lambda g, ans, x, s: g * s)
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    checked, declared = scale_op(), saves(scale_op())
    assert (checked.saved_inputs, checked.saves_output) == (None, True)  # by default every value
    assert (declared.saved_inputs, declared.saves_output) == (frozenset(), False)
    for op in (checked, declared):
        y = op(x * 1, s=3.0)
        with mg.no_grad():
            y.mul_(0)
        if op is checked:
            with pytest.raises(RuntimeError, match="scale: its output .* modified in place"):
                y.sum().backward()
        else:
            y.sum().backward()
            np.testing.assert_array_equal(x.grad.data, [3.0, 3.0])
    with pytest.raises(TypeError, match=r"saves: input positions of scale must be ints; got \(True,\)"):
        saves(scale_op(), True)
    with pytest.raises(TypeError, match="saves: expected an Op"):
        saves(np.exp)


def test_a_broadcasting_user_op_gets_its_cotangents_summed_back():
    hypot = defvjp(primitive(np.hypot, "hypot", broadcasts=True),
                   lambda g, ans, x, y: g * x / ans, lambda g, ans, x, y: g * y / ans)
    x = mg.tensor([[3.0], [6.0]], requires_grad=True)
    y = mg.tensor([4.0, 8.0, 0.0], requires_grad=True)
    gx, gy = mg.grad(hypot(x, y).sum(), [x, y])
    assert gx.shape == (2, 1) and gy.shape == (3,)
    ans = np.hypot(x.data, y.data)
    np.testing.assert_allclose(gx.data, (x.data / ans).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(gy.data, (y.data / ans).sum(axis=0))


def test_defvjp_argnum_serves_any_number_of_inputs():
    total = defvjp_argnum(primitive(lambda *xs: np.sum(xs, axis=0), "total"), lambda i, g, ans, inputs: g * (i + 1))
    xs = [mg.tensor([1.0, 2.0], requires_grad=True) for _ in range(3)]
    grads = mg.grad(total(*xs).sum(), xs)
    assert [g.data.tolist() for g in grads] == [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]


# ----------------------------------------------------------------------------- wrong use
def test_a_rule_for_an_input_the_op_does_not_have():
    with pytest.raises(ValueError, match=r"defvjp: 2 rules given, but the forward of square takes 1 inputs"):
        defvjp(primitive(lambda x: x * x, "square"), lambda g, ans, x: g * 2 * x, lambda g, ans, x: g)
    with pytest.raises(ValueError, match=r"defvjp: 3 rules given, but the forward of multiply takes 2 inputs"):
        defvjp(primitive(np.multiply), None, None, None)
    with pytest.raises(TypeError, match="defvjp: the rule for input 0 of f is a int"):
        defvjp(primitive(np.exp, "f"), 3)
    with pytest.raises(TypeError, match="defvjp: expected an Op"):
        defvjp(np.exp, lambda g, ans, x: g)


def test_an_input_without_a_rule_is_named_when_it_needs_one():
    half = defvjp(primitive(lambda x, y: x * y, "half"), lambda g, ans, x, y: g * y)
    x, y = mg.tensor([1.0], requires_grad=True), mg.tensor([2.0], requires_grad=True)
    assert mg.grad(half(x, mg.tensor([2.0])).sum(), x)[0].data.tolist() == [2.0]
    with pytest.raises(RuntimeError, match="half: input 1 requires grad but the op has no VJP rule for it"):
        mg.grad(half(x, y).sum(), y)


@pytest.mark.parametrize("rule, error, message", [
    (lambda g, ans, x: g.sum(), ValueError, r"wrong: the VJP rule of input 0 returned shape \(\); expected the "
                                            r"input's shape \(3,\) \(sum a broadcast cotangent back"),
    (lambda g, ans, x: mg.astype(g, np.int64), TypeError, r"wrong: the VJP rule of input 0 returned dtype int64"),
    (lambda g, ans, x: [1.0, 2.0, 3.0], TypeError, r"wrong: the VJP rule of input 0 returned list; expected a Tensor"),
])
def test_a_rule_with_a_wrong_result_is_named_with_the_op_and_input(rule, error, message):
    op = defvjp(primitive(np.sin, "wrong"), rule)
    x = mg.tensor([0.0, 1.0, 2.0], requires_grad=True)
    with pytest.raises(error, match=message):
        op(x).sum().backward()


def test_a_rule_may_return_an_array_and_a_float64_cotangent_is_cast():
    op = defvjp(primitive(np.sin, "sin"), lambda g, ans, x: np.cos(x.data.astype(np.float64)) * g.data)
    x = mg.tensor([0.0, 1.0], requires_grad=True, dtype=np.float32)
    (g,) = mg.grad(op(x).sum(), x)
    assert g.dtype == np.float32
    np.testing.assert_allclose(g.data, np.cos([0.0, 1.0]), rtol=1e-6)


@pytest.mark.parametrize("forward, message", [
    (lambda x: x.tolist(), r"bad: forward must return a NumPy array; got list"),
    (lambda x: 3.0, r"bad: forward must return a NumPy array; got float"),
    (lambda x: np.array(["a"]), r"bad: forward returned an array of dtype <U1; expected a numeric dtype"),
])
def test_a_forward_that_returns_no_numeric_array_is_refused(forward, message):
    with pytest.raises(TypeError, match=message):
        primitive(forward, "bad")(mg.tensor([1.0]))
    with pytest.raises(TypeError, match="primitive: forward must be a function"):
        primitive(3)


def test_a_user_op_in_a_custom_cell_backpropagates_through_time():
    from minigrad_rnn import Recurrent, RecurrentCell

    class SoftplusRNNCell(RecurrentCell):
        def __init__(self, input_size, hidden_size):
            super().__init__(input_size, hidden_size, dtype=np.float64)
            rng = np.random.default_rng(0)
            self.weight_ih = mg.nn.Parameter(rng.standard_normal((input_size, hidden_size)) * 0.3)
            self.weight_hh = mg.nn.Parameter(rng.standard_normal((hidden_size, hidden_size)) * 0.3)

        def step(self, x_t, h):
            h = softplus(x_t @ self.weight_ih + h @ self.weight_hh) - 0.7
            return h, h

    layer = Recurrent([SoftplusRNNCell(3, 4)])
    x = mg.tensor(np.random.default_rng(1).standard_normal((5, 2, 3)), requires_grad=True)
    assert check_grads(lambda x: layer(x)[0], [x], order=1)
