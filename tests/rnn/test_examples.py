"""The custom-cell examples: equations by hand, gradient checks, and a tiny task they learn."""

import numpy as np
import pytest

import minigrad as mg
from minigrad.nn import Linear
from minigrad.nn.utils import functional_call
from minigrad.optim import Adam
from minigrad.testing import gradcheck
from minigrad_rnn import Recurrent
from minigrad_rnn.examples import IndRNNCell, LayerNormLSTMCell, PeepholeLSTMCell
from minigrad_rnn.utils import tree_leaves, tree_unflatten

EXAMPLES = [PeepholeLSTMCell, LayerNormLSTMCell, IndRNNCell]


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def layer_norm(z, gain, shift=0.0, eps=1e-5):
    return (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + eps) * gain + shift


def reference_step(cell, x, state):
    """The paper's equations in plain NumPy, for one step."""
    p = {name: param.data for name, param in cell.named_parameters()}
    H = cell.hidden_size
    if isinstance(cell, IndRNNCell):
        return np.maximum(x @ p["weight_ih"].T + p["bias"] + p["weight_hh"] * state, 0)
    h, c = state
    if isinstance(cell, PeepholeLSTMCell):
        z = x @ p["weight_ih"].T + h @ p["weight_hh"].T + p["bias"]
        i = sigmoid(z[:, :H] + p["weight_ci"] * c)
        f = sigmoid(z[:, H:2 * H] + p["weight_cf"] * c)
        c = f * c + i * np.tanh(z[:, 2 * H:3 * H])
        return sigmoid(z[:, 3 * H:] + p["weight_co"] * c) * np.tanh(c), c
    z = (layer_norm(x @ p["weight_ih"].T, p["ln_ih.weight"]) + layer_norm(h @ p["weight_hh"].T, p["ln_hh.weight"])
         + p["bias"])
    c = sigmoid(z[:, H:2 * H]) * c + sigmoid(z[:, :H]) * np.tanh(z[:, 2 * H:3 * H])
    return sigmoid(z[:, 3 * H:]) * np.tanh(layer_norm(c, p["ln_c.weight"], p["ln_c.bias"])), c


def random_state(cell, batch, seed):
    rng = np.random.default_rng(seed)
    zeros = cell.initial_state(batch)
    leaves = [mg.Tensor(rng.standard_normal(t.shape), requires_grad=True) for t in tree_leaves(zeros)]
    return tree_unflatten(zeros, leaves)


@pytest.mark.parametrize("cls", EXAMPLES)
def test_step_follows_the_papers_equations(cls):
    cell = cls(3, 4, dtype=np.float64, rng=np.random.default_rng(0))
    for param in cell.parameters():  # move the LayerNorm gains and shifts off their 1 / 0 start
        param.data = param.data + np.random.default_rng(1).uniform(-0.5, 0.5, param.shape)
    x = np.random.default_rng(2).standard_normal((5, 3))
    state = random_state(cell, 5, seed=3)
    got = tree_leaves(cell(x, state))
    want = reference_step(cell, x, tree_unflatten(state, [t.data for t in tree_leaves(state)]))
    for g, w in zip(got, want if isinstance(want, tuple) else [want]):
        np.testing.assert_allclose(g.data, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", EXAMPLES)
def test_gradients_through_a_bidirectional_padded_layer(cls):
    rng = np.random.default_rng(0)
    layer = Recurrent([cls(2, 2, dtype=np.float64, rng=rng) for _ in range(2)], bidirectional=True)
    names = [name for name, _ in layer.named_parameters()]
    state = random_state(layer.cells[0], 2, seed=1)
    n_state = len(tree_leaves(state))
    stacked = [mg.Tensor(np.stack([t.data, t.data[::-1]]), requires_grad=True) for t in tree_leaves(state)]

    def fn(x, *rest):
        hx = tree_unflatten(state, rest[:n_state])
        out, h_n = functional_call(layer, dict(zip(names, rest[n_state:])), (x, hx), {"lengths": [3, 2]})
        return (out, *tree_leaves(h_n))

    x = mg.Tensor(rng.standard_normal((3, 2, 2)), requires_grad=True)
    # the kit checks each cell element by element (test_recurrent_kit); one direction per input checks the layer
    assert gradcheck(fn, [x, *stacked, *layer.parameters()], fast_mode=True)


@pytest.mark.parametrize("cls", EXAMPLES)
def test_learns_to_remember_the_first_input(cls):
    rng = np.random.default_rng(0)
    rnn, readout = Recurrent([cls(1, 8, rng=rng)]), Linear(8, 1, rng=rng)
    opt = Adam(list(rnn.parameters()) + list(readout.parameters()), lr=0.03)
    x = rng.standard_normal((5, 32, 1)).astype(np.float32)
    target = x[0]

    def loss():
        _, h_n = rnn(x)
        h = tree_leaves(h_n)[0][0]  # layer 0's hidden state
        return mg.functional.mse_loss(readout(h), target)

    first = loss().item()
    for _ in range(60):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    assert loss().item() < 0.3 * first
