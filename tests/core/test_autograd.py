"""Reverse mode itself: backward/grad semantics, hooks, grad modes, deep graphs, the
version counter, detect_anomaly, the tape, and dtypes through every op and gradient."""
import gc

import numpy as np
import pytest

import minigrad as mg

F = mg.functional


# ----------------------------------------------------------------------------- backward
def test_scalar_backward_needs_no_grad_argument():
    x = mg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [2.0, 4.0, 6.0])
    y = mg.tensor([[3.0]], requires_grad=True)  # any single-element output is implicit
    (y * 2).backward()
    np.testing.assert_array_equal(y.grad.data, [[2.0]])


def test_non_scalar_backward_needs_a_cotangent():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    y = x * x
    with pytest.raises(ValueError, match=r"backward: output 0 has shape \(2,\).*pass grad="):
        y.backward()
    y.backward(np.array([10.0, 1.0]))
    np.testing.assert_array_equal(x.grad.data, [20.0, 4.0])


def test_leaf_grads_accumulate_across_backward_calls():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    (x * 3).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [5.0, 7.0])
    x.grad = None
    x.sum().backward()
    np.testing.assert_array_equal(x.grad.data, [1.0, 1.0])


def test_second_backward_needs_retain_graph():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()


def test_retain_graph_allows_a_second_backward_that_accumulates():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    y = (mg.exp(x) * x).sum()
    y.backward(retain_graph=True)
    first = x.grad.data.copy()
    y.backward()
    np.testing.assert_allclose(x.grad.data, 2 * first, rtol=1e-15)
    np.testing.assert_allclose(first, np.exp(x.data) * (x.data + 1), rtol=1e-15)


def test_grad_returns_gradients_without_touching_dot_grad():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    w = mg.tensor([3.0, 4.0], requires_grad=True)
    gx, gw = mg.grad((x * w).sum(), [x, w])
    np.testing.assert_array_equal(gx.data, [3.0, 4.0])
    np.testing.assert_array_equal(gw.data, [1.0, 2.0])
    assert x.grad is None and w.grad is None
    assert not gx.requires_grad
    (only,) = mg.grad((x * 2).sum(), x)  # a single Tensor input works too
    np.testing.assert_array_equal(only.data, [2.0, 2.0])


def test_grad_allow_unused():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    unused = mg.tensor([5.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"input 1 \(shape \(1,\)\) is not used.*allow_unused=True"):
        mg.grad((x * x).sum(), [x, unused])
    gx, gu = mg.grad((x * x).sum(), [x, unused], allow_unused=True)
    np.testing.assert_array_equal(gx.data, [2.0, 4.0])
    assert gu is None


def test_grad_of_an_input_asked_for_twice_and_of_a_root():
    # As torch.autograd.grad: every position gets the gradient, and an output may be an input.
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    y = (x * 3).sum()
    g1, g2, gy = mg.grad(y, [x, x, y])
    np.testing.assert_array_equal(g1.data, [3.0, 3.0])
    np.testing.assert_array_equal(g2.data, [3.0, 3.0])
    assert float(gy.data) == 1.0
    y = (x * 3).sum()
    (g,) = mg.grad([y, y], [x])  # a repeated output counts twice
    np.testing.assert_array_equal(g.data, [6.0, 6.0])


def test_grad_of_several_outputs_with_grad_outputs():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    (g,) = mg.grad([x * x, x.sum()], [x], grad_outputs=[mg.tensor([1.0, 10.0]), mg.tensor(3.0)])
    np.testing.assert_array_equal(g.data, [2.0 + 3.0, 40.0 + 3.0])


def test_create_graph_gives_hessian_vector_products():
    x = mg.tensor([1.0, -2.0, 0.5], requires_grad=True)
    v = mg.tensor([1.0, 3.0, -2.0])
    (g,) = mg.grad((x ** 3).sum(), [x], create_graph=True)
    assert g.requires_grad
    np.testing.assert_allclose(g.data, 3 * x.data ** 2, rtol=1e-15)
    (hv,) = mg.grad((g * v).sum(), [x])
    np.testing.assert_allclose(hv.data, 6 * x.data * v.data, rtol=1e-15)  # H = diag(6 x)
    # third order, still through recorded backward passes
    (g,) = mg.grad((x ** 3).sum(), [x], create_graph=True)
    (h,) = mg.grad(g.sum(), [x], create_graph=True)
    (t,) = mg.grad(h.sum(), [x])
    np.testing.assert_allclose(t.data, [6.0, 6.0, 6.0], rtol=1e-15)


def test_backward_with_create_graph_makes_a_differentiable_grad():
    x = mg.tensor([2.0, 3.0], requires_grad=True)
    (x ** 2).sum().backward(create_graph=True)
    assert x.grad.requires_grad
    (hv,) = mg.grad((x.grad * mg.tensor([1.0, 5.0])).sum(), [x])
    np.testing.assert_array_equal(hv.data, [2.0, 10.0])


def test_retain_grad_keeps_a_non_leaf_gradient():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    h = x * 3
    h.retain_grad()
    (h * h).sum().backward()
    np.testing.assert_array_equal(h.grad.data, [6.0, 12.0])
    np.testing.assert_array_equal(x.grad.data, [18.0, 36.0])
    other = x * 2
    (other * other).sum().backward()
    assert other.grad is None  # not retained


def test_register_hook_sees_and_replaces_the_gradient():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    h = x * x
    seen = []
    handle = h.register_hook(lambda g: seen.append(g.data.copy()))
    h.register_hook(lambda g: g * 10)  # runs after the first: replaces what flows on to x
    h.sum().backward()
    np.testing.assert_array_equal(seen[0], [1.0, 1.0])
    np.testing.assert_array_equal(x.grad.data, [20.0, 40.0])
    handle.remove()
    x.grad = None
    h2 = x * x
    leaf_seen = []
    remove_me = x.register_hook(lambda g: leaf_seen.append(g.data.copy()))
    h2.sum().backward()
    np.testing.assert_array_equal(leaf_seen[0], [2.0, 4.0])
    remove_me.remove()
    x.grad = None
    (x * x).sum().backward()
    assert len(leaf_seen) == 1  # removed hooks are not called
    np.testing.assert_array_equal(x.grad.data, [2.0, 4.0])


def test_no_grad_as_context_and_decorator():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    with mg.no_grad():
        assert not mg.is_grad_enabled()
        y = x * 2
    assert mg.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf

    @mg.no_grad()
    def double(t):
        return t * 2

    assert not double(x).requires_grad
    assert mg.is_grad_enabled()
    with pytest.raises(RuntimeError, match="does not require grad"):
        double(x).sum().backward()


def test_enable_grad_inside_no_grad():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    with mg.no_grad():
        with mg.enable_grad():
            y = (x * x).sum()
        z = x * 2
    assert y.requires_grad and not z.requires_grad
    y.backward()
    np.testing.assert_array_equal(x.grad.data, [2.0, 4.0])


def test_detach_cuts_the_graph_and_shares_data():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    d = x.detach()
    assert not d.requires_grad and d.data is x.data
    (x * d).sum().backward()  # d is a constant: d(x * c)/dx = c
    np.testing.assert_array_equal(x.grad.data, [1.0, 2.0])


def test_integer_and_bool_tensors_cannot_require_grad():
    for make in [lambda: mg.Tensor([1, 2], requires_grad=True),
                 lambda: mg.tensor([True, False], requires_grad=True),
                 lambda: mg.arange(3, requires_grad=True),
                 lambda: mg.zeros(2, dtype=np.int32, requires_grad=True),
                 lambda: mg.Tensor([1, 2]).requires_grad_()]:
        with pytest.raises(TypeError, match="only floating-point tensors can require grad"):
            make()


# ----------------------------------------------------------------------------- deep graphs
def test_a_graph_100k_ops_deep_backpropagates_iteratively_and_deletes_cleanly():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y * 1.0
    y.sum().backward(retain_graph=True)  # retained: the 100k-long chain of tensors stays whole
    np.testing.assert_array_equal(x.grad.data, [1.0, 1.0])
    del y  # freeing the chain must not recurse the C stack
    gc.collect()


# ----------------------------------------------------------------------------- version counter
def test_modifying_a_saved_input_in_place_then_backward_raises():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    w = mg.tensor([3.0, 4.0])
    y = (x * w).sum()
    with mg.no_grad():
        w.add_(1.0)
    with pytest.raises(RuntimeError, match=r"mul: .*modified in place"):
        y.backward()


def test_modifying_a_leaf_requiring_grad_under_no_grad_then_backward_raises():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    y = mg.exp(x).sum()
    with mg.no_grad():
        x.mul_(2.0)
    with pytest.raises(RuntimeError, match="exp: .*modified in place"):
        y.backward()


def test_data_setter_bumps_the_version():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    w = mg.tensor([3.0, 4.0], requires_grad=True)
    y = (x * w).sum()
    w.data = np.array([0.0, 0.0])
    with pytest.raises(RuntimeError, match="modified in place"):
        y.backward()
    # a fresh graph after the change is fine
    (x * w).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [0.0, 0.0])


IN_PLACE = {  # name: (change, the op its error names: sub_ and zero_ are built on add_ and fill_)
    "add_": (lambda t: t.add_(1.0), "add_"), "sub_": (lambda t: t.sub_(1.0), "(sub_|add_)"),
    "mul_": (lambda t: t.mul_(2.0), "mul_"), "copy_": (lambda t: t.copy_(np.zeros(2)), "copy_"),
    "fill_": (lambda t: t.fill_(3.0), "fill_"), "zero_": (lambda t: t.zero_(), "(zero_|fill_)"),
    "setitem": (lambda t: t.__setitem__(0, 5.0), "__setitem__"),
}


@pytest.mark.parametrize("name", IN_PLACE)
def test_in_place_change_of_a_tensor_requiring_grad_is_refused_outside_no_grad(name):
    change, op = IN_PLACE[name]
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=rf"{op}: in-place change of a tensor that requires grad"):
        change(x)
    np.testing.assert_array_equal(x.data, [1.0, 2.0])  # refused before touching the data
    with pytest.raises(RuntimeError, match="in-place"):
        change(x * 1.0)  # non-leaves too
    y = (x * x).sum()
    with mg.no_grad():
        change(x)  # allowed (optimizer steps), and counted:
    with pytest.raises(RuntimeError, match=r"mul: .*modified in place"):
        y.backward()


def test_in_place_ops_compute_the_right_values():
    t = mg.tensor([1.0, 2.0, 3.0])
    t.add_(1.0).mul_(2.0).sub_(mg.tensor([1.0, 1.0, 1.0]))
    t[0] = 0.5
    np.testing.assert_array_equal(t.data, [0.5, 5.0, 7.0])
    t.add_(np.ones(3), alpha=-2)
    np.testing.assert_array_equal(t.data, [-1.5, 3.0, 5.0])


# ----------------------------------------------------------------------------- detect_anomaly
def test_detect_anomaly_names_the_forward_op_and_where_it_was_created():
    x = mg.tensor([-1.0, 1.0], requires_grad=True)
    with mg.detect_anomaly(), np.errstate(invalid="ignore"):
        with pytest.raises(FloatingPointError, match=r"log forward output holds NaN.*core/test_autograd\.py"):
            mg.log(x)
    with np.errstate(invalid="ignore"):
        assert np.isnan(mg.log(x).data[0])  # outside detect_anomaly NaN just propagates


def test_detect_anomaly_names_the_op_whose_backward_produces_nan():
    x = mg.tensor([0.0, 4.0], requires_grad=True)
    with mg.detect_anomaly(), np.errstate(divide="ignore", invalid="ignore"):
        y = mg.sqrt(x).sum()  # finite forward: sqrt(0) = 0
        with pytest.raises(FloatingPointError, match=r"sqrt backward.*core/test_autograd\.py"):
            y.backward()  # d sqrt/dx at 0 is inf


def test_detect_anomaly_as_a_decorator():
    @mg.detect_anomaly()
    def bad(t):
        return mg.log(t)

    with np.errstate(divide="ignore"), pytest.raises(FloatingPointError, match="log"):
        bad(mg.tensor([0.0], requires_grad=True))


# ----------------------------------------------------------------------------- tape
def test_tape_lists_entries_in_execution_order():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    w = mg.tensor([3.0, 4.0], requires_grad=True)
    c = mg.tensor([5.0, 6.0])
    h = x * w
    out = mg.tanh(h + c).sum()
    lines = mg.tape(out)
    assert [line.op for line in lines] == ["mul", "add", "tanh", "sum"]
    assert [line.index for line in lines] == [0, 1, 2, 3]
    assert lines[0].inputs == (x, w) and lines[0].output is h
    assert lines[1].inputs[0] is h and lines[1].inputs[1] is c
    assert lines[-1].output is out
    text = [str(line) for line in lines]
    assert text[0].split() == ["0:", "%0[2]", "=", "mul(x0[2],", "x1[2])", "#", "saves", "32", "bytes"]
    assert "c0[2]" in text[1]  # constants are named c0, c1, ...
    assert text[3].endswith("= sum(%2[2])  # saves 16 bytes")
    assert [line.saved_bytes for line in lines] == [32, 32, 16, 16]  # the inputs each entry keeps alive
    out.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        mg.tape(out)  # freed by backward


def test_tape_of_a_leaf_is_empty():
    assert mg.tape(mg.tensor([1.0], requires_grad=True)) == []


# ----------------------------------------------------------------------------- dtypes
OPS = {  # name: f(x, y) for float tensors x, y of shape (2, 3) with positive values
    "add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
    "div": lambda x, y: x / y, "pow": lambda x, y: x ** y, "neg": lambda x, y: -x,
    "rsub": lambda x, y: 1.0 - x, "rdiv": lambda x, y: 3.0 / x, "rpow": lambda x, y: 2.0 ** x,
    "matmul": lambda x, y: x @ y.T, "matmul_vec": lambda x, y: x @ y[0],
    "exp": lambda x, y: mg.exp(x), "log": lambda x, y: mg.log(x), "sqrt": lambda x, y: mg.sqrt(x),
    "abs": lambda x, y: mg.abs(x - 1), "tanh": lambda x, y: mg.tanh(x), "sigmoid": lambda x, y: mg.sigmoid(x),
    "relu": lambda x, y: mg.relu(x - 1), "clip": lambda x, y: mg.clip(x, 0.7, 1.5),
    "maximum": lambda x, y: mg.maximum(x, y), "minimum": lambda x, y: mg.minimum(x, y),
    "where": lambda x, y: mg.where(x.data > 1, x, y),
    "sum": lambda x, y: x.sum(axis=0), "mean": lambda x, y: x.mean(axis=1, keepdims=True),
    "max": lambda x, y: x.max(axis=1), "min": lambda x, y: x.min(), "var": lambda x, y: x.var(axis=0, ddof=1),
    "standardize": lambda x, y: mg.standardize(x, axis=(0, 1)),
    "reshape": lambda x, y: x.reshape(3, 2), "transpose": lambda x, y: x.transpose(1, 0), "T": lambda x, y: x.T,
    "mT": lambda x, y: x.mT, "swapaxes": lambda x, y: x.swapaxes(0, 1), "expand_dims": lambda x, y: x.expand_dims(1),
    "squeeze": lambda x, y: x[:1].squeeze(0), "broadcast_to": lambda x, y: x.broadcast_to((4, 2, 3)),
    "sum_to": lambda x, y: mg.sum_to(x, (1, 3)),
    "flip": lambda x, y: x.flip(1), "concatenate": lambda x, y: mg.concatenate([x, y], 1),
    "stack": lambda x, y: mg.stack([x, y]), "split": lambda x, y: mg.split(x, 2, 1)[1],
    "chunk": lambda x, y: mg.chunk(x, 2)[0], "getitem": lambda x, y: x[1:, ::2],
    "getitem_array": lambda x, y: x[[0, 0, 1]], "softmax": lambda x, y: F.softmax(x),
    "log_softmax": lambda x, y: F.log_softmax(x), "logsumexp": lambda x, y: F.logsumexp(x, axis=0),
    "cross_entropy": lambda x, y: F.cross_entropy(x, [0, 2]), "mse_loss": lambda x, y: F.mse_loss(x, y),
    "dropout": lambda x, y: F.dropout(x, 0.5, rng=np.random.default_rng(0)),
    "embedding": lambda x, y: F.embedding(x, [[1, 0]], padding_idx=0),
}


@pytest.mark.parametrize("name", OPS)
def test_float32_stays_float32_through_every_op_and_its_gradient(name):
    rng = np.random.default_rng(0)
    x = mg.uniform(0.5, 2.0, (2, 3), rng=rng, dtype=np.float32, requires_grad=True)
    y = mg.uniform(0.5, 2.0, (2, 3), rng=rng, dtype=np.float32, requires_grad=True)
    out = OPS[name](x, y)
    assert out.dtype == np.float32
    gx, gy = mg.grad(out.sum(), [x, y], create_graph=True, allow_unused=True)
    for g in (gx, gy):
        assert g is None or g.dtype == np.float32
    second = mg.grad(gx.sum(), [x, y], allow_unused=True) if gx.requires_grad else ()
    for g in second:
        assert g is None or g.dtype == np.float32


def test_python_scalars_do_not_upcast_float32():
    x = mg.tensor([1.0, 2.0], dtype=np.float32, requires_grad=True)
    for out in [x * 2.0, 2.0 * x, x + 1, 1 - x, x / 3, 3.0 / x, x ** 2, 2 ** x, -x,
                mg.maximum(x, 0.5), mg.minimum(0.5, x), mg.where([True, False], x, 0.0),
                mg.where([True, False], 0.0, x), mg.clip(x, 0.0, 1.5), x.mean()]:
        assert out.dtype == np.float32, out


def test_float32_input_of_a_float64_op_gets_a_float32_gradient():
    x = mg.tensor([1.0, 2.0], dtype=np.float32, requires_grad=True)
    out = x * mg.tensor([3.0, 4.0])  # a float64 tensor promotes, as NumPy does
    assert out.dtype == np.float64
    out.sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad.data, [3.0, 4.0])


def test_retain_freed_memory_applies_on_glibc_and_rejects_bad_sizes():
    import platform

    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert mg.retain_freed_memory(64) is expected
    for bad in (-1, 1.5, True, "64"):
        with pytest.raises(ValueError, match="retain_freed_memory: megabytes must be a non-negative integer"):
            mg.retain_freed_memory(bad)


def test_grad_with_respect_to_an_intermediate_leaves_the_graph_behind_it():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    h = mg.tanh(x)
    y = (h * h).sum()
    (gh,) = mg.grad(y, h)  # walks y -> h only, as PyTorch, which does not free h's node
    np.testing.assert_allclose(gh.data, 2 * np.tanh([1.0, 2.0]))
    (h * 3).sum().backward()  # the graph behind h is intact
    np.testing.assert_allclose(x.grad.data, 3 * (1 - np.tanh([1.0, 2.0]) ** 2))
