"""minigrad_rnn.testing: check_cell passes on every built-in and example cell, and catches a cell
that reads its padding."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minigrad as mg
from minigrad_rnn.testing import check_cell, layer_configs, nested_states, padded_batches
from minigrad_rnn import LSTM, GRUCell, LSTMCell, RNNCell, run_cell
from minigrad_rnn.cells import RecurrentCell
from minigrad_rnn.utils import tree_leaves, tree_map
from minigrad_rnn.examples import IndRNNCell, LayerNormLSTMCell, PeepholeLSTMCell

MAKERS = {
    "rnn_tanh": lambda rng: RNNCell(2, 3, dtype=np.float64, rng=rng),
    "rnn_relu": lambda rng: RNNCell(2, 3, nonlinearity="relu", dtype=np.float64, rng=rng),
    "lstm": lambda rng: LSTMCell(2, 3, dtype=np.float64, rng=rng),
    "lstm_proj": lambda rng: LSTMCell(2, 3, proj_size=2, dtype=np.float64, rng=rng),
    "gru": lambda rng: GRUCell(2, 3, dtype=np.float64, rng=rng),
    "peephole": lambda rng: PeepholeLSTMCell(2, 3, dtype=np.float64, rng=rng),
    "layernorm": lambda rng: LayerNormLSTMCell(2, 3, dtype=np.float64, rng=rng),
    "indrnn": lambda rng: IndRNNCell(2, 3, dtype=np.float64, rng=rng),
}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_every_built_in_and_example_cell_passes_the_kit(name):
    # The built-ins' gradients are checked element by element in tests/rnn/test_gradcheck.py; here one direction is enough.
    assert check_cell(MAKERS[name], fast_mode=name not in ("peephole", "layernorm", "indrnn"))


class LeakyCell(RNNCell):
    """Adds the batch mean of its input: each sequence sees the padding of the others."""

    def step(self, x_t, h):
        return super().step(x_t + mg.mean(x_t, axis=0, keepdims=True), h)


def test_the_kit_catches_a_cell_that_reads_other_sequences():
    with pytest.raises(AssertionError, match="check_cell: output of sequence 0 .* differs from the sequence run alone"):
        check_cell(lambda rng: LeakyCell(2, 3, dtype=np.float64, rng=rng))


@settings(max_examples=20, deadline=None)
@given(batch=padded_batches(input_size=2))
def test_padded_batches_strategy_gives_valid_batches(batch):
    x, lengths, batch_first = batch
    T = x.shape[1] if batch_first else x.shape[0]
    assert max(lengths) == T and min(lengths) >= 1 and len(lengths) == x.shape[0 if batch_first else 1]
    cell = RNNCell(2, 3, dtype=np.float64, rng=np.random.default_rng(0))
    out, _ = run_cell(cell, x.transpose(1, 0, 2) if batch_first else x, lengths=lengths)
    assert out.shape == (T, len(lengths), 3)


def test_the_torch_comparison_catches_a_built_in_cell_that_computes_otherwise():
    pytest.importorskip("torch")
    from minigrad_rnn.testing import _check_against_torch

    cell = GRUCell(2, 3, dtype=np.float64, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((4, 2, 2))
    _check_against_torch(cell, x, 1e-10)  # the real cell matches
    step = cell.step
    cell.step = lambda x_t, h: tuple(t * 1.01 for t in step(x_t, h))  # off by 1%: must be caught
    with pytest.raises(AssertionError, match="outputs differ from torch.nn.GRUCell's"):
        _check_against_torch(cell, x, 1e-10)


class TreeCell(RecurrentCell):
    """Any nested state: every leaf is updated as tanh(leaf / 2 + x_t @ w); the output sums the leaves."""

    def __init__(self, state):
        super().__init__(2, 3, dtype=np.float64)
        self.state = state
        self.w = mg.nn.Parameter(np.random.default_rng(0).standard_normal((2, 3)))

    def initial_state(self, batch_size):
        return self.state

    def step(self, x_t, state):
        z = x_t @ self.w
        new = tree_map(lambda s: mg.tanh(s * 0.5 + z), state)
        return sum(tree_leaves(new)), new


@settings(max_examples=25, deadline=None)
@given(state=nested_states(3, 3), reverse=st.booleans())
def test_nested_states_run_compiled_as_eager_with_lengths(state, reverse):
    x_data = np.random.default_rng(1).standard_normal((4, 3, 2))
    results = []
    for compile in (True, False):  # noqa: A001
        cell = TreeCell(state)
        x = mg.Tensor(x_data, requires_grad=True)
        out, final = run_cell(cell, x, lengths=[4, 1, 2], reverse=reverse, compile=compile)
        assert type(final) is type(state) and len(tree_leaves(final)) == len(tree_leaves(state))
        ((out * out).sum() + sum((leaf * leaf).sum() for leaf in tree_leaves(final))).backward()
        results.append([out.data, x.grad.data, cell.w.grad.data] + [leaf.data for leaf in tree_leaves(final)])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    # sequence 1 has one step: its final state is that one step from the initial state
    z = x_data[0, 1] @ TreeCell(state).w.data  # reversed too: its own last element is its first
    for got, start in zip(results[1][3:], tree_leaves(state)):
        np.testing.assert_allclose(got[1], np.tanh(start.data[1] * 0.5 + z), rtol=1e-12)


@settings(max_examples=15, deadline=None)
@given(config=layer_configs(), batch=padded_batches(input_size=2, max_steps=4, max_batch=3, batch_first=False))
def test_layer_configs_give_layers_that_compile_as_eager(config, batch):
    x_data, lengths, _ = batch
    if config["batch_first"]:
        x_data = x_data.transpose(1, 0, 2).copy()
    results = []
    for compile in (True, False):  # noqa: A001
        lstm = LSTM(2, 3, dtype=np.float64, rng=np.random.default_rng(0), compile=compile, **config)
        out, (h, c) = lstm(mg.Tensor(x_data), lengths=lengths)
        ((out * out).sum() + h.sum()).backward()
        results.append([out.data, h.data, c.data] + [p.grad.data for p in lstm.parameters()])
    T, B = x_data.shape[:2][::-1] if config["batch_first"] else x_data.shape[:2]
    D = 2 if config["bidirectional"] else 1
    assert results[0][0].shape == ((B, T, D * 3) if config["batch_first"] else (T, B, D * 3))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
