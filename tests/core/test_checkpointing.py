"""minigrad.checkpoint: gradients equal the plain run's, dropout masks match on recomputation,
second derivatives work, and the intermediate values are not kept."""
import numpy as np
import pytest

import minigrad as mg
from minigrad import functional as F
from minigrad_rnn import LSTM


class Block(mg.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = mg.nn.Linear(4, 4, dtype=np.float64, rng=np.random.default_rng(0))
        self.rng = np.random.default_rng(7)

    def forward(self, x):
        return F.dropout(mg.tanh(self.linear(x)), 0.5, True, self.rng) * x


def test_gradients_equal_the_plain_run_with_the_same_dropout_masks():
    x_data = np.random.default_rng(1).standard_normal((3, 4))
    results = []
    for use_checkpoint in (True, False):
        block = Block()
        x = mg.Tensor(x_data, requires_grad=True)
        out = mg.checkpoint(block, x) if use_checkpoint else block(x)
        (out * out).sum().backward()
        results.append([out.data, x.grad.data] + [p.grad.data for p in block.parameters()])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


def test_nested_outputs_and_second_derivatives():
    w = mg.Tensor(np.array([0.5, -1.5]), requires_grad=True)

    def f(x):
        return {"a": mg.tanh(x * w), "b": (x * x, mg.exp(x))}

    x = mg.Tensor(np.array([0.3, 0.8]), requires_grad=True)
    out = mg.checkpoint(f, x)
    loss = (out["a"] * out["b"][0]).sum() + out["b"][1].sum()
    (g,) = mg.grad(loss, x, create_graph=True)
    (gg,) = mg.grad(g.sum(), x)
    plain = f(x)
    (g_plain,) = mg.grad((plain["a"] * plain["b"][0]).sum() + plain["b"][1].sum(), x, create_graph=True)
    (gg_plain,) = mg.grad(g_plain.sum(), x)
    np.testing.assert_allclose(g.data, g_plain.data, rtol=1e-13)
    np.testing.assert_allclose(gg.data, gg_plain.data, rtol=1e-13)


def test_the_tape_keeps_one_entry_not_the_activations():
    lstm = LSTM(3, 4, dtype=np.float64, rng=np.random.default_rng(0), compile=False)
    x = mg.Tensor(np.ones((20, 2, 3)), requires_grad=True)
    out = mg.checkpoint(lambda x: lstm(x)[0], x)
    ops_on_tape = [line.op for line in mg.tape(out.sum())]
    assert "checkpoint" in ops_on_tape and "sigmoid" not in ops_on_tape
    out.sum().backward()
    reference = LSTM(3, 4, dtype=np.float64, rng=np.random.default_rng(0), compile=False)
    x2 = mg.Tensor(np.ones((20, 2, 3)), requires_grad=True)
    reference(x2)[0].sum().backward()
    np.testing.assert_allclose(x.grad.data, x2.grad.data, rtol=1e-13, atol=1e-15)
    for p, q in zip(lstm.parameters(), reference.parameters()):
        np.testing.assert_allclose(p.grad.data, q.grad.data, rtol=1e-13, atol=1e-15)


def test_outputs_of_several_dtypes_are_refused():
    with pytest.raises(TypeError, match="checkpoint: fn must return Tensors of one floating dtype"):
        mg.checkpoint(lambda x: (x, mg.astype(x, np.float32)), mg.Tensor(np.ones(2), requires_grad=True))


@pytest.mark.parametrize("compile", [True, False])
def test_checkpoint_every_gives_the_same_gradients(compile):  # noqa: A002
    x_data = np.random.default_rng(2).standard_normal((11, 3, 2))
    results = []
    for every in (None, 4):
        lstm = LSTM(2, 3, num_layers=2, bidirectional=True, dtype=np.float64, rng=np.random.default_rng(0),
                    compile=compile, checkpoint_every=every)
        x = mg.Tensor(x_data, requires_grad=True)
        out, (h, c) = lstm(x, lengths=[11, 7, 2])
        ((out * out).sum() + h.sum() + c.sum()).backward()
        results.append([out.data, h.data, c.data, x.grad.data] + [p.grad.data for p in lstm.parameters()])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


class PerStepDropoutCell(mg.nn.Module):
    """A user's cell whose project draws a mask per step (its draws depend on T) and whose step draws too."""

    def __init__(self):
        super().__init__()
        self.hidden_size = 3
        self.linear = mg.nn.Linear(2, 3, dtype=np.float64, rng=np.random.default_rng(0))
        self.rng = np.random.default_rng(5)

    def project(self, x):
        return F.dropout(self.linear(x), 0.3, self.training, self.rng)

    def step(self, x_t, h):
        h = mg.tanh(x_t + F.dropout(h, 0.2, self.training, self.rng))
        return h, h

    def initial_state(self, batch_size):
        return mg.Tensor(np.zeros((batch_size, 3)))


def _cell_run(make_cell, every, compile, training=True):  # noqa: A002
    from minigrad_rnn import run_cell

    cell = make_cell().train(training)
    x = mg.Tensor(np.random.default_rng(2).standard_normal((11, 3, 2)), requires_grad=True)
    out, final = run_cell(cell, x, lengths=[11, 6, 3], reverse=True, compile=compile, checkpoint_every=every)
    ((out * out).sum() + tree_sum(final)).backward()
    return [out.data, x.grad.data] + [p.grad.data for p in cell.parameters()]


def tree_sum(state):
    return sum(t.sum() for t in (state if isinstance(state, tuple) else (state,)))


def _lstm_cell_with_dropout():
    from minigrad_rnn import LSTMCell

    return LSTMCell(2, 3, dtype=np.float64, rng=np.random.default_rng(0), input_dropout=0.3, recurrent_dropout=0.4)


# A step that draws cannot be compiled (its trace draws, then it runs eagerly): that cell runs eagerly only.
@pytest.mark.parametrize("make_cell, compile", [(_lstm_cell_with_dropout, True), (_lstm_cell_with_dropout, False),
                                                (PerStepDropoutCell, False)],
                         ids=["lstm-cell-dropout-compiled", "lstm-cell-dropout-eager", "per-step-dropout-eager"])
def test_checkpoint_every_draws_the_plain_runs_dropout_masks(make_cell, compile):  # noqa: A002
    plain, checkpointed = _cell_run(make_cell, None, compile), _cell_run(make_cell, 4, compile)
    for a, b in zip(plain, checkpointed):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert not np.allclose(plain[0], _cell_run(make_cell, None, compile, training=False)[0])  # dropout is on


def test_a_tensor_read_beside_one_computed_from_it_is_not_counted_twice():
    # fn reads W and W.T, both made outside it: W's gradient through W.T reaches W once, via the outer graph
    grads = []
    for use_checkpoint in (True, False):
        W = mg.Tensor(np.array([[1.0, 2.0], [3.0, 4.0]]), requires_grad=True)
        W_t = W.T
        x = mg.Tensor(np.array([1.0, -1.0]), requires_grad=True)

        def fn(x):
            return mg.tanh(x @ W) + mg.tanh(x @ W_t)

        (mg.checkpoint(fn, x) if use_checkpoint else fn(x)).sum().backward()
        grads.append((W.grad.data, x.grad.data))
    np.testing.assert_allclose(grads[0][0], grads[1][0], rtol=1e-14)
    np.testing.assert_allclose(grads[0][1], grads[1][1], rtol=1e-14)


def test_a_checkpointed_function_returning_a_non_tensor_is_named_as_checkpoint():
    x = mg.Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(TypeError, match="^checkpoint: expected Tensors nested in tuples, lists and dicts; got float"):
        mg.checkpoint(lambda x: (x * 2, 1.5), x)
