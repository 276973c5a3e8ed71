"""No silently wrong gradient: in-place changes through views and detached tensors, hooks that change
the gradient's shape, integer tensors made to require grad, PyTorch's gradients at edge points, an exact
sigmoid, and errors that name the real problem (issue 15, first part). Each failed before its fix."""
import warnings

import numpy as np
import pytest

import minigrad as mg

NAN = float("nan")
STALE = "was modified in place after the op ran"


# ----------------------------------------------------------------------------- shared version through views
@pytest.mark.parametrize("case", ["detached", "view of the saved input", "input saved as a view", "sibling view"])
def test_an_in_place_change_through_a_view_or_detached_tensor_is_caught(case):
    x = mg.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    w = mg.tensor([1.0, 2.0, 3.0, 4.0])
    if case == "detached":
        y = x * w
        w.detach().add_(1)
    elif case == "view of the saved input":
        y = x * w
        w[1:3].detach().mul_(2)
    elif case == "input saved as a view":
        y = x[0:3] * w[0:3]
        w.add_(1)
    else:
        y = x[0:3] * w[0:3]
        w[1:4].detach().add_(1)
    with pytest.raises(RuntimeError, match=f"mul: input 1 .*{STALE}"):
        y.sum().backward()


def test_a_parameter_updated_under_no_grad_after_a_view_was_saved_is_caught():
    w = mg.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    y = (w[0:2] * w[0:2]).sum()
    with mg.no_grad():
        w.sub_(0.1)  # an optimizer step before backward
    with pytest.raises(RuntimeError, match=STALE):
        y.backward()


def test_changing_a_copy_or_an_unrelated_tensor_is_not_refused():
    x = mg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    w = mg.tensor([1.0, 2.0, 3.0])
    y = x * w
    mg.tensor(w.data).add_(1)  # Tensor(data) copies
    (w * 1).detach().add_(1)  # a new array, not a view
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.data, [1.0, 2.0, 3.0])


def test_only_the_values_a_rule_reads_are_version_checked():
    # As PyTorch: add's and reshape's rules read no values, so their inputs may change after them;
    # addmm's read mat1 and mat2, not its bias nor its output; exp's read its output.
    x = mg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    w = mg.tensor([1.0, 2.0, 3.0])
    y = (x + w).reshape(3, 1)
    w.add_(1)
    (y * 2).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [2.0, 2.0, 2.0])

    bias, mat1 = mg.tensor([[0.5, 0.5]]), mg.tensor([[1.0, 2.0, 3.0]])
    mat2 = mg.tensor(np.ones((3, 2)), requires_grad=True)
    out = mg.addmm(bias, mat1, mat2)
    with mg.no_grad():
        out.mul_(0)  # its output: saved by nothing
    bias.add_(1)
    out.sum().backward()
    np.testing.assert_array_equal(mat2.grad.data, [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    kept = mg.addmm(bias, mat1, mat2)
    mat1.add_(1)  # mat1: saved
    with pytest.raises(RuntimeError, match=f"addmm: input 1 .*{STALE}"):
        kept.sum().backward()

    e = mg.exp(x)
    with mg.no_grad():
        e.mul_(2)
    with pytest.raises(RuntimeError, match=f"exp: its output .*{STALE}"):
        e.sum().backward()


# ----------------------------------------------------------------------------- hooks
@pytest.mark.parametrize("hook, what", [
    (lambda g: g.sum(), r"shape \(\) and dtype float64"),
    (lambda g: np.ones((2, 3)), r"shape \(2, 3\) and dtype float64"),
    (lambda g: g.astype(np.float32), r"shape \(3,\) and dtype float32"),
])
def test_a_hook_that_changes_the_gradient_shape_or_dtype_is_refused(hook, what):
    x = mg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * 2
    y.register_hook(hook)
    with pytest.raises(RuntimeError, match=rf"a hook on the tensor of shape \(3,\) .*returned a gradient of {what}"):
        y.sum().backward()


def test_a_hook_may_still_replace_the_gradient_by_one_of_its_shape():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    x.register_hook(lambda g: np.array([5.0, 6.0]))
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [5.0, 6.0])


# ----------------------------------------------------------------------------- requires_grad
def test_setting_requires_grad_checks_as_the_constructor_does():
    t = mg.tensor([1, 2, 3])
    with pytest.raises(TypeError, match="requires_grad: only floating-point tensors can require grad"):
        t.requires_grad = True
    assert not t.requires_grad
    f = mg.tensor([1.0, 2.0])
    f.requires_grad = True
    (f * f).sum().backward()
    np.testing.assert_array_equal(f.grad.data, [2.0, 4.0])
    y = f * 2
    with pytest.raises(RuntimeError, match="requires_grad: use detach"):
        y.requires_grad = False


# ----------------------------------------------------------------------------- edge points, as PyTorch
def _grad(fn, values):
    x = mg.tensor(values, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning either
        fn(x).sum().backward()
    return x.grad.data


# the values torch 2.13 gives for the same calls (torch.pow, torch.max, relu, abs, maximum, minimum)
@pytest.mark.parametrize("name, fn, values, expected", [
    ("d(x**0)/dx at 0", lambda x: x ** 0, [0.0, 1.0], [0.0, 0.0]),
    ("d(x**y)/dx at x = y = 0", lambda x: x ** mg.tensor([0.0, 3.0]), [0.0, 2.0], [0.0, 12.0]),
    ("max of a slice holding NaN", lambda x: mg.max(x), [1.0, NAN, 3.0], [0.0, 1.0, 0.0]),
    ("max along an axis holding NaN", lambda x: mg.max(mg.reshape(x, (2, 2)), axis=1), [1.0, NAN, 3.0, 2.0],
     [0.0, 1.0, 1.0, 0.0]),
    ("relu at NaN", mg.relu, [NAN, 1.0, -1.0, 0.0], [1.0, 1.0, 0.0, 0.0]),
    ("abs at NaN", mg.abs, [NAN, 1.0, -1.0, 0.0], [0.0, 1.0, -1.0, 0.0]),
    ("maximum with NaN", lambda x: mg.maximum(x, 0.0), [NAN, 1.0, 0.0], [1.0, 1.0, 0.5]),
    ("minimum with NaN", lambda x: mg.minimum(x, 0.0), [NAN, 1.0, 0.0], [1.0, 0.0, 0.5]),
])
def test_gradients_at_edge_points_match_pytorch(name, fn, values, expected):
    np.testing.assert_array_equal(_grad(fn, values), expected, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_sigmoid_is_exact_at_both_ends_without_warnings(dtype):
    x = np.array([-1e4, -700, -20, -12, -9.7, -1, 0, 1, 9.7, 20, 1e4], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = mg.sigmoid(mg.tensor(x)).data
    assert y.dtype == dtype
    wide = x.astype(np.float64)
    exact = np.where(wide >= 0, 1 / (1 + np.exp(-np.abs(wide))), np.exp(-np.abs(wide)) / (1 + np.exp(-np.abs(wide))))
    np.testing.assert_allclose(y, exact.astype(dtype), rtol=2 * np.finfo(dtype).eps, atol=0)
    assert y[0] == 0 and y[-1] == 1  # not a floor of the tiniest normal number


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_the_sigmoid_kernel_writes_into_out_as_a_ufunc(dtype):
    # a compiled loop has it write each step's gates into their (T, ...) stack
    from minigrad import _kernels
    x = np.array([[-30.0, -1.0, 0.0], [0.5, 2.0, 40.0]], dtype=dtype)
    out = np.full_like(x, np.nan)
    assert _kernels.sigmoid(x, out=out) is out
    np.testing.assert_array_equal(out, _kernels.sigmoid(x))
    exact = (1 / (1 + np.exp(-x.astype(np.float64)))).astype(dtype)
    np.testing.assert_allclose(out, exact, rtol=2 * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("repeats", [1, 400])  # np.where below 2048 elements, masked bits from there
def test_relu_backward_passes_g_exactly_where_x_is_positive_or_nan_and_0_elsewhere(dtype, repeats):
    # PyTorch's threshold_backward: 0 where x <= 0 even for an inf or NaN g; g bit for bit elsewhere
    from minigrad import _kernels
    x = np.array([[NAN, 0.0, -0.0, np.inf, -np.inf, 2.0], [-1.0, 3.0, -2.0, 1e-3, -5.0, 0.5]], dtype=dtype)
    g = np.array([[-0.0, np.inf, np.nan, -np.inf, np.nan, -0.0], [np.inf, np.nan, -np.inf, 7.0, 1.0, -3.0]], dtype=dtype)
    expected = np.array([[-0.0, 0, 0, -np.inf, 0, -0.0], [0, np.nan, 0, 7.0, 0, -3.0]], dtype=dtype)
    x, g, expected = (np.tile(a, (1, repeats)) for a in (x, g, expected))
    result = mg.ops.relu_backward(mg.tensor(g), mg.tensor(x)).data
    assert result.dtype == dtype
    np.testing.assert_array_equal(result, expected)
    np.testing.assert_array_equal(np.signbit(result), np.signbit(expected))
    out = np.full_like(g, 9.0)  # a compiled loop has it write each step's cotangent into its stack
    assert _kernels.relu_backward(g, x, out=out) is out
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(np.signbit(out), np.signbit(expected))
    strided = _kernels.relu_backward(g[:, ::2], x[:, ::2])
    np.testing.assert_array_equal(strided, expected[:, ::2])
    passes = np.tile([False, True, False, True, False, True], repeats)  # where x[1] > 0
    np.testing.assert_array_equal(_kernels.relu_backward(g, x[1]), np.where(passes, g, 0))  # x broadcast


# ----------------------------------------------------------------------------- errors that name the real problem
@pytest.mark.parametrize("call, error, message", [
    (lambda: mg.zeros(2, 3).transpose(5, 0), ValueError,
     r"transpose: axis 5 is out of range for a tensor of shape \(2, 3\) \(valid: integers from -2 to 1\)"),
    (lambda: mg.zeros(2, 3).transpose(0, 1.0), ValueError, r"transpose: axis 1.0 is out of range"),
    (lambda: mg.sum(mg.zeros(2), axis=1.5), TypeError, r"sum: axis must be an int, a tuple of ints or None; got 1.5"),
    (lambda: mg.max(mg.zeros(2), axis=True), TypeError, r"max: axis must be an int"),
    (lambda: mg.tensor([2, 3]) ** -1, ValueError,
     r"pow: Integers to negative integer powers are not allowed. \(x has dtype int64, y has dtype int64\)"),
])
def test_a_bad_argument_gets_an_error_naming_the_op_and_the_argument(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_a_layer_given_zero_time_steps_says_so():
    from minigrad_rnn import LSTM, LSTMCell, run_cell
    with pytest.raises(ValueError, match=r"LSTM: the input \(T, B, I\) has 0 time steps; expected at least 1"):
        LSTM(3, 4)(np.zeros((0, 2, 3), np.float32))
    with pytest.raises(ValueError, match=r"run_cell: the input \(T, B, I\) has 0 time steps"):
        run_cell(LSTMCell(3, 4), np.zeros((0, 2, 3), np.float32))


def test_saving_a_structure_that_contains_itself_is_a_type_error(tmp_path):
    loop = {"a": [1, 2]}
    loop["a"].append(loop)
    with pytest.raises(TypeError, match=r"cannot save a structure that contains itself: obj\['a'\]\[2\]"):
        mg.save(loop, tmp_path / "x")
    shared = [1.0]
    mg.save({"a": shared, "b": shared}, tmp_path / "y")  # shared, not circular: fine
    assert mg.load(tmp_path / "y") == {"a": [1.0], "b": [1.0]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["y"]


def test_a_save_removes_the_temporary_files_of_earlier_killed_saves(tmp_path):
    for token in ("0123456789ab", "ba9876543210"):
        (tmp_path / f".ckpt.{token}.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / ".other.0123456789ab.tmp").write_bytes(b"not ours")
    (tmp_path / ".ckpt.notes.tmp").write_bytes(b"not a save's temporary")
    mg.save({"w": np.arange(3.0)}, tmp_path / "ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ckpt.notes.tmp", ".other.0123456789ab.tmp", "ckpt"]
