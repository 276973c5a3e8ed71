"""Compiled steps (minigrad/compiler.py): what is compiled equals the eager reference semantics.

Properties over the built-in cells, the example cells and generated cells with nested states, over
layer configurations (layers, directions, lengths, batch_first, proj_size, dropout), in float64 and
float32: outputs, final states and every gradient agree.  Then what works through one compiled
tape entry (no_grad, hooks, version checks, create_graph), and what a trace refuses.
"""
import gc
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minigrad as mg
from minigrad import compiler, entries, ops
from minigrad.extend import defvjp, primitive
from minigrad.nn import Parameter
from minigrad.testing import gradgradcheck
from minigrad_rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, Recurrent, RNNCell, run_cell
from minigrad_rnn.cells import RecurrentCell
from minigrad_rnn.examples import IndRNNCell, LayerNormLSTMCell, PeepholeLSTMCell

TOL = {np.float64: 1e-12, np.float32: 1e-5}


def run_both(make, x_array, loss_weights, **call):
    """Outputs, final state leaves and gradients (input, then parameters) of ``make()``'s layer, compiled and eager."""
    results = []
    for compile in (True, False):  # noqa: A001
        layer = make()
        layer.compile = compile
        x = mg.Tensor(x_array, requires_grad=True)
        out, state = layer(x, **call)
        leaves = compiler.flatten(state)[0]
        loss = (out * mg.Tensor(loss_weights)).sum() + sum((leaf * leaf).sum() for leaf in leaves)
        loss.backward()
        results.append([out.data, *[leaf.data for leaf in leaves], x.grad.data,
                        *[p.grad.data for p in layer.parameters()]])
    return results


def assert_same(compiled, eager, dtype):
    assert len(compiled) == len(eager)
    for k, (a, b) in enumerate(zip(compiled, eager)):
        # float32 rounding grows with the size of the terms summed, not of each result: a small element
        # of a gradient whose others are large may differ by more than 1e-5 of itself
        scale = max(1.0, float(np.max(np.abs(b)))) if dtype == np.float32 and np.size(b) else 1.0
        np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype] * scale, err_msg=f"result {k}")


CELLS = {
    "rnn_tanh": lambda I, H, dtype, rng: RNNCell(I, H, dtype=dtype, rng=rng),
    "rnn_relu": lambda I, H, dtype, rng: RNNCell(I, H, nonlinearity="relu", dtype=dtype, rng=rng),
    "lstm": lambda I, H, dtype, rng: LSTMCell(I, H, dtype=dtype, rng=rng),
    "lstm_proj": lambda I, H, dtype, rng: LSTMCell(I, H, proj_size=max(1, H // 2), dtype=dtype, rng=rng),
    "gru": lambda I, H, dtype, rng: GRUCell(I, H, dtype=dtype, rng=rng),
    "gru_no_bias": lambda I, H, dtype, rng: GRUCell(I, H, bias=False, dtype=dtype, rng=rng),
    "peephole": lambda I, H, dtype, rng: PeepholeLSTMCell(I, H, dtype=dtype, rng=rng),
    "layernorm": lambda I, H, dtype, rng: LayerNormLSTMCell(I, H, dtype=dtype, rng=rng),
    "indrnn": lambda I, H, dtype, rng: IndRNNCell(I, H, dtype=dtype, rng=rng),
}


@settings(max_examples=40, deadline=None)
@given(cell=st.sampled_from(sorted(CELLS)), dtype=st.sampled_from([np.float64, np.float32]),
       T=st.integers(1, 5), B=st.integers(1, 3), I=st.integers(1, 4), H=st.integers(2, 5),
       bidirectional=st.booleans(), num_layers=st.integers(1, 2), padded=st.booleans(), seed=st.integers(0, 99))
def test_every_cell_compiled_equals_eager(cell, dtype, T, B, I, H, bidirectional, num_layers, padded, seed):
    D = 2 if bidirectional else 1

    def make():
        rng = np.random.default_rng(seed)
        cells, size = [], I
        for _ in range(num_layers):
            cells += [CELLS[cell](size, H, dtype, rng) for _ in range(D)]
            size = D * cells[-1].output_size
        return Recurrent(cells, bidirectional=bidirectional)

    rng = np.random.default_rng(seed + 1)
    lengths = rng.integers(1, T + 1, size=B).tolist() if padded else None
    out_size = D * make().cells[-1].output_size
    x, w = rng.standard_normal((T, B, I)).astype(dtype), rng.standard_normal((T, B, out_size))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no cell may fall back to the eager loop
        compiled, eager = run_both(make, x, w, lengths=lengths)
    assert_same(compiled, eager, dtype)


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(["lstm", "gru", "rnn"]), batch_first=st.booleans(), proj=st.booleans(),
       dropout=st.sampled_from([0.0, 0.5]), recurrent_dropout=st.sampled_from([0.0, 0.3]),
       dtype=st.sampled_from([np.float64, np.float32]), seed=st.integers(0, 99))
def test_layer_options_compiled_equal_eager(kind, batch_first, proj, dropout, recurrent_dropout, dtype, seed):
    layer_class = {"lstm": LSTM, "gru": GRU, "rnn": RNN}[kind]
    extra = {"proj_size": 2} if kind == "lstm" and proj else {}

    def make():  # the same generator state for both runs: the same dropout masks
        return layer_class(3, 4, 2, batch_first=batch_first, dropout=dropout, bidirectional=True, dtype=dtype,
                           rng=np.random.default_rng(seed), recurrent_dropout=recurrent_dropout, **extra)

    rng = np.random.default_rng(seed)
    shape = (2, 5, 3) if batch_first else (5, 2, 3)
    out_size = 2 * (2 if extra else 4)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal(shape[:2] + (out_size,))
    compiled, eager = run_both(make, x, w, lengths=[5, 3])
    assert_same(compiled, eager, dtype)


class NestedCell(RecurrentCell):
    """A generated cell: ``program`` picks the ops; its state is a dict holding a tuple."""

    OPS = {
        "tanh": lambda a, b, w: ops.tanh(a),
        "sigmoid_mul": lambda a, b, w: ops.sigmoid(a) * b,
        "matmul": lambda a, b, w: a @ w,
        "add_sub": lambda a, b, w: a + b - 0.5 * a,
        "relu_abs": lambda a, b, w: ops.relu(a) + ops.abs(b),
        "slices": lambda a, b, w: ops.concatenate([a[:, 1:], b[:, :1]], axis=1),
        "exp_div": lambda a, b, w: ops.exp(-(a * a)) / (1 + b * b),
        "sum_broadcast": lambda a, b, w: a + ops.sum(b, axis=1, keepdims=True),
        "standardize": lambda a, b, w: ops.standardize(a, eps=0.1) + ops.standardize(b, axis=None, eps=0.5),
    }

    def __init__(self, size, program, rng):
        super().__init__(size, size, dtype=np.float64)
        self.program = program
        self.w = Parameter(rng.standard_normal((size, size)) * 0.5)
        self.u = Parameter(rng.standard_normal(size) * 0.5)

    def initial_state(self, batch_size):
        zeros = np.zeros((batch_size, self.hidden_size))
        return {"h": mg.Tensor(zeros), "memory": (mg.Tensor(zeros + 0.1), mg.Tensor(zeros - 0.2))}

    def step(self, x_t, state):
        a, (b, c) = state["h"] + x_t, state["memory"]
        for name in self.program:
            a, b = self.OPS[name](a, b, self.w) + self.u, a
        h = ops.tanh(a) * 0.9 + c * 0.1
        return h, {"h": h, "memory": (ops.tanh(b), c * ops.sigmoid(a))}


@settings(max_examples=40, deadline=None)
@given(program=st.lists(st.sampled_from(sorted(NestedCell.OPS)), min_size=1, max_size=5),
       reverse=st.booleans(), padded=st.booleans(), seed=st.integers(0, 99))
def test_generated_cells_with_nested_states_compiled_equal_eager(program, reverse, padded, seed):
    T, B, size = 4, 3, 3
    rng = np.random.default_rng(seed)
    x_array = rng.standard_normal((T, B, size))
    lengths = [4, 2, 1] if padded else None
    results = []
    for compile in (True, False):  # noqa: A001
        cell = NestedCell(size, program, np.random.default_rng(seed))
        x = mg.Tensor(x_array, requires_grad=True)
        out, state = run_cell(cell, x, lengths=lengths, reverse=reverse, compile=compile)
        leaves = compiler.flatten(state)[0]
        loss = (out * out).sum() + sum((leaf * (k + 1)).sum() for k, leaf in enumerate(leaves))
        loss.backward()
        unused = np.zeros_like(cell.w.data)  # a program without "matmul" does not use w
        results.append([out.data, *[leaf.data for leaf in leaves], x.grad.data, cell.u.grad.data,
                        unused if cell.w.grad is None else cell.w.grad.data])
    assert_same(*results, np.float64)


def test_the_driver_compiles_every_built_in_cell_into_one_tape_entry():
    # every step but the last is ONE entry; the last step is on the tape, so the final state's hooks
    # see every term: the tape does not grow with T
    lstm = LSTM(3, 4, dtype=np.float64, rng=np.random.default_rng(0))
    tapes = [[line.op for line in mg.tape(lstm(mg.Tensor(np.ones((T, 2, 3)), requires_grad=True))[0].sum())]
             for T in (6, 12)]
    assert tapes[0] == tapes[1]
    assert tapes[0].count("scan") == 1 and tapes[0].count("sigmoid") == 1 and "with_last_row" in tapes[0]


def test_the_generated_source_is_the_derived_backward_pass():
    w = mg.Tensor(np.full((2, 2), 0.5), requires_grad=True)

    @mg.compile
    def f(x):
        return mg.tanh(x @ w) * x

    x = mg.Tensor(np.ones((1, 2)), requires_grad=True)
    source = f.source(x)
    assert "def forward(a0, c0):" in source and "def backward(" in source
    assert "v0 = matmul(a0, c0)" in source and "tanh_backward(" in source


def test_compile_equals_eager_and_reads_weights_afresh():
    rng = np.random.default_rng(0)
    w = mg.Tensor(rng.standard_normal((3, 3)), requires_grad=True)

    def f(x, h):
        z = mg.tanh(x @ w + h)
        return z * z, mg.sigmoid(z).sum()

    compiled = mg.compile(f)
    for call in range(3):  # the first call traces, later ones run the program
        x, h = (mg.Tensor(rng.standard_normal((2, 3)), requires_grad=True) for _ in range(2))
        grads = []
        for fn in (compiled, f):
            w.grad = None
            a, b = fn(x, h)
            ((a * a).sum() + b).backward()
            grads.append((a.data, b.data, x.grad.data.copy(), h.grad.data.copy(), w.grad.data.copy()))
            x.grad = h.grad = None
        for got, want in zip(*grads):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        with mg.no_grad():
            w.data = w.data * 0.5  # a new value in the same tensor: the next call reads it


def test_compile_caches_one_program_per_signature_and_is_bounded():
    compiled = mg.compile(lambda x: mg.exp(x) * 2, cache_size=2)
    for n in (1, 2, 3, 3, 2):
        compiled(mg.Tensor(np.ones(n), requires_grad=True))
    assert len(compiled._programs) == 2


def test_no_grad_keeps_no_residuals_and_records_nothing():
    lstm = LSTM(2, 3, dtype=np.float64, rng=np.random.default_rng(0))
    x = mg.Tensor(np.ones((4, 1, 2)))
    with mg.no_grad():
        out, (h, c) = lstm(x)
    assert not out.requires_grad and not h.requires_grad
    lstm.compile = False
    np.testing.assert_array_equal(out.data, lstm(x)[0].data)


def test_hooks_on_the_outputs_of_a_compiled_loop_see_and_replace_the_cotangent():
    gru = GRU(2, 3, dtype=np.float64, rng=np.random.default_rng(0))
    x = mg.Tensor(np.ones((4, 2, 2)), requires_grad=True)
    seen = []
    out, _ = gru(x)
    out.register_hook(lambda g: seen.append(g.data.copy()) or g * 0)
    out.sum().backward()
    assert len(seen) == 1 and seen[0].shape == (4, 2, 3)
    np.testing.assert_array_equal(x.grad.data, 0)


def test_a_weight_changed_in_place_after_the_loop_is_refused_at_backward():
    lstm = LSTM(2, 3, dtype=np.float64, rng=np.random.default_rng(0))
    out, _ = lstm(mg.Tensor(np.ones((3, 1, 2))))
    with mg.no_grad():
        lstm.weight_hh_l0.add_(1.0)  # as an optimizer step would, before backward
    with pytest.raises(RuntimeError, match="modified in place"):
        out.sum().backward()


def test_second_derivatives_through_a_compiled_layer():
    rnn = RNN(2, 2, dtype=np.float64, rng=np.random.default_rng(0))

    def fn(x):
        return rnn(x)[0]

    x = mg.Tensor(np.random.default_rng(1).standard_normal((3, 1, 2)), requires_grad=True)
    assert gradgradcheck(fn, [x])
    (g,) = mg.grad(fn(x).sum(), x, create_graph=True)
    (gg_compiled,) = mg.grad((g * g).sum(), x)
    rnn.compile = False
    (g,) = mg.grad(fn(x).sum(), x, create_graph=True)
    (gg_eager,) = mg.grad((g * g).sum(), x)
    np.testing.assert_allclose(gg_compiled.data, gg_eager.data, rtol=1e-12, atol=1e-12)


def test_scan_follows_lax_scan():
    def step(carry, x_t):
        total, count = carry["total"], carry["count"]
        new = {"total": total + x_t["a"] * x_t["b"], "count": count + 1.0}
        return new, (new["total"], x_t["a"] * 2)

    xs = {"a": mg.Tensor(np.arange(4.0).reshape(4, 1), requires_grad=True), "b": mg.Tensor(np.full((4, 1), 3.0))}
    init = {"total": mg.Tensor(np.zeros(1)), "count": mg.Tensor(np.zeros(1))}
    for reverse in (False, True):
        final, (totals, doubled) = mg.scan(step, init, xs, reverse=reverse)
        assert final["total"].item() == 18.0 and final["count"].item() == 4.0
        expected = np.cumsum([0, 3, 6, 9])[::-1 if reverse else 1]
        expected = expected if not reverse else np.cumsum([9, 6, 3, 0])[::-1]
        np.testing.assert_array_equal(totals.data[:, 0], expected)
        np.testing.assert_array_equal(doubled.data[:, 0], [0, 2, 4, 6])
        (g,) = mg.grad(totals.sum(), xs["a"])
        np.testing.assert_array_equal(g.data[:, 0], 3.0 * (np.arange(4, 0, -1) if not reverse else np.arange(1, 5)))


def test_scan_refuses_a_carry_that_changes_shape():
    with pytest.raises(TypeError, match="scan: the step must return a carry of the structure, shapes and dtypes"):
        mg.scan(lambda c, x: (ops.concatenate([c, x]), x), mg.Tensor(np.zeros(1)), mg.Tensor(np.ones((2, 1))))
    with pytest.raises(ValueError, match="scan: xs needs at least one step"):
        mg.scan(lambda c, x: (c, x), mg.Tensor(np.zeros(1)), mg.Tensor(np.ones((0, 1))))


def test_a_user_op_compiles_with_its_rule():
    softplus = defvjp(primitive(lambda x: np.logaddexp(0, x), "softplus"), lambda g, ans, x: g * ops.sigmoid(x))

    @mg.compile
    def f(x):
        return softplus(x) * x

    x = mg.Tensor(np.linspace(-3, 3, 5), requires_grad=True)
    for _ in range(2):
        (g,) = mg.grad(f(x).sum(), x)
    (want,) = mg.grad(f.fn(x).sum(), x)
    np.testing.assert_allclose(g.data, want.data, rtol=1e-12)
    assert "softplus(a0)" in f.source(x)


@pytest.mark.parametrize("read", [
    lambda h: bool(h.sum() > 0), lambda h: h.sum().item(), lambda h: h.data, lambda h: np.asarray(h),
    lambda h: float(h.sum()), lambda h: h > 0,
], ids=["if", "item", "data", "asarray", "float", "compare"])
def test_a_step_that_reads_values_runs_eagerly_with_a_warning_naming_the_line(read):
    def step(h, x_t):
        read(h)
        return h * 2 + x_t, h

    xs, h0 = mg.Tensor(np.ones((3, 2)), requires_grad=True), mg.Tensor(np.ones(2))
    with pytest.warns(RuntimeWarning, match="scan: running the loop eagerly: .* reads a tensor's values while "
                                            "minigrad.compile/scan traces a step \\(at .*test_compiler.py:[0-9]+ in "):
        final, ys = mg.scan(step, h0, xs)
    eager = mg.scan(step, h0, xs, compile=False)
    np.testing.assert_array_equal(final.data, eager[0].data)
    np.testing.assert_array_equal(ys.data, eager[1].data)


def test_a_compiled_function_may_read_values_its_call_runs_eagerly():
    # compile runs fn on every call: a branch on values takes this call's branch, never a stale one
    @mg.compile
    def f(x):
        return x * 2 if x.sum().item() > 0 else x * -3

    for values in ([1.0, 2.0], [-1.0, -2.0], [1.0, 2.0]):
        x = mg.Tensor(np.array(values), requires_grad=True)
        (g,) = mg.grad(f(x).sum(), x)
        np.testing.assert_array_equal(g.data, [2.0, 2.0] if values[0] > 0 else [-3.0, -3.0])


def test_a_cell_that_reads_values_runs_eagerly_with_one_warning():
    class Branchy(RNNCell):
        def step(self, x_t, h):
            h, _ = super().step(x_t, h)
            return (h, h) if h.sum().item() > -100 else (h * 0, h * 0)

    cell = Branchy(2, 3, dtype=np.float64, rng=np.random.default_rng(0))
    x = mg.Tensor(np.ones((3, 1, 2)))
    with pytest.warns(RuntimeWarning, match="scan: running the loop eagerly: .*Tensor.item.* reads a tensor's values"):
        out, _ = run_cell(cell, x)
    np.testing.assert_array_equal(out.data, run_cell(cell, x, compile=False)[0].data)


def test_a_rule_that_makes_a_constant_from_values_keeps_the_eager_graph_not_baked_in():
    positive_part = primitive(lambda x: np.maximum(x, 0), "positive_part")
    defvjp(positive_part, lambda g, ans, x: g * mg.Tensor(x._data > 0))  # a mask from values, in the rule

    @mg.compile
    def f(x):
        return positive_part(x)

    with pytest.warns(RuntimeWarning, match="keeps its eager graph: .*a VJP rule made a constant of shape"):
        f(mg.Tensor(np.array([-1.0, 1.0]), requires_grad=True))
    for values, expected in (([-1.0, 1.0], [0.0, 1.0]), ([1.0, -1.0], [1.0, 0.0])):  # never the first call's mask
        x = mg.Tensor(np.array(values), requires_grad=True)
        (g,) = mg.grad(f(x).sum(), x)
        np.testing.assert_array_equal(g.data, expected)


@pytest.mark.parametrize("fn", [lambda x: mg.maximum(x, 0.5), lambda x: mg.minimum(x, 0.5),
                                lambda x: mg.clip(x, -0.5, 0.5), lambda x: mg.max(x * x, axis=0),
                                lambda x: mg.min(x, axis=0)], ids=["maximum", "minimum", "clip", "max", "min"])
def test_the_rules_that_mask_by_value_compile_as_ops(fn):
    # their masks were constants made inside the rules, so compile kept the eager graph and scan ran eagerly
    f = mg.compile(lambda x: (fn(x) * mg.tensor([1.0, 2.0, 3.0])).sum())
    for values in ([0.5, -2.0, 0.7], [0.1, 0.5, -0.5], [0.5, 0.5, 0.5]):  # ties and other sides at later calls
        x = mg.Tensor(np.array(values), requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = f(x)
        assert "compiled" in [line.op for line in mg.tape(out)]
        (g,) = mg.grad(out, x)
        (expected,) = mg.grad((fn(x) * mg.tensor([1.0, 2.0, 3.0])).sum(), x)
        np.testing.assert_array_equal(g.data, expected.data)


def test_a_tensor_computed_outside_a_compiled_function_is_an_input_of_this_call():
    # each call reads its own: the gradient flows through it to the leaf it was computed from
    leaf = mg.Tensor(np.ones(2), requires_grad=True)
    f = mg.compile(lambda x: (x * w).sum())
    for scale in (2.0, 3.0):
        w = leaf * scale
        (g_leaf,) = mg.grad(f(mg.Tensor(np.array([1.0, 5.0]))), [leaf])
        np.testing.assert_array_equal(g_leaf.data, [scale, 5.0 * scale])


def test_anomaly_mode_runs_compiled_functions_eagerly():
    f = mg.compile(lambda x: mg.log(x))
    with np.errstate(invalid="ignore"), mg.detect_anomaly(), \
            pytest.raises(FloatingPointError, match="log forward output holds NaN"):
        f(mg.Tensor(np.array([-1.0]), requires_grad=True))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(T=st.integers(1, 6), seed=st.integers(0, 50))
def test_weight_gradients_from_one_matmul_equal_the_per_step_sum(T, seed):
    rng = np.random.default_rng(seed)
    cell = RNNCell(3, 4, dtype=np.float64, rng=rng)
    x = rng.standard_normal((T, 2, 3))
    grads = []
    for compile in (True, False):  # noqa: A001
        cell.zero_grad()
        out, _ = run_cell(cell, x, compile=compile)
        out.sum().backward()
        grads.append(cell.weight_hh.grad.data.copy())
    np.testing.assert_allclose(*grads, rtol=1e-12, atol=1e-12)


def test_a_mask_drawn_anew_inside_a_step_is_refused_not_repeated():
    rng = np.random.default_rng(0)

    class DropoutInsideRNN(RNNCell):
        def step(self, x_t, h):
            mask = mg.Tensor((rng.random(h.shape) > 0.5).astype(h.dtype))  # a new mask at every step
            return super().step(x_t, h * mask)

    cell = DropoutInsideRNN(2, 3, dtype=np.float64, rng=np.random.default_rng(0))
    with pytest.warns(RuntimeWarning, match="makes a new tensor of shape \\(1, 3\\) \\(made at .*test_compiler.py:[0-9]+ "
                                            "in step\\) with other values at its first and last steps"):
        run_cell(cell, mg.Tensor(np.ones((4, 1, 2))))

    masks = iter([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    dropout = mg.compile(lambda x: x * mg.Tensor(next(masks)))
    x = mg.Tensor(np.ones(3), requires_grad=True)
    for expected in ([1.0, 0.0, 1.0], [0.0, 1.0, 1.0]):  # every call draws its own, as eager
        (g,) = mg.grad(dropout(x).sum(), x)
        np.testing.assert_array_equal(g.data, expected)


def test_constants_made_inside_with_the_same_values_compile():
    @mg.compile
    def f(x):
        return x * mg.ones(3) + mg.tensor(0.5)

    x = mg.Tensor(np.arange(3.0), requires_grad=True)
    for _ in range(3):
        (g,) = mg.grad(f(x).sum(), x)
    np.testing.assert_array_equal(g.data, [1.0, 1.0, 1.0])


def test_frozen_weights_compile_and_the_input_gets_its_gradient():
    lstm = LSTM(2, 3, dtype=np.float64, rng=np.random.default_rng(0))
    for p in lstm.parameters():
        p.requires_grad = False
    x = mg.Tensor(np.random.default_rng(1).standard_normal((4, 2, 2)), requires_grad=True)
    grads = []
    for compile in (True, False):  # noqa: A001
        lstm.compile = compile
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            (g,) = mg.grad(lstm(x)[0].sum(), x)
        grads.append(g.data)
    np.testing.assert_allclose(*grads, rtol=1e-12, atol=1e-14)


def test_second_derivatives_through_functional_call_use_the_tensors_of_the_call():
    from minigrad.nn.utils import functional_call

    gru = GRU(2, 3, dtype=np.float64, rng=np.random.default_rng(0))
    x = mg.Tensor(np.random.default_rng(1).standard_normal((4, 1, 2)), requires_grad=True)
    results = []
    for compile in (True, False):  # noqa: A001
        gru.compile = compile
        bias = mg.Tensor(gru.bias_hh_l0.data * 2, requires_grad=True)  # swapped in for the call only
        out = functional_call(gru, {"bias_hh_l0": bias}, (x,))[0]
        (g,) = mg.grad((out * out).sum(), bias, create_graph=True)  # after the call: the step reads the old bias
        (gg,) = mg.grad((g * g).sum(), x)
        results.append((g.data, gg.data))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_the_tape_counts_a_compiled_loops_residuals():
    lstm = LSTM(3, 4, dtype=np.float64, rng=np.random.default_rng(0))
    out, _ = lstm(mg.Tensor(np.ones((10, 2, 3))))
    scan_line = next(line for line in mg.tape(out.sum()) if line.op == "scan")
    inputs = sum(x.size * x.dtype.itemsize for x in scan_line.inputs)
    assert scan_line.saved_bytes > inputs + 9 * 2 * 16 * 8  # at least the gate activations of its 9 steps


def _loop_run(out):
    """The run of the compiled loop whose tape entry made ``out``."""
    return next(line.entry.params["run"] for line in mg.tape(out.sum()) if line.op == "scan")


def test_an_lstm_writes_its_gate_activations_over_its_input_projection():
    # scan's donate_xs, as the NumPy LSTM: the projection's memory holds the sigmoid gates; gradients,
    # a retained second backward and second derivatives (which recompute the projection) equal eager's
    x_array = np.random.default_rng(1).standard_normal((5, 2, 3))
    results = []
    for compile in (True, False):  # noqa: A001
        lstm = LSTM(3, 4, dtype=np.float64, rng=np.random.default_rng(0), compile=compile)
        x = mg.Tensor(x_array, requires_grad=True)
        out, _ = lstm(x)
        if compile:
            run = _loop_run(out)
            assert run.donated == [0] and np.shares_memory(run.stacks[0], entries.owner(run.x_tensors[0]._data))
            assert np.all((run.stacks[0][:-1] > 0) & (run.stacks[0][:-1] < 1))  # sigmoids now (the loop's steps)
        wrt = [x, *lstm.parameters()]
        first = mg.grad((out * out).sum(), wrt, retain_graph=True)
        again = mg.grad((out * out).sum(), wrt, create_graph=True)
        second = mg.grad(sum((g * g).sum() for g in again), [x, lstm.weight_ih_l0])
        results.append([out.data, *[g.data for g in first + again + second]])
    assert_same(*results, np.float64)


def test_a_retained_graph_runs_the_compiled_backward_again():
    # the backward loop pops its own copy of the residuals: the second pass finds them all
    gru = GRU(2, 3, dtype=np.float64, rng=np.random.default_rng(0))
    out, _ = gru(mg.Tensor(np.random.default_rng(1).standard_normal((4, 2, 2))))
    loss = (out * out).sum()
    loss.backward(retain_graph=True)
    once = [p.grad.data.copy() for p in gru.parameters()]
    loss.backward()
    for p, g in zip(gru.parameters(), once):
        np.testing.assert_allclose(p.grad.data, 2 * g, rtol=1e-14)
    # jacrev runs one backward per output element over the same graph (an IndexError on main)
    x = mg.Tensor(np.random.default_rng(2).standard_normal((4, 1, 2)))
    jacobians = []
    for compile in (True, False):  # noqa: A001
        gru.compile = compile
        jacobians.append(mg.func.jacrev(lambda x: gru(x)[0][-1, 0])(x).data)
    assert jacobians[0].shape == (3, 4, 1, 2)
    assert_same(*jacobians, np.float64)


def _sigmoid_gate_step(W):
    """A step whose sigmoid stack has x_t's shape and is written after x_t's last read: donatable."""
    def step(h, x_t):
        s = ops.sigmoid(x_t + h @ W)
        return s * h + 1.0, s * h
    return step


def test_scan_takes_donated_memory_only_where_nothing_saved_it():
    W = mg.Tensor(np.random.default_rng(0).standard_normal((2, 2)), requires_grad=True)
    a = mg.Tensor(np.random.default_rng(1).standard_normal((4, 1, 2)), requires_grad=True)
    h0 = mg.Tensor(np.ones((1, 2)))
    cases = {"a leaf": lambda: a, "saved by exp": lambda: ops.exp(a), "made by mul": lambda: a * 2.0}
    for what, make in cases.items():
        for donate in (True, False):
            xs = make()
            before = xs.data.copy()
            _, ys = mg.scan(_sigmoid_gate_step(W), h0, xs, donate_xs=donate)
            taken = donate and what == "made by mul"
            assert _loop_run(ys).donated == ([0] if taken else []), what
            if taken:  # its memory holds the loop's activations now: reading it refuses, as JAX's
                with pytest.raises(RuntimeError, match="donated to a compiled loop"):
                    xs.data
            else:
                np.testing.assert_array_equal(xs.data, before)

    results = []
    for compile in (True, False):  # noqa: A001
        W.grad = a.grad = None
        xs = a * 2.0
        _, ys = mg.scan(_sigmoid_gate_step(W), h0, xs, compile=compile, donate_xs=True)
        ys.sum().backward()
        results.append([ys.data, W.grad.data, a.grad.data])
    assert_same(*results, np.float64)

    xs = a * 2.0
    also = xs * 3.0  # mul saved xs: after the loop writes over it, backward through this refuses
    _, ys = mg.scan(_sigmoid_gate_step(W), h0, xs, donate_xs=True)
    with pytest.raises(RuntimeError, match="mul: input 0 .* modified in place"):
        (ys.sum() + also.sum()).backward()
    for compile in (True, False):  # noqa: A001 - and a loop over it again refuses, not reads activations
        with pytest.raises(RuntimeError, match=r"scan: a tensor of shape \(4, 1, 2\) was donated"):
            mg.scan(_sigmoid_gate_step(W), h0, xs, compile=compile)


@pytest.mark.parametrize("layer", ["LSTM", "GRU", "LSTM checkpoint_every=3"])
def test_a_compiled_training_step_leaves_no_reference_cycles(layer):
    # Memory goes when its last reference does, not when the garbage collector next runs: a cycle
    # through the donation check (a recursive closure) kept every segment's projection of a
    # checkpointed LSTM alive (T=5000: peak 158 -> 241 MB)
    make = {"LSTM": LSTM, "GRU": GRU, "LSTM checkpoint_every=3": lambda *a, **k: LSTM(*a, checkpoint_every=3, **k)}
    rnn = make[layer](3, 4, rng=np.random.default_rng(0))
    x = mg.Tensor(np.random.default_rng(1).standard_normal((10, 2, 3)).astype(np.float32))
    rnn(x)[0].sum().backward()  # programs compiled before the count
    gc.collect()
    gc.disable()
    try:
        rnn.zero_grad()
        rnn(x)[0].sum().backward()
        assert gc.collect() == 0
    finally:
        gc.enable()
    assert float(np.abs(rnn.weight_hh_l0.grad.data).sum()) > 0


@pytest.mark.parametrize("late", ["x_t read after the stack is written", "a view of x_t saved for backward"])
def test_scan_does_not_write_over_an_x_t_the_step_still_needs(late):
    W = mg.Tensor(np.random.default_rng(0).standard_normal((2, 2)), requires_grad=True)

    def step(h, x_t):
        if late == "x_t read after the stack is written":
            s = ops.sigmoid(h @ W + 1.0)  # a stack of x_t's shape
            h = s * h + x_t
        else:
            p = x_t[:, :1] * x_t[:, 1:]  # read before the stack is written, but its VJP reads the slices
            s = ops.sigmoid(h @ W + 1.0)
            h = s * h + p
        return h, h

    a = mg.Tensor(np.random.default_rng(1).standard_normal((4, 1, 2)), requires_grad=True)
    results = []
    for compile in (True, False):  # noqa: A001
        W.grad = a.grad = None
        xs = a * 2.0
        _, ys = mg.scan(step, mg.Tensor(np.ones((1, 2))), xs, compile=compile, donate_xs=True)
        if compile:
            assert _loop_run(ys).donated == []
        ys.sum().backward()
        results.append([ys.data, W.grad.data, a.grad.data])
    assert_same(*results, np.float64)


def test_a_cell_that_keeps_its_projection_is_refused_not_given_activations():
    class KeepingLSTMCell(LSTMCell):
        kept = None

        def project(self, x):
            if self.kept is None:
                self.kept = super().project(x)
            return self.kept

    x = mg.Tensor(np.random.default_rng(1).standard_normal((5, 2, 3)))
    for compile in (True, False):  # noqa: A001
        layer = Recurrent([KeepingLSTMCell(3, 4, dtype=np.float64, rng=np.random.default_rng(0))])
        layer(x)  # compiled: the loop was donated the projection
        layer.compile = compile
        with pytest.raises(RuntimeError, match=r"KeepingLSTMCell.project: a tensor of shape \(5, 2, 16\) was donated"):
            layer(x)


def test_a_step_reading_a_tensor_and_one_computed_from_it_counts_each_once():
    # the step reads the keys and their projection made outside it (attention's memory): the keys'
    # gradient through the projection reaches them once, via the outer graph, not also inside the program
    results = []
    for compile in (True, False):  # noqa: A001
        W = mg.Tensor(np.random.default_rng(0).standard_normal((3, 2)), requires_grad=True)
        keys = mg.Tensor(np.random.default_rng(1).standard_normal((2, 3)), requires_grad=True)
        projected = keys @ W

        def step(h, x_t):
            h = ops.tanh(h @ projected + x_t + ops.sum(keys, axis=0)[:2])
            return h, h

        final, ys = mg.scan(step, mg.Tensor(np.zeros((1, 2))), mg.Tensor(np.ones((4, 1, 2))), compile=compile)
        (ys.sum() + final.sum()).backward()
        results.append([ys.data, keys.grad.data, W.grad.data])
    assert_same(*results, np.float64)


def test_zero_to_the_zero_is_handled_by_the_compiled_backward_too():
    # pow's rule at x == y == 0 is 0 (as PyTorch); a program traced where no such point occurred must agree
    grads = []
    for compile in (True, False):  # noqa: A001
        y = mg.Tensor(np.array([0.0, 2.0]))
        step = (lambda h, x_t: (h, h * 0 + x_t ** y))
        x = mg.Tensor(np.array([[1.0, 3.0], [0.0, 0.0], [2.0, -1.0]]), requires_grad=True)  # step 1: 0 ** 0
        _, ys = mg.scan(step, mg.Tensor(np.zeros(2)), x, compile=compile)
        ys.sum().backward()
        grads.append(x.grad.data)
    np.testing.assert_array_equal(grads[0], grads[1])
    np.testing.assert_array_equal(grads[1], [[0.0, 6.0], [0.0, 0.0], [0.0, -2.0]])


def _loop_sources(cell, T=5, B=2):
    """The forward and the backward loop :func:`scan` generates for ``cell``'s step."""
    projected = cell.project(mg.Tensor(np.ones((T, B, cell.input_size), cell.dtype)))
    source = compiler.scan_source(lambda state, x_t: cell.step(x_t, state)[::-1], cell.initial_state(B), projected)
    forward = source[source.index("def forward_loop"):source.index("def backward_loop")]
    return forward, source[source.index("def backward_loop"):]


def test_the_backward_loop_computes_the_gate_derivatives_for_all_steps_at_once():
    # as the hand-written NumPy LSTM: the activations' derivatives read only forward values, so they
    # are computed once over the stacked (T, B, 4H) activations; per step only the products remain
    forward, backward = _loop_sources(LSTMCell(3, 4, dtype=np.float64))
    before_loop, loop = backward.split("for t in steps:")
    assert "D3 = tanh_derivative(V10[lo:hi])" in before_loop and "V9 = V1[:, :, 12:16]" in before_loop  # o's block
    assert "F3 = mul(V9[lo:hi], D3, out=D3)" in before_loop  # o * tanh'(c), for a chunk of steps, in D3's buffer
    # the gates' sigmoid derivative is computed into the buffer of the gates' cotangent, and the
    # per-step product multiplies it in place, as the NumPy LSTM's dz
    assert "D16 = sigmoid_derivative(V1[lo:hi], out=GX0[lo:hi])" in before_loop
    assert "derivative" not in loop and "tanh_backward" not in loop
    assert "v1 = sigmoid(v0, out=V1[t])" in forward and "v10 = tanh(v8, out=V10[t])" in forward  # into their stacks
    # the gate blocks' cotangents are written into one buffer by the products, that into GX0[t]
    assert "mul(b0, v10, out=b15[:, 12:16])" in loop and "b16 = mul(b15, d16, out=GX0[t])" in loop
    assert "GX0[t] = " not in loop


@pytest.mark.parametrize("reverse, padded", [(False, False), (True, False), (False, True)])
def test_the_batched_lines_run_a_chunk_of_steps_at_a_time(monkeypatch, reverse, padded):
    # temporaries of at most 16 elements: chunks of 2 steps (B=2, H=4) over T=5, the last one short
    monkeypatch.setattr(compiler.loops, "_CHUNK_ELEMENTS", 16)
    monkeypatch.setattr(compiler.tracing, "_CACHE", type(compiler.tracing._CACHE)())  # programs of the small chunks
    _, backward = _loop_sources(LSTMCell(3, 4, dtype=np.float64))
    assert "for steps in _chunks(times, 2):" in backward and "f3 = F3[t - lo]" in backward
    assert compiler.loops._chunks([0, 1, 2, 3, 4], 2) == [[4, 3], [2, 1], [0]]
    x_array, weights = np.random.default_rng(1).standard_normal((5, 2, 3)), np.linspace(-1, 1, 5 * 2 * 8)
    lengths = [5, 3] if padded else None
    make = lambda: LSTM(3, 4, bidirectional=reverse, dtype=np.float64, rng=np.random.default_rng(0))
    results = run_both(make, x_array, weights.reshape(5, 2, 8)[:, :, :8 if reverse else 4], lengths=lengths)
    assert_same(*results, np.float64)


def test_an_unused_gate_block_gives_the_nan_eager_gives():
    # a sigmoid over two blocks of which the step uses one: eager's VJP multiplies the other block's
    # zero cotangent by sigmoid', which is NaN where its pre-activation is NaN; compiled must agree
    H, rng = 3, np.random.default_rng(0)
    weight = mg.Tensor(rng.standard_normal((H, 2 * H)) * 0.5, requires_grad=True)

    def step(h, x_t):
        gates = ops.sigmoid(x_t + h @ weight)
        h = gates[:, :H] * ops.tanh(h) + x_t[:, :H]
        return h, h

    xs = rng.standard_normal((4, 2, 2 * H))
    xs[2, 1, H + 1] = np.nan  # in the unused block only: the outputs stay finite
    results = []
    for compile in (True, False):  # noqa: A001
        weight.grad = None
        h0, x = mg.Tensor(np.full((2, H), 0.1), requires_grad=True), mg.Tensor(xs, requires_grad=True)
        final, ys = mg.scan(step, h0, x, compile=compile)
        (ys * ys).sum().backward()
        results.append([ys.data, final.data, h0.grad.data, x.grad.data, weight.grad.data])
    assert np.isfinite(results[1][0]).all() and np.isnan(results[1][4]).any()  # eager: NaN in the weight's gradient
    assert_same(*results, np.float64)
    np.testing.assert_array_equal(np.isnan(results[0][4]), np.isnan(results[1][4]))


def test_a_layer_norms_statistics_are_recomputed_for_all_steps_at_once():
    # the standardize rule recomputes 1 / sqrt(var + eps) from its forward input: a reduction of
    # residuals only, so it runs once over the (T, B, 4H) stack, over the same axis one further right
    forward, backward = _loop_sources(LayerNormLSTMCell(3, 4, dtype=np.float64))
    before_loop, loop = backward.split("for t in steps:")
    assert "v1 = matmul(a0, v0, out=V1[t])" in forward  # the normalized input, written into its stack
    assert "= sum_op" in before_loop and "(V1[lo:hi], axis=(2,), keepdims=True)" in before_loop
    assert "(v1, axis" not in loop and "(v12, axis" not in loop  # per step only the cotangent's means


@pytest.mark.parametrize("masked", [False, True])
def test_a_bias_gradient_is_summed_from_rows_kept_for_all_steps(masked):
    # b's cotangent is sum_to(g, (H,)) of a per-step factor the loop stacks anyway (x_t's cotangent
    # in GX; W's outer-product factor): one sum after the loop, not one per step
    H, rng = 3, np.random.default_rng(0)
    W = mg.Tensor(rng.standard_normal((H, H)) * 0.5, requires_grad=True)
    b = mg.Tensor(rng.standard_normal(H), requires_grad=True)
    c = mg.Tensor(rng.standard_normal(H), requires_grad=True)

    def step(h, x_t):
        h = ops.tanh(x_t + b + h @ W) + c * h  # c's cotangent, sum_to(g * h), stays per step
        return h, h

    xs = mg.Tensor(np.ones((4, 2, H)), requires_grad=True)
    loop = compiler.scan_source(step, mg.Tensor(np.zeros((2, H))), xs).split("for t in steps:")[1]
    assert "# sums[4] = b10: the sum of gxs[0]'s rows, after the loop" in loop
    assert loop.count("sum_to(") == 1 and "np.add(sums[4]" not in loop
    masks = [None, np.array([True, False]), np.array([True, False]), None] if masked else None
    results = []
    for compile in (True, False):  # noqa: A001
        for p in (W, b, c):
            p.grad = None
        h0 = mg.Tensor(np.full((2, H), 0.1), requires_grad=True)
        x = mg.Tensor(np.arange(24.0).reshape(4, 2, H) / 10, requires_grad=True)
        final, ys = mg.scan(step, h0, x, masks=masks, compile=compile)
        ((ys * ys).sum() + final.sum()).backward()
        results.append([ys.data, final.data, h0.grad.data, x.grad.data, W.grad.data, b.grad.data, c.grad.data])
    assert_same(*results, np.float64)


def test_a_sum_with_a_negation_is_a_subtraction():
    # a GRU's (1 - z) * n + z * h: sub's VJP negates, and that term meets another: one sub, no neg
    _, backward = _loop_sources(GRUCell(3, 4, dtype=np.float64))
    assert "neg(" not in backward and " = sub(b0, b2)" in backward
    assert "sums[3] = b18: the sum of rights[2]'s rows" in backward  # b_hn's, beside W_hh's outer product


def test_a_stacked_output_is_its_own_stack():
    forward, backward = _loop_sources(RNNCell(3, 4, dtype=np.float64))
    assert "v1 = tanh(v0, out=V1[t])" in forward and "Y0[t] =" not in forward  # h_t is written into the output once
    assert "D1 = tanh_derivative(V1[lo:hi], out=GX0[lo:hi])" in backward  # 1 - h_t**2, then times dL/dh_t in place
    forward, _ = _loop_sources(IndRNNCell(3, 4, dtype=np.float64))
    assert "v2 = relu(v1, out=Y0[t])" in forward and "Y0[t] =" not in forward  # relu's kernel takes out= too


@pytest.mark.parametrize("elementwise", [True, False])
def test_a_user_op_declared_elementwise_runs_over_all_steps_at_once(elementwise):
    d_cube = primitive(lambda x: 3 * x * x, "d_cube", elementwise=elementwise)
    cube = defvjp(primitive(lambda x: x ** 3, "cube", elementwise=elementwise),
                  lambda g, ans, x: g * defvjp(d_cube, lambda gg, ans, x: gg * 6 * x)(x))
    step = (lambda h, x_t: (ops.tanh(cube(h) * 0.5 + x_t),) * 2)
    init, xs = mg.Tensor(np.full((2, 3), 0.3)), mg.Tensor(np.random.default_rng(0).standard_normal((6, 2, 3)))
    backward = compiler.scan_source(step, init, xs).split("def backward_loop")[1]
    assert ("= d_cube(A0[lo:hi])" in backward.split("for t in")[0]) is elementwise  # h_{t-1}, stacked
    results = []
    for compile in (True, False):  # noqa: A001
        h0, x = mg.Tensor(init.data, requires_grad=True), mg.Tensor(xs.data, requires_grad=True)
        final, ys = mg.scan(step, h0, x, compile=compile)
        (ys * ys).sum().backward()
        results.append([ys.data, final.data, h0.grad.data, x.grad.data])
    assert_same(*results, np.float64)


@pytest.mark.parametrize("windows", [[(0, 2), (2, 4)], [(0, 3), (1, 4)], [(1, 2), (2, 3)]],
                         ids=["disjoint, covering", "overlapping", "disjoint, not covering"])
def test_slice_cotangents_into_one_buffer_equal_eager(windows):
    # disjoint blocks are written by the ops that make them; overlapping ones must still add up
    w = mg.Tensor(np.random.default_rng(1).standard_normal((4, 4)), requires_grad=True)

    def step(h, x_t):
        z = h @ w + x_t  # its cotangent is the sum of the windows' slice cotangents
        s = sum(ops.tanh(z[:, a:b]).sum(axis=1, keepdims=True) for a, b in windows)
        h = ops.tanh(s * mg.Tensor(np.linspace(0.1, 0.4, 4)))
        return h, h

    loop = compiler.scan_source(step, mg.Tensor(np.zeros((2, 4))), mg.Tensor(np.ones((5, 2, 4)))).split("for t in")[-1]
    disjoint = windows[0][1] <= windows[1][0]
    assert (", out=b" in loop) is disjoint and ("+=" in loop) is not disjoint
    assert ("np.empty" in loop) is (windows == [(0, 2), (2, 4)])  # zeros where no block covers
    results = []
    for compile in (True, False):  # noqa: A001
        w.grad = None
        x = mg.Tensor(np.random.default_rng(2).standard_normal((5, 2, 4)), requires_grad=True)
        _, ys = mg.scan(step, mg.Tensor(np.zeros((2, 4))), x, compile=compile)
        (ys * ys).sum().backward()
        results.append([ys.data, x.grad.data, w.grad.data])
    assert_same(*results, np.float64)


@pytest.mark.parametrize("cache_size", [0, -1, 2.5, True])
def test_compile_refuses_a_cache_that_holds_nothing(cache_size):
    with pytest.raises(TypeError, match="compile: cache_size must be a positive int"):
        mg.compile(lambda x: x, cache_size=cache_size)
