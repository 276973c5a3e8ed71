"""Finite-difference checks of BPTT through the cells and the driver: with respect to the input,
the initial state and every parameter (through ``functional_call`` with PyTorch's names)."""

import numpy as np
import pytest

from minigrad import Tensor
from minigrad.nn.utils import functional_call
from minigrad.testing import gradcheck, gradgradcheck
from minigrad_rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from minigrad_rnn.utils import tree_leaves, tree_unflatten


def tensor(*shape, seed):
    return Tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True)


def random_state(cell, batch):
    """The cell's state nesting, filled with random leaves that require grad."""
    zeros = cell.initial_state(batch)
    return tree_unflatten(zeros, [tensor(*t.shape, seed=i) for i, t in enumerate(tree_leaves(zeros))])


def as_function(module, state, **kwargs):
    """(x, *state leaves, *parameters) -> every output leaf: the module as a function of all its inputs."""
    names = [name for name, _ in module.named_parameters()]
    n_state = len(tree_leaves(state))

    def fn(x, *rest):
        hx = tree_unflatten(state, rest[:n_state])
        params = dict(zip(names, rest[n_state:]))
        return tuple(tree_leaves(functional_call(module, params, (x, hx), kwargs)))

    return fn, list(module.parameters())


def f64():
    return {"dtype": np.float64, "rng": np.random.default_rng(0)}


CELLS = {
    "rnn_tanh": lambda: RNNCell(3, 2, **f64()),
    "rnn_relu_nobias": lambda: RNNCell(3, 2, bias=False, nonlinearity="relu", **f64()),
    "lstm": lambda: LSTMCell(3, 2, **f64()),
    "lstm_proj": lambda: LSTMCell(3, 3, proj_size=2, **f64()),
    "gru": lambda: GRUCell(3, 2, **f64()),
}


@pytest.mark.parametrize("kind", CELLS)
def test_cell_gradients(kind):
    cell = CELLS[kind]()
    state = random_state(cell, 2)
    fn, params = as_function(cell, state)
    assert gradcheck(fn, [tensor(2, 3, seed=9), *tree_leaves(state), *params])


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_cell_second_derivatives(kind):
    cell = CELLS[kind]()
    state = random_state(cell, 1)
    fn, params = as_function(cell, state)
    assert gradgradcheck(fn, [tensor(1, 3, seed=9), *tree_leaves(state), *params])


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU])
def test_two_layer_bidirectional_layer_with_lengths(cls):
    layer = cls(2, 2, 2, bidirectional=True, dtype=np.float64, rng=np.random.default_rng(0))
    h0 = tensor(4, 2, 2, seed=1)
    state = (h0, tensor(4, 2, 2, seed=2)) if cls is LSTM else h0
    fn, params = as_function(layer, state, lengths=[3, 2])
    # the cells are checked element by element above; the layer's wiring (directions, lengths, layers) shows in
    # any direction, so one random direction per input (fast mode) checks it
    assert gradcheck(fn, [tensor(3, 2, 2, seed=3), *tree_leaves(state), *params], fast_mode=True)
