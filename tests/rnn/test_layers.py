"""RNN/LSTM/GRU layers and the sequence driver: PyTorch's names, layouts, padded batches, errors,
dropout, learnable initial state, per-step states, truncated BPTT and long sequences."""

import tracemalloc

import numpy as np
import pytest

import minigrad as mg
from minigrad.nn import Parameter
from minigrad_rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, Recurrent, RecurrentCell, RNNCell, detach_state, run_cell
from minigrad_rnn.utils import evaluating

F64 = {"dtype": np.float64}


def rng(seed=0):
    return np.random.default_rng(seed)


def randn(*shape, seed=1):
    return rng(seed).standard_normal(shape)


def pytorch_names(num_layers, bidirectional, bias=True, proj=False):
    """The parameter names torch.nn.RNN/LSTM/GRU register, in their order."""
    names = []
    for layer in range(num_layers):
        for suffix in ["", "_reverse"] if bidirectional else [""]:
            kinds = ["weight_ih", "weight_hh"] + ["bias_ih", "bias_hh"] * bias + ["weight_hr"] * proj
            names += [f"{kind}_l{layer}{suffix}" for kind in kinds]
    return names


# --------------------------------------------------------------------------- construction
@pytest.mark.parametrize("cls, gates", [(RNN, 1), (LSTM, 4), (GRU, 3)])
@pytest.mark.parametrize("num_layers, bidirectional, bias", [(1, False, True), (2, True, True), (3, False, False)])
def test_parameter_names_shapes_and_init_as_pytorch(cls, gates, num_layers, bidirectional, bias):
    layer = cls(5, 4, num_layers, bias=bias, bidirectional=bidirectional, rng=rng())
    params = dict(layer.named_parameters())
    assert list(params) == pytorch_names(num_layers, bidirectional, bias)
    assert list(layer.state_dict()) == list(params)
    D = 2 if bidirectional else 1
    for name, p in params.items():
        inputs = 5 if "_l0" in name else D * 4
        expected = {"weight_ih": (gates * 4, inputs), "weight_hh": (gates * 4, 4)}.get(name[:9], (gates * 4,))
        assert p.shape == expected, name
        assert p.dtype == np.float32
    values = np.concatenate([p.data.ravel() for p in params.values()])
    assert np.abs(values).max() <= 0.5 and np.abs(values).max() > 0.45  # U(-1/sqrt(4), 1/sqrt(4))
    assert getattr(layer, "weight_hh_l0") is params["weight_hh_l0"]  # direct attributes


def test_init_is_reproducible_from_the_generator():
    a, b, c = (LSTM(3, 4, 2, rng=rng(seed)) for seed in (7, 7, 8))
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        np.testing.assert_array_equal(pa.data, pb.data)
        assert not np.array_equal(pa.data, pc.data), name


def test_lstm_proj_size_names_and_shapes():
    lstm = LSTM(5, 6, 2, bidirectional=True, proj_size=3, rng=rng())
    params = dict(lstm.named_parameters())
    assert list(params) == pytorch_names(2, True, proj=True)
    assert params["weight_hr_l1_reverse"].shape == (3, 6)
    assert params["weight_hh_l0"].shape == (24, 3)
    assert params["weight_ih_l1"].shape == (24, 6)  # both directions' projected h
    out, (h_n, c_n) = lstm(mg.Tensor(randn(7, 2, 5).astype(np.float32)))
    assert (out.shape, h_n.shape, c_n.shape) == ((7, 2, 6), (4, 2, 3), (4, 2, 6))


def test_repr_is_pytorchs():
    assert repr(LSTM(4, 6, 2, batch_first=True, bidirectional=True, rng=rng())) == \
        "LSTM(4, 6, num_layers=2, batch_first=True, bidirectional=True)"
    assert repr(RNN(4, 6, nonlinearity="relu", bias=False, rng=rng())) == "RNN(4, 6, nonlinearity='relu', bias=False)"


def test_assigning_or_swapping_a_parameter_reaches_the_cell():
    gru = GRU(3, 4, **F64, rng=rng())
    x = mg.Tensor(randn(5, 2, 3))
    before = gru(x)[0].data
    gru.weight_ih_l0 = Parameter(np.zeros((12, 3)))
    assert gru.cells[0].weight_ih is gru.weight_ih_l0
    assert sorted(n for n, _ in gru.named_parameters()) == sorted(pytorch_names(1, False))  # no stale duplicate
    after = gru(x)[0].data
    assert not np.allclose(before, after)
    swapped = mg.nn.utils.functional_call(gru, {"weight_ih_l0": mg.Tensor(randn(12, 3, seed=3))}, (x,))[0]
    assert not np.allclose(swapped.data, after)
    np.testing.assert_array_equal(gru(x)[0].data, after)  # the module's own parameter again


# --------------------------------------------------------------------------- layouts
@pytest.mark.parametrize("cls", [RNN, LSTM, GRU])
def test_unbatched_and_batch_first_match_time_major(cls):
    layer = cls(3, 4, 2, bidirectional=True, **F64, rng=rng())
    bf = cls(3, 4, 2, bidirectional=True, batch_first=True, **F64, rng=rng(5))
    bf.load_state_dict(layer.state_dict())
    x = randn(6, 2, 3)
    h0 = randn(4, 2, 4, seed=2)
    hx = (h0, randn(4, 2, 4, seed=3)) if cls is LSTM else h0
    out, h_n = layer(x, hx)
    out_bf, h_n_bf = bf(np.swapaxes(x, 0, 1), hx)
    np.testing.assert_allclose(np.swapaxes(out_bf.data, 0, 1), out.data, atol=1e-12)
    first = (lambda s: s[0]) if cls is LSTM else (lambda s: s)
    np.testing.assert_allclose(first(h_n_bf).data, first(h_n).data, atol=1e-12)

    hx1 = tuple(h[:, 1] for h in hx) if cls is LSTM else hx[:, 1]
    out1, h_n1 = layer(x[:, 1], hx1)  # unbatched (T, I), state (L*D, H)
    assert out1.shape == (6, 8)
    np.testing.assert_allclose(out1.data, out.data[:, 1], atol=1e-12)
    np.testing.assert_allclose(first(h_n1).data, first(h_n).data[:, 1], atol=1e-12)


def test_no_initial_state_means_zeros():
    lstm = LSTM(3, 4, 2, **F64, rng=rng())
    x = randn(5, 2, 3)
    zeros = np.zeros((2, 2, 4))
    out, (h_n, c_n) = lstm(x)
    out0, (h_n0, c_n0) = lstm(x, (zeros, zeros))
    np.testing.assert_array_equal(out.data, out0.data)
    np.testing.assert_array_equal(c_n.data, c_n0.data)


def test_float32_stays_float32_through_backward():
    gru = GRU(3, 4, 2, rng=rng())
    x = mg.Tensor(randn(5, 2, 3).astype(np.float32), requires_grad=True)
    out, h_n = gru(x)
    (out.sum() + h_n.sum()).backward()
    assert out.dtype == h_n.dtype == x.grad.dtype == gru.weight_hh_l1.grad.dtype == np.float32


# --------------------------------------------------------------------------- padded batches
@pytest.mark.parametrize("cls", [RNN, LSTM, GRU])
def test_lengths_run_each_sequence_as_if_alone(cls):
    layer = cls(3, 4, 2, bidirectional=True, **F64, rng=rng())
    lengths = [5, 2, 4]
    x = randn(5, 3, 3)
    x[1, 1] = 1e3  # garbage in the padding must not matter
    out, h_n = layer(x, lengths=lengths)
    for b, n in enumerate(lengths):
        alone, alone_h = layer(x[:n, b])
        np.testing.assert_allclose(out.data[:n, b], alone.data, atol=1e-12)
        np.testing.assert_array_equal(out.data[n:, b], 0)
        for got, want in zip(h_n if cls is LSTM else [h_n], alone_h if cls is LSTM else [alone_h]):
            np.testing.assert_allclose(got.data[:, b], want.data, atol=1e-12)


def test_padding_receives_no_gradient():
    lstm = LSTM(3, 4, bidirectional=True, **F64, rng=rng())
    x = mg.Tensor(randn(5, 2, 3), requires_grad=True)
    out, (h_n, c_n) = lstm(x, lengths=np.array([3, 5]))
    ((out * randn(5, 2, 8, seed=4)).sum() + h_n.sum() + c_n.sum()).backward()
    np.testing.assert_array_equal(x.grad.data[3:, 0], 0)
    assert np.all(x.grad.data[:3, 0] != 0) and np.all(x.grad.data[:, 1] != 0)


class CountingCell(RecurrentCell):
    """A custom cell with a dict state: h (B, H) and the number of steps taken (B, 1)."""

    def __init__(self, input_size, hidden_size):
        super().__init__(input_size, hidden_size, dtype=np.float64)
        self.weight = Parameter(rng(9).standard_normal((hidden_size, input_size)))

    def initial_state(self, batch_size):
        return {"h": mg.zeros(batch_size, self.hidden_size), "steps": mg.zeros(batch_size, 1)}

    def step(self, x_t, state):
        h = mg.tanh(x_t @ self.weight.T + state["h"])
        return h, {"h": h, "steps": state["steps"] + 1}


def test_a_custom_cell_with_nested_state_runs_through_the_same_driver():
    layer = Recurrent([CountingCell(3, 2), CountingCell(3, 2), CountingCell(4, 2), CountingCell(4, 2)],
                      bidirectional=True)
    names = [n for n, _ in layer.named_parameters()]
    assert names == ["weight_l0", "weight_l0_reverse", "weight_l1", "weight_l1_reverse"]
    x = mg.Tensor(randn(6, 3, 3), requires_grad=True)
    out, h_n = layer(x, lengths=[6, 1, 4])
    assert out.shape == (6, 3, 4) and h_n["h"].shape == (4, 3, 2)
    # each direction of each layer took exactly `length` steps for each sequence
    np.testing.assert_array_equal(h_n["steps"].data[..., 0], np.tile([6, 1, 4], (4, 1)))
    out.sum().backward()
    assert layer.weight_l1_reverse.grad is not None
    with pytest.raises(ValueError, match=r"Expected hidden\['steps'\] size \(4, 3, 1\), got \(4, 3, 2\)"):
        layer(x, {"h": np.zeros((4, 3, 2)), "steps": np.zeros((4, 3, 2))})


def test_run_cell_is_one_direction_of_a_layer():
    gru = GRU(3, 4, bidirectional=True, **F64, rng=rng())
    x, lengths = randn(5, 2, 3), [5, 3]
    out, h_n = gru(x, lengths=lengths)
    fwd, h_fwd = run_cell(gru.cells[0], mg.Tensor(x), lengths=lengths)
    bwd, h_bwd = run_cell(gru.cells[1], mg.Tensor(x), lengths=lengths, reverse=True)
    np.testing.assert_array_equal(out.data, np.concatenate([fwd.data, bwd.data], axis=-1))
    np.testing.assert_array_equal(h_n.data, np.stack([h_fwd.data, h_bwd.data]))


# --------------------------------------------------------------------------- errors
LSTM_CASES = [
    (lambda m: m(np.zeros((5, 3, 5))), r"LSTM: input.size\(-1\) must be equal to input_size. Expected 4, got 5"),
    (lambda m: m(np.zeros((5, 3, 4)), (np.zeros((1, 3, 6)), np.zeros((2, 3, 6)))),
     r"LSTM: Expected hidden\[0\] size \(2, 3, 6\), got \(1, 3, 6\)"),
    (lambda m: m(np.zeros((5, 3, 4)), (np.zeros((2, 3, 6)), np.zeros((2, 3, 7)))),
     r"LSTM: Expected hidden\[1\] size \(2, 3, 6\), got \(2, 3, 7\)"),
    (lambda m: m(np.zeros((5, 3, 4)), np.zeros((2, 3, 6))), r"LSTM: Expected hidden to be a tuple of 2"),
    (lambda m: m(np.zeros((5, 3, 4)), lengths=[6, 1, 1]), r"lengths must not exceed the sequence length T = 5"),
    (lambda m: m(np.zeros((5, 3, 4)), lengths=[0, 1, 1]), r"every length must be positive.*\[0, 1, 1\]"),
    (lambda m: m(np.zeros((5, 3, 4)), lengths=[1.5, 1, 1]), r"lengths must be a 1-D sequence of integers"),
    (lambda m: m(np.zeros((5, 3, 4)), lengths=[2, 2]), r"lengths has 2 entries but the batch has 3 sequences"),
    (lambda m: m(np.zeros((5, 4)), (np.zeros((2, 3, 6)),) * 2),
     r"For unbatched 2-D input, hidden\[0\] should also be 2-D of size \(2, 6\), got a 3-D tensor of size \(2, 3, 6\)"),
    (lambda m: m(np.zeros((5, 3, 4)), (np.zeros((2, 6)),) * 2),
     r"For batched 3-D input, hidden\[0\] should also be 3-D of size \(2, 3, 6\), got a 2-D tensor of size \(2, 6\)"),
    (lambda m: m(np.zeros((5, 3, 4), np.float32)), r"input dtype \(float32\) does not match weight dtype \(float64\)"),
    (lambda m: m(np.zeros((5, 3, 4)), (np.zeros((2, 3, 6), np.float32),) * 2), r"hidden\[0\] has dtype float32"),
    (lambda m: m(np.zeros((1, 5, 3, 4))), "LSTM: Expected input to be 2D or 3D, got 4D instead"),
]


@pytest.mark.parametrize("call, message", LSTM_CASES)
def test_bad_input_is_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call(LSTM(4, 6, 2, **F64, rng=rng()))


def test_batch_first_confusion_is_pointed_out():
    gru = GRU(4, 6, batch_first=True, **F64, rng=rng())
    x = np.zeros((5, 3, 4))  # meant as (T, B, I)
    with pytest.raises(ValueError, match=r"Expected hidden size \(1, 5, 6\), got \(1, 3, 6\) "
                                         r"\(the input \(5, 3, 4\) is read as \(B, T, I\) since batch_first=True\)"):
        gru(x, np.zeros((1, 3, 6)))
    with pytest.raises(ValueError, match=r"lengths has 3 entries but the batch has 5 sequences .*batch_first=True"):
        gru(x, lengths=[5, 5, 5])


@pytest.mark.parametrize("make, message", [
    (lambda: RNN(4, 5, nonlinearity="sigmoid"), "Unknown nonlinearity 'sigmoid'. Select from 'tanh' or 'relu'."),
    (lambda: LSTM(4, 5, proj_size=5), "proj_size has to be smaller than hidden_size"),
    (lambda: LSTM(4, 5, proj_size=-1), "proj_size should be a positive integer or zero"),
    (lambda: GRU(4, 5, num_layers=0), "num_layers must be greater than zero"),
    (lambda: GRU(4, 0), "hidden_size must be greater than zero"),
    (lambda: GRU(4, 5, 2, dropout=1.5), r"dropout should be a number in range \[0, 1\]"),
    (lambda: GRU(4, 5, recurrent_dropout=-0.1), r"recurrent_dropout should be a number in range \[0, 1\]"),
    (lambda: Recurrent([GRUCell(4, 5), GRUCell(4, 5)]),
     "the cell of layer 1 takes 4 input features, but the layer below gives 5"),
    (lambda: Recurrent([GRUCell(4, 5)], bidirectional=True), "2 per layer"),
])
def test_bad_configuration_is_a_clear_value_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_cells_check_their_input_and_state():
    cell = LSTMCell(4, 5, **F64)
    with pytest.raises(ValueError, match=r"LSTMCell: Expected hx\[0\] size \(3, 5\), got \(2, 5\)"):
        cell(np.zeros((3, 4)), (np.zeros((2, 5)), np.zeros((3, 5))))
    with pytest.raises(ValueError, match=r"LSTMCell: For unbatched 1-D input, hx\[0\] should also be 1-D"):
        cell(np.zeros(4), (np.zeros((3, 5)), np.zeros((3, 5))))
    with pytest.raises(ValueError, match="RNNCell: input.size.-1. must be equal to input_size. Expected 4, got 5"):
        RNNCell(4, 5, **F64)(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="GRUCell: Expected input to be 1D or 2D, got 3D instead"):
        GRUCell(4, 5, **F64)(np.zeros((1, 3, 4)))


def test_cells_accept_unbatched_input_and_no_state():
    cell = LSTMCell(3, 4, **F64, rng=rng())
    x = randn(2, 3)
    h, c = cell(x)
    h1, c1 = cell(x[1])
    assert h1.shape == c1.shape == (4,)
    np.testing.assert_allclose(h1.data, h.data[1], atol=1e-14)
    np.testing.assert_allclose(cell(x[1], (h1, c1))[1].data, cell(x, (h, c))[1].data[1], atol=1e-14)


# --------------------------------------------------------------------------- dropout
def test_dropout_only_between_layers_and_only_in_training():
    gru = GRU(3, 4, 2, dropout=1.0, **F64, rng=rng())
    x = randn(5, 2, 3)
    out, h_n = gru(x)  # layer 1 sees only zeros
    zeros_run, _ = run_cell(gru.cells[1], mg.zeros(5, 2, 4))
    np.testing.assert_allclose(out.data, zeros_run.data, atol=1e-14)
    first_layer, _ = run_cell(gru.cells[0], mg.Tensor(x))
    np.testing.assert_allclose(h_n.data[0], first_layer.data[-1], atol=1e-14)  # layer 0 itself undropped

    gru.eval()
    plain = GRU(3, 4, 2, **F64, rng=rng(3))
    plain.load_state_dict(gru.state_dict())
    np.testing.assert_array_equal(gru(x)[0].data, plain(x)[0].data)


def test_dropout_masks_come_from_the_layers_generator():
    a, b = (LSTM(3, 4, 2, dropout=0.5, **F64, rng=rng(4)) for _ in range(2))
    x = randn(5, 2, 3)
    out_a, out_b = a(x)[0].data, b(x)[0].data
    np.testing.assert_array_equal(out_a, out_b)
    assert not np.array_equal(a(x)[0].data, out_a)  # a fresh mask on the next call


def identity_rnn(**kwargs):
    """A 3-unit relu RNN whose state is easy to follow: h_t = relu(x_t + h_{t-1} + 1)."""
    rnn = RNN(3, 3, nonlinearity="relu", **F64, rng=rng(), **kwargs)
    rnn.load_state_dict({"weight_ih_l0": np.eye(3), "weight_hh_l0": np.eye(3),
                         "bias_ih_l0": np.ones(3), "bias_hh_l0": np.zeros(3)})
    return rnn


def test_variational_input_dropout_uses_one_mask_per_sequence():
    rnn = identity_rnn(input_dropout=0.5)
    rnn.weight_hh_l0.data = np.zeros((3, 3))
    out, _ = rnn(np.ones((6, 8, 3)))  # h_t = relu(x_t * mask + 1): the mask, shifted by one
    mask = out.data[0] - 1
    assert set(np.unique(mask)) == {0.0, 2.0}  # dropped, or kept and scaled by 1 / (1 - p)
    np.testing.assert_array_equal(out.data, np.broadcast_to(mask + 1, out.shape))  # same at every step
    assert len({tuple(m) for m in mask}) > 1  # but drawn per sequence


def test_variational_recurrent_dropout_uses_one_mask_per_sequence():
    rnn = identity_rnn(recurrent_dropout=0.5)
    rnn.weight_ih_l0.data = np.zeros((3, 3))
    out, _ = rnn(np.zeros((5, 8, 3)))  # h_t = 1 + m * h_{t-1}: 1 forever if m = 0, else 1, 3, 7, 15, 31
    dropped = out.data[1] == 1
    steps = np.arange(1, 6)[:, None, None]
    np.testing.assert_array_equal(out.data, np.where(dropped, 1.0, 2.0 ** steps - 1))
    assert dropped.any() and not dropped.all()
    rnn.eval()
    np.testing.assert_array_equal(rnn(np.zeros((5, 8, 3)))[0].data, np.broadcast_to(steps, (5, 8, 3)))


def test_gru_recurrent_dropout_leaves_the_carried_state_alone():
    # with z = 1 (huge b_hz) a GRU copies h forward; dropout on the recurrent matmul must not touch that copy
    gru = GRU(2, 3, recurrent_dropout=0.9, **F64, rng=rng())
    gru.bias_hh_l0.data = np.r_[np.zeros(3), np.full(3, 50.0), np.zeros(3)]
    h0 = randn(1, 4, 3)
    _, h_n = gru(randn(6, 4, 2), h0)
    np.testing.assert_allclose(h_n.data, h0, atol=1e-12)


# --------------------------------------------------------------------------- beyond PyTorch
def test_learnable_initial_state():
    lstm = LSTM(3, 4, 2, bidirectional=True, learn_initial_state=True, **F64, rng=rng())
    names = [n for n, _ in lstm.named_parameters()]
    assert names == pytorch_names(2, True) + ["initial_state_0", "initial_state_1"]
    assert lstm.initial_state_0.shape == lstm.initial_state_1.shape == (4, 4)
    x = randn(5, 2, 3)
    h0, c0 = randn(4, 4, seed=5), randn(4, 4, seed=6)
    lstm.initial_state_0.data, lstm.initial_state_1.data = h0, c0
    out, (h_n, c_n) = lstm(x)
    given = lstm(x, (np.repeat(h0[:, None], 2, 1), np.repeat(c0[:, None], 2, 1)))[0]
    np.testing.assert_allclose(out.data, given.data, atol=1e-14)  # the learned state, broadcast over the batch
    (out.sum() + c_n.sum()).backward()
    assert np.abs(lstm.initial_state_1.grad.data).min() > 0


def test_return_states_give_dL_dh_t():
    rnn = RNN(2, 3, **F64, rng=rng())
    T = 6
    x = randn(T, 2, 2)
    out, h_n, states = rnn(x, return_states=True)
    (hs,) = states
    assert len(hs) == T
    for h in hs:
        h.retain_grad()
    g_out, g_h_n = randn(T, 2, 3, seed=7), randn(1, 2, 3, seed=8)
    ((out * g_out).sum() + (h_n * g_h_n).sum()).backward()

    # by hand: dL/dh_t = g_out[t] + (dL/dh_{t+1} * (1 - h_{t+1}^2)) @ W_hh
    W = rnn.weight_hh_l0.data
    dh = g_out[T - 1] + g_h_n[0]
    for t in range(T - 1, -1, -1):
        np.testing.assert_allclose(hs[t].data, out.data[t])
        np.testing.assert_allclose(hs[t].grad.data, dh, atol=1e-12)
        dh = g_out[t - 1] + (dh * (1 - hs[t].data ** 2)) @ W


def test_return_states_per_cell_and_position():
    lstm = LSTM(2, 3, 2, bidirectional=True, **F64, rng=rng())
    out, (h_n, c_n), states = lstm(randn(4, 2, 2), return_states=True)
    assert len(states) == 4 and all(len(s) == 4 for s in states)
    np.testing.assert_array_equal(states[3][0][0].data, h_n.data[3])  # layer 1 reverse ends at t = 0
    np.testing.assert_array_equal(states[2][3][1].data, c_n.data[2])
    np.testing.assert_array_equal(states[3][2][0].data, out.data[2, :, 3:])


def test_detach_state_for_truncated_bptt():
    state = {"a": (mg.ones(2, requires_grad=True) * 2, [mg.ones(3, requires_grad=True) * 3]), "b": None}
    cut = detach_state(state)
    assert not cut["a"][0].requires_grad and not cut["a"][1][0].requires_grad and cut["b"] is None
    np.testing.assert_array_equal(cut["a"][1][0].data, 3)

    lstm = LSTM(2, 3, **F64, rng=rng())
    first = mg.Tensor(randn(4, 1, 2), requires_grad=True)
    second = mg.Tensor(randn(4, 1, 2, seed=2), requires_grad=True)
    _, hx = lstm(first)
    out, _ = lstm(second, detach_state(hx))
    out.sum().backward()
    assert first.grad is None and second.grad is not None
    with pytest.raises(TypeError):
        detach_state("h")


# --------------------------------------------------------------------------- long sequences
def test_a_5000_step_sequence_backpropagates():
    rnn = RNN(2, 4, **F64, rng=rng())
    x = mg.Tensor(randn(5000, 2, 2) * 0.1, requires_grad=True)
    out, h_n = rnn(x)
    (out.sum() + h_n.sum()).backward()  # no RecursionError
    assert x.grad.shape == x.shape and np.all(np.isfinite(x.grad.data))
    assert np.all(x.grad.data[:100] != 0)


def test_memory_grows_linearly_with_sequence_length():
    rnn = RNN(2, 64, **F64, rng=rng())

    def peak(T):
        x = mg.Tensor(randn(T, 2, 2), requires_grad=True)
        tracemalloc.start()
        try:
            out, _ = rnn(x)
            out.sum().backward()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    ratio = peak(200) / peak(50)
    assert ratio < 6, ratio  # 4 if linear, 16 if quadratic


def test_evaluating_switches_off_dropout_and_the_tape_and_restores_the_mode():
    model = LSTM(3, 4, num_layers=2, dropout=0.5, rng=np.random.default_rng(0))
    x = mg.Tensor(np.ones((2, 1, 3), np.float32))
    with evaluating(model):
        assert not model.training and not any(m.training for m in model.modules())
        out, _ = model(x)
        assert not out.requires_grad
    assert model.training
    assert model(x)[0].requires_grad  # recording again after the block
    with pytest.raises(ZeroDivisionError), evaluating(model):
        1 / 0
    assert model.training  # restored after an error too

    def stream():
        with evaluating(model):
            yield from range(3)

    steps = stream()
    next(steps)
    assert not model.training
    steps.close()  # a consumer that stops early, as `minigrad-rnn sample` piped into head
    assert model.training
    model.eval()
    with evaluating(model):
        pass
    assert not model.training  # eval mode before: eval mode after
