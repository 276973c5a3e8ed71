"""Compiled equals eager, or it says why: each case a user found silently wrong (issue 26), and one
Hypothesis property that changes what a compiled function reads between its calls.

``minigrad.compile`` runs the function on every call and reads its program off that call's tape;
``minigrad.scan`` traces its first step and runs its last on the tape, which must record the same
program.  So nothing a call reads (closure values, rebound tensors, ``training``, ``requires_grad``,
in-place changes, draws) is baked into a program across calls.
"""
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minigrad as mg
from minigrad_rnn import RecurrentCell, run_cell


def _same(a, b, where=""):
    if a is None or b is None:
        assert a is None and b is None, where
        return
    a, b = np.asarray(a), np.asarray(b)
    tolerance = 1e-5 if np.float32 in (a.dtype, b.dtype) else 1e-12  # the contract's, float32 and float64
    np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance * max(1.0, np.abs(b).max(initial=0)), err_msg=where)


# --------------------------------------------------------------------------- the table, row by row
def test_a_closure_float_changed_between_calls_is_read_afresh():
    scale = 2.0
    f = mg.compile(lambda x: (x * scale).sum())
    x = mg.tensor([3.0], requires_grad=True)
    assert f(x).item() == 6.0 and f(x).item() == 6.0
    scale = 3.0
    out = f(x)
    (g,) = mg.grad(out, x)
    assert out.item() == 9.0 and g.item() == 3.0


def test_a_closure_tensor_rebound_between_calls_is_the_new_one():
    w = mg.tensor([1.0], requires_grad=True)
    f = mg.compile(lambda x: (x * w).sum())
    x = mg.tensor([3.0])
    f(x), f(x)
    old, w = w, mg.tensor([5.0], requires_grad=True)
    out = f(x)
    (g,) = mg.grad(out, w)
    assert out.item() == 15.0 and g.item() == 3.0 and old.grad is None


def test_a_module_put_in_train_mode_after_compiling_draws_its_dropout():
    results = []
    for compiled in (True, False):
        drop = mg.nn.Dropout(0.5, rng=np.random.default_rng(0))
        drop.eval()
        f = mg.compile(lambda x, drop=drop: drop(x).sum()) if compiled else (lambda x, drop=drop: drop(x).sum())
        x = mg.ones(100, requires_grad=True)
        f(x), f(x)
        drop.train()
        outs = [f(x) for _ in range(3)]
        grads = [mg.grad(out, x)[0].data for out in outs]
        results.append(([out.item() for out in outs], grads))
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(results[0][1][0], results[0][1][1])  # a new mask per call


def test_a_captured_weight_set_to_require_grad_after_compiling_gets_its_gradient():
    W = mg.tensor([2.0, -1.0])
    f = mg.compile(lambda x: (x * W).sum())
    x = mg.tensor([3.0, 4.0])
    f(x), f(x)
    W.requires_grad = True
    out = f(x)
    assert out.requires_grad
    out.backward()
    np.testing.assert_array_equal(W.grad.data, [3.0, 4.0])


def test_a_buffer_updated_in_place_inside_the_function_is_updated_at_every_call():
    values = []
    for compiled in (True, False):
        buf = mg.tensor([10.0])

        def update(x, buf=buf):
            with mg.no_grad():
                buf.mul_(0.5)
                buf.add_(x.detach())
            return (x * buf).sum()

        f = mg.compile(update) if compiled else update
        seen = []
        for _ in range(4):
            x = mg.tensor([2.5], requires_grad=True)
            (g,) = mg.grad(f(x), x)
            seen.append((buf.item(), g.item()))
        values.append(seen)
    assert values[0] == values[1] == [(7.5, 7.5), (6.25, 6.25), (5.625, 5.625), (5.3125, 5.3125)]


class _MaskInsideStep(RecurrentCell):
    """A cell that draws a dropout mask at every step, from its own generator."""

    def __init__(self):
        super().__init__(1, 1, dtype=np.float64)
        self.rng = np.random.default_rng(1)
        self.weight_hh = mg.nn.Parameter(np.ones((1, 1)))

    def step(self, x_t, h):
        mask = mg.Tensor((self.rng.random(h.shape) > 0.5).astype(np.float64))  # one element: often the same
        h = mg.tanh(x_t + (h * mask) @ self.weight_hh)
        return h, h


def test_a_mask_drawn_inside_the_step_runs_eagerly_with_a_warning_at_every_call():
    compiled, eager = _MaskInsideStep(), _MaskInsideStep()
    x = mg.Tensor(np.full((6, 1, 1), 0.5))
    for _ in range(20):
        with pytest.warns(RuntimeWarning, match="scan: running the loop eagerly: the step draws from its module's"):
            out, _ = run_cell(compiled, x)
        np.testing.assert_array_equal(out.data, run_cell(eager, x, compile=False)[0].data)  # the same draws


def test_a_mask_drawn_from_a_generator_of_no_module_is_caught_at_the_last_step():
    rng = np.random.default_rng(3)

    def step(h, x_t):
        return mg.tanh(x_t + h * mg.Tensor(rng.random(h.shape))), h

    for _ in range(5):
        with pytest.warns(RuntimeWarning, match=r"makes a new tensor of shape \(2,\) \(made at .*test_compiled_equals_"
                                                r"eager.py:[0-9]+ in step\) with other values at its first and last"):
            mg.scan(step, mg.zeros(2), mg.ones(4, 2))


def _rnn_step(W):
    def step(h, x_t):
        h = mg.tanh(x_t + h @ W)
        return h, h * 2.0
    return step


@pytest.mark.parametrize("compiled", [True, False])
def test_the_final_carrys_retained_grad_and_hook_see_every_term(compiled):
    rng = np.random.default_rng(0)
    W = mg.Tensor(rng.standard_normal((3, 3)) * 0.5, requires_grad=True)
    xs = mg.Tensor(rng.standard_normal((6, 2, 3)))
    results = []
    for compile in (compiled, False):  # noqa: A001
        W.grad = None
        final, ys = mg.scan(_rnn_step(W), mg.zeros(2, 3), xs, compile=compile)
        final.retain_grad()
        final.register_hook(lambda g: g * 3.0)
        (ys.sum() + final.sum()).backward()
        results.append((final.grad.data.copy(), W.grad.data.copy()))
    _same(*[r[0] for r in results])
    _same(*[r[1] for r in results])
    assert not np.allclose(results[0][0], 1.0)  # more than the loss's direct term


def test_a_checkpointed_function_whose_constant_changed_in_place_is_refused():
    x = mg.tensor([3.0, 4.0], requires_grad=True)
    for checkpointed in (True, False):
        w = mg.tensor([2.0, 4.0])
        f = lambda x, w=w: (x * x * w).sum()  # noqa: E731
        y = mg.checkpoint(f, x) if checkpointed else f(x)
        with mg.no_grad():
            w.mul_(100.0)
        with pytest.raises(RuntimeError, match="changed in place|modified in place"):
            y.backward()


# --------------------------------------------------------------------------- the bullets below it
def test_a_0_d_carry_compiles_as_eager():
    xs = mg.Tensor(np.random.default_rng(0).standard_normal((6, 3)), requires_grad=True)
    results = []
    for compile in (True, False):  # noqa: A001
        xs.grad = None
        c0 = mg.tensor(0.0, requires_grad=True)
        c, ys = mg.scan(lambda c, x: (mg.tanh(c * 0.5 + x.sum()), c * 2), c0, xs, compile=compile)
        (c + ys.sum()).backward()
        results.append((c.data, ys.data, c0.grad.data, xs.grad.data))
    for a, b in zip(*results):
        _same(a, b)


def test_a_dict_carry_rebuilt_with_its_keys_in_another_order_compiles_as_eager():
    xs = mg.Tensor(np.random.default_rng(0).standard_normal((4, 2, 3)), requires_grad=True)
    init = {"a": mg.zeros(2, 3), "b": mg.ones(2, 3)}

    def step(carry, x):
        return {"b": carry["b"] * mg.tanh(x), "a": carry["a"] + x}, carry["b"]

    results = [mg.scan(step, init, xs, compile=compile) for compile in (True, False)]  # noqa: A001
    for key in ("a", "b"):
        _same(results[0][0][key].data, results[1][0][key].data, key)
    _same(results[0][1].data, results[1][1].data)


def test_an_unused_initial_carry_gets_none_as_eager():
    rng = np.random.default_rng(0)
    W = mg.Tensor(rng.standard_normal((3, 3)), requires_grad=True)
    xs = mg.Tensor(rng.standard_normal((5, 2, 3)))
    for compile in (True, False):  # noqa: A001
        h0 = mg.zeros(2, 3, requires_grad=True)
        _, ys = mg.scan(lambda h, x: (mg.tanh(x @ W), mg.tanh(x @ W)), h0, xs, compile=compile)
        g_W, g_h0 = mg.grad(ys.sum(), [W, h0], allow_unused=True)
        assert g_W is not None and g_h0 is None, compile


def test_a_donated_tensor_refuses_to_be_read():
    W = mg.Tensor(np.eye(3) * 0.5, requires_grad=True)
    xs = mg.Tensor(np.ones((4, 2, 3)), requires_grad=True) + 2.0  # made by an op that saves nothing: donatable

    def step(h, x_t):
        s = mg.sigmoid(x_t + h @ W)
        return s, s * 2.0

    _, ys = mg.scan(step, mg.zeros(2, 3), xs, donate_xs=True)
    for read in (lambda: xs.data, lambda: np.asarray(xs), lambda: xs * 2, lambda: xs[0], lambda: repr(xs)):
        with pytest.raises(RuntimeError, match=r"a tensor of shape \(4, 2, 3\) was donated to a compiled loop"):
            read()
    ys.sum().backward()  # the loop itself still has what it needs
    assert np.all(np.isfinite(W.grad.data))


def test_pow_at_zero_to_the_zero_in_a_later_step_compiles_as_eager():
    # the traced (first) step has no 0 ** 0; a later one has: d/dx is 0 there (PyTorch), not NaN
    xs = mg.Tensor(np.array([[1.0, 2.0], [2.0, 3.0], [0.0, 0.0], [0.5, 2.0]]), requires_grad=True)
    results = []
    for compile in (True, False):  # noqa: A001
        xs.grad = None
        c, ys = mg.scan(lambda c, x: (c + x[0] ** x[1], x[0] ** x[1]), mg.tensor(0.0), xs, compile=compile)
        (c + ys.sum()).backward()
        results.append((ys.data, xs.grad.data))
    assert np.all(np.isfinite(results[0][1]))
    for a, b in zip(*results):
        _same(a, b)


def test_a_constant_derived_from_a_frozen_buffer_is_derived_afresh():
    buf = mg.tensor([1.0, 2.0])
    f = mg.compile(lambda x: (x * (buf * 2.0)).sum())
    x = mg.tensor([1.0, 1.0], requires_grad=True)
    f(x), f(x)
    with mg.no_grad():
        buf.mul_(10.0)
    out = f(x)
    (g,) = mg.grad(out, x)
    assert out.item() == 60.0
    np.testing.assert_array_equal(g.data, [20.0, 40.0])


def test_a_compiled_function_still_runs_its_backward_as_one_generated_program():
    w = mg.Tensor(np.full((2, 2), 0.5), requires_grad=True)
    f = mg.compile(lambda x: (mg.tanh(x @ w) * x).sum())
    x = mg.Tensor(np.ones((1, 2)), requires_grad=True)
    out = f(x)
    tape = [line.op for line in mg.tape(out)]
    assert "compiled" in tape and "tanh" not in tape  # the call's graph is one entry
    out.backward()
    np.testing.assert_allclose(w.grad.data, mg.grad((mg.tanh(x @ w) * x).sum(), w)[0].data, rtol=1e-15)


def test_an_output_computed_from_another_output_keeps_its_eager_graph():
    # a hook on the first must see the second's term, as in eager
    w = mg.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    results = []
    for compiled in (True, False):
        f = (lambda x: (h := mg.tanh(x * w), (h * 3.0).sum()))
        f = mg.compile(f) if compiled else f
        w.grad = None
        h, loss = f(mg.tensor([0.5, -0.5]))
        h.retain_grad()
        loss.backward()
        results.append((h.grad.data, w.grad.data))
    for a, b in zip(*results):
        _same(a, b)


def test_a_compiled_function_given_one_tensor_twice_or_returning_a_constant_is_as_eager():
    w = mg.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    f = mg.compile(lambda x, y: ((x * y * w).sum(), x * 2.0))
    x = mg.tensor([3.0, 4.0])
    loss, constant = f(x, x)
    assert loss.item() == 41.0 and not constant.requires_grad
    (g,) = mg.grad(loss, w)
    np.testing.assert_array_equal(g.data, [9.0, 16.0])


# --------------------------------------------------------------------------- the property
class _World:
    """What a function reads besides its arguments: Python scalars, tensors (looked up by name at
    call time, so rebinding one is seen), a small module (dropout, training flag) and a buffer."""

    def __init__(self):
        rng = np.random.default_rng(0)
        self.scalars = {"a": 0.5, "b": -1.5}
        self.tensors = {"u": mg.Tensor(rng.standard_normal(3), requires_grad=True),
                        "v": mg.Tensor(rng.standard_normal((2, 3)))}
        self.module = mg.nn.Sequential(mg.nn.Linear(3, 3, dtype=np.float64, rng=np.random.default_rng(1)),
                                       mg.nn.Dropout(0.5, rng=np.random.default_rng(2)))
        self.buffer = mg.Tensor(np.ones(3))

    def apply(self, change):
        kind, *args = change
        if kind == "scalar":
            self.scalars[args[0]] = args[1]
        elif kind == "rebind":
            self.tensors[args[0]] = mg.Tensor(np.random.default_rng(args[1]).standard_normal(self.tensors[args[0]].shape),
                                              requires_grad=self.tensors[args[0]].requires_grad)
        elif kind == "in place":
            with mg.no_grad():
                self.tensors[args[0]].mul_(args[1])
        elif kind == "requires_grad":
            self.tensors[args[0]].requires_grad = args[1]
        elif kind == "train":
            self.module.train(args[0])

    def op(self, h, op):
        kind, *args = op
        if kind == "scale":
            return h * self.scalars[args[0]]
        if kind == "add":
            return h + self.tensors[args[0]]
        if kind == "mul":
            return h * self.tensors[args[0]]
        if kind == "module":
            return self.module(h)
        if kind == "buffer":
            with mg.no_grad():
                self.buffer.mul_(0.5)
                self.buffer.add_(0.25)
            return h * self.buffer
        return {"tanh": mg.tanh, "sigmoid": mg.sigmoid, "square": lambda h: h ** 2}[kind](h)

    def program(self, ops):
        def fn(h):
            for op in ops:
                h = self.op(h, op)
            return h
        return fn

    def wanted(self):
        return [t for t in self.tensors.values() if t.requires_grad] + \
            [p for p in self.module.parameters() if p.requires_grad]


_OPS = st.sampled_from([("scale", "a"), ("scale", "b"), ("add", "u"), ("add", "v"), ("mul", "u"), ("mul", "v"),
                        ("module",), ("buffer",), ("tanh",), ("sigmoid",), ("square",)])
_CHANGES = st.one_of(
    st.tuples(st.just("scalar"), st.sampled_from("ab"), st.floats(-2, 2)),
    st.tuples(st.just("rebind"), st.sampled_from("uv"), st.integers(0, 99)),
    st.tuples(st.just("in place"), st.sampled_from("uv"), st.floats(-2, 2)),
    st.tuples(st.just("requires_grad"), st.sampled_from("uv"), st.booleans()),
    st.tuples(st.just("train"), st.booleans()),
    st.just(("no_grad",)),
    st.just(("nothing",)),
)


def _run_both(make_call, ops, changes):
    """Apply each change to two identical worlds, call compiled on one and eager on the other, and
    compare outputs, every gradient and the buffers after each call."""
    worlds = [_World(), _World()]
    calls = [make_call(world, world.program(ops), compiled) for world, compiled in zip(worlds, (True, False))]
    for change in [("nothing",)] + changes:
        results = []
        for world, call in zip(worlds, calls):
            world.apply(change)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a call that warned ran eagerly: it must agree too
                results.append(_outcome(world, call, no_grad=change == ("no_grad",)))
        if isinstance(results[0], str) or isinstance(results[1], str):  # refused: alike, with the same words
            assert results[0] == results[1], change
            continue
        (out_a, grads_a, buf_a), (out_b, grads_b, buf_b) = results
        _same(out_a, out_b, f"output after {change}")
        assert len(grads_a) == len(grads_b)
        for k, (a, b) in enumerate(zip(grads_a, grads_b)):
            _same(a, b, f"gradient {k} after {change}")
        _same(buf_a, buf_b, f"buffer after {change}")


def _outcome(world, call, no_grad: bool):
    """(output, gradients, buffer) of one call, or the error it raised (say, eager's version check)."""
    try:
        if no_grad:
            with mg.no_grad():
                out = call()
            grads = []
        else:
            out = call()
            wanted = world.wanted()
            grads = list(mg.grad((out * out).sum(), wanted, allow_unused=True)) if out.requires_grad and wanted else []
    except RuntimeError as error:
        return f"{type(error).__name__}: {error}"
    return out.data.copy(), [None if g is None else g.data for g in grads], world.buffer.data.copy()


_PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_PROPERTY
@given(ops=st.lists(_OPS, min_size=1, max_size=5), changes=st.lists(_CHANGES, max_size=6))
def test_compile_equals_eager_whatever_changes_between_calls(ops, changes):
    x = np.random.default_rng(5).standard_normal((2, 3))

    def make_call(world, fn, compiled):
        fn = mg.compile(fn) if compiled else fn
        return lambda: fn(mg.Tensor(x, requires_grad=True))

    _run_both(make_call, ops, changes)


@_PROPERTY
@given(ops=st.lists(_OPS, min_size=1, max_size=4), changes=st.lists(_CHANGES, max_size=5),
       T=st.integers(1, 4))
def test_scan_equals_eager_whatever_changes_between_calls(ops, changes, T):
    xs = np.random.default_rng(6).standard_normal((T, 2, 3)) * 0.5

    def make_call(world, fn, compiled):
        def step(h, x_t):
            h = fn(mg.tanh(h + x_t))
            return h, h * 2.0

        generators = [m.rng for m in world.module.modules() if isinstance(m, mg.nn.Dropout)]

        def call():  # given the generators the step draws from, a loop that runs eagerly draws as eager
            final, ys = mg.scan(step, mg.zeros(2, 3), mg.Tensor(xs, requires_grad=True), compile=compiled,
                                generators=generators)
            return final + ys.sum(axis=0)
        return call

    _run_both(make_call, ops, changes)


class _WorldCell(RecurrentCell):
    """A cell whose step is a program reading a world (its module among the cell's children)."""

    def __init__(self, world, fn):
        super().__init__(3, 3, dtype=np.float64)
        self.world, self.fn = world, fn
        self.inner = world.module  # the cell reaches the module: its training flag and generator
        self.weight_hh = mg.nn.Parameter(np.eye(3) * 0.5)

    def step(self, x_t, h):
        h = self.fn(mg.tanh(x_t + h @ self.weight_hh))
        return h, h


@_PROPERTY
@given(ops=st.lists(_OPS, min_size=1, max_size=4), changes=st.lists(_CHANGES, max_size=5),
       T=st.integers(1, 4))
def test_a_cell_through_run_cell_equals_eager_whatever_changes_between_calls(ops, changes, T):
    xs = np.random.default_rng(7).standard_normal((T, 2, 3)) * 0.5

    def make_call(world, fn, compiled):
        cell = _WorldCell(world, fn)
        world.wanted = lambda: [t for t in world.tensors.values() if t.requires_grad] + list(cell.parameters())
        return lambda: run_cell(cell, mg.Tensor(xs, requires_grad=True), compile=compiled)[0].sum(axis=0)

    _run_both(make_call, ops, changes)


def test_a_loop_under_no_grad_over_inputs_that_require_grad_compiles_without_a_warning():
    # its last step's xs slice is made under no_grad (no tape): it must not read as another program
    W = mg.Tensor(np.eye(3) * 0.5, requires_grad=True)
    xs = mg.Tensor(np.random.default_rng(0).standard_normal((5, 2, 3)), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with mg.no_grad():
            final, ys = mg.scan(_rnn_step(W), mg.zeros(2, 3), xs)
    eager = mg.scan(_rnn_step(W), mg.zeros(2, 3), xs, compile=False)
    _same(final.data, eager[0].data)
    _same(ys.data, eager[1].data)
    assert not final.requires_grad and not ys.requires_grad
