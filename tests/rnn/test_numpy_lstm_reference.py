"""The benchmarks' hand-written NumPy LSTM against PyTorch's, and the benchmark
training steps of every library against each other."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # benchmarks/ is not an installed package
    sys.path.insert(0, str(ROOT))

import minigrad as mg
import minigrad_rnn as layers
from benchmarks.numpy_lstm import PARAM_NAMES, NumpyLSTM
from benchmarks.rnn_steps import LIBRARIES, Unavailable, check_grads, make_data


@pytest.fixture
def lstm_reference(shared_dir):
    """PyTorch's one-layer LSTM case; ``shared_dir`` (conftest) skips when ../shared is absent."""
    path = shared_dir / "reference" / "torch_rnn" / "lstm_1layer.npz"
    if not path.exists():
        pytest.fail(f"reference file missing from the shared directory: {path}")
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def reference_lstm(ref, dtype):
    """A NumpyLSTM with the reference weights, run forward on the reference input."""
    config = json.loads(str(ref["config"]))
    lstm = NumpyLSTM(config["input_size"], config["hidden_size"], dtype=dtype)
    lstm.load_state_dict({name: ref[f"param.{name}_l0"] for name in PARAM_NAMES})
    outputs = lstm.forward(ref["x"], ref["h0"][0], ref["c0"][0])
    return lstm, outputs


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-8), (np.float32, 1e-4)])
def test_matches_torch_lstm(lstm_reference, dtype, tol):
    ref = lstm_reference
    lstm, (out, h_n, c_n) = reference_lstm(ref, dtype)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, ref["out"], rtol=tol, atol=tol)
    np.testing.assert_allclose(h_n, ref["h_n"][0], rtol=tol, atol=tol)
    np.testing.assert_allclose(c_n, ref["c_n"][0], rtol=tol, atol=tol)

    grads = lstm.backward(ref["g_out"], ref["g_h_n"][0], ref["g_c_n"][0])
    assert set(grads) == {"x", "h0", "c0", *PARAM_NAMES}
    for name in PARAM_NAMES:
        want = ref[f"grad.param.{name}_l0"]
        assert grads[name].shape == want.shape and grads[name].dtype == dtype
        np.testing.assert_allclose(grads[name], want, rtol=tol, atol=tol, err_msg=name)
    np.testing.assert_allclose(grads["x"], ref["grad.x"], rtol=tol, atol=tol)
    np.testing.assert_allclose(grads["h0"], ref["grad.h0"][0], rtol=tol, atol=tol)
    np.testing.assert_allclose(grads["c0"], ref["grad.c0"][0], rtol=tol, atol=tol)


def test_backward_is_repeatable_and_input_grads_optional(lstm_reference):
    ref = lstm_reference
    lstm, _ = reference_lstm(ref, np.float64)
    full = lstm.backward(ref["g_out"], ref["g_h_n"][0], ref["g_c_n"][0])
    again = lstm.backward(ref["g_out"], ref["g_h_n"][0], ref["g_c_n"][0], input_grads=False)
    assert set(again) == set(PARAM_NAMES)
    for name in PARAM_NAMES:
        np.testing.assert_array_equal(again[name], full[name])


def loss_of(lstm, x, h0, c0, g_out):
    out, h_n, c_n = lstm.forward(x, h0, c0)
    return float(np.sum(out * g_out) + np.sum(h_n) - 2 * np.sum(c_n))


def test_gradients_match_finite_differences():
    # Independent of the shared data: saturating weights (scale 2) exercise
    # the exp-based activations far from zero too.
    rng = np.random.default_rng(1)
    T, B, I, H = 6, 3, 4, 5
    lstm = NumpyLSTM(I, H, rng=rng)
    lstm.load_state_dict({name: 2 * value for name, value in lstm.state_dict().items()})
    x, g_out = rng.standard_normal((T, B, I)), rng.standard_normal((T, B, H))
    h0, c0 = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    lstm.forward(x, h0, c0)
    grads = lstm.backward(g_out, np.ones((B, H)), np.full((B, H), -2.0))

    inputs = {"x": x, "h0": h0, "c0": c0, **lstm.state_dict()}
    eps = 1e-6
    for name, value in inputs.items():
        numeric = np.empty_like(value)
        for index in np.ndindex(value.shape):
            saved = value[index]
            value[index] = saved + eps
            up = loss_of(lstm, x, h0, c0, g_out)
            value[index] = saved - eps
            down = loss_of(lstm, x, h0, c0, g_out)
            value[index] = saved
            numeric[index] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-6, atol=1e-7, err_msg=name)


def test_large_preactivations_do_not_warn_or_overflow():
    lstm = NumpyLSTM(2, 3, dtype=np.float32)
    lstm.load_state_dict({name: 1e4 * value for name, value in lstm.state_dict().items()})
    x = np.random.default_rng(2).standard_normal((4, 2, 2))
    with np.errstate(all="raise"):
        out, _, c_n = lstm.forward(x)
    assert np.all(np.isfinite(out)) and np.all(np.abs(out) <= 1)
    assert np.all(np.isfinite(c_n))


def library_step(library, data):
    """The library's benchmark step; only the optional comparison libraries may be missing."""
    try:
        return LIBRARIES[library](data)
    except Unavailable as err:
        if library in ("minigrad", "numpy-lstm"):  # ours: a failure, never a skip
            raise
        pytest.skip(str(err))


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
@pytest.mark.parametrize("library", [name for name in LIBRARIES if name != "numpy-lstm"])
def test_benchmark_lstm_steps_agree(library, dtype, tol):
    # Every library's benchmarked LSTM step computes the same gradients as the
    # NumPy LSTM; run twice so that gradients must not accumulate.
    data = make_data("lstm", B=3, T=5, I=4, H=6, dtype=dtype)
    step = library_step(library, data)
    step()
    grads = step()
    reference = LIBRARIES["numpy-lstm"](data)()
    for name in PARAM_NAMES:
        assert np.asarray(grads[name]).dtype == dtype, name
    assert check_grads(grads, reference) < tol


@pytest.mark.parametrize("library", ["minigrad", "autograd", "mygrad"])
def test_benchmark_gru_steps_agree_with_torch(library):
    data = make_data("gru", B=3, T=5, I=4, H=6, dtype=np.float64)
    reference = library_step("torch", data)()
    step = library_step(library, data)
    step()
    assert check_grads(step(), reference) < 1e-10


def test_minigrad_lstm_matches_numpy_lstm(lstm_reference):
    # The full reference case (initial states, cotangents of the final
    # states, input gradients) through minigrad_rnn.LSTM and the NumPy LSTM.
    ref = lstm_reference
    numpy_lstm, (out, h_n, c_n) = reference_lstm(ref, np.float64)
    want = numpy_lstm.backward(ref["g_out"], ref["g_h_n"][0], ref["g_c_n"][0])

    lstm = layers.LSTM(ref["x"].shape[2], ref["h0"].shape[2], dtype=np.float64, rng=np.random.default_rng(0))
    lstm.load_state_dict({f"{name}_l0": ref[f"param.{name}_l0"] for name in PARAM_NAMES})
    x, h0, c0 = (mg.Tensor(ref[key], requires_grad=True) for key in ("x", "h0", "c0"))
    got_out, (got_h_n, got_c_n) = lstm(x, (h0, c0))
    loss = (got_out * ref["g_out"]).sum() + (got_h_n * ref["g_h_n"]).sum() + (got_c_n * ref["g_c_n"]).sum()
    loss.backward()

    np.testing.assert_allclose(np.asarray(got_out), out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(got_h_n)[0], h_n, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(got_c_n)[0], c_n, rtol=1e-10, atol=1e-12)
    params = dict(lstm.named_parameters())
    for name in PARAM_NAMES:
        got = np.asarray(params[f"{name}_l0"].grad)
        np.testing.assert_allclose(got, want[name], rtol=1e-10, atol=1e-12, err_msg=name)
    for name, tensor in (("x", x), ("h0", h0), ("c0", c0)):
        got = np.asarray(tensor.grad)
        np.testing.assert_allclose(got.reshape(want[name].shape), want[name], rtol=1e-10, atol=1e-12, err_msg=name)
