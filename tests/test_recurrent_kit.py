"""minigrad.testing.recurrent: check_cell passes on every built-in and example cell, and catches a cell
that reads its padding."""
import numpy as np
import pytest
from hypothesis import given, settings

import minigrad as mg
from minigrad.testing.recurrent import check_cell, padded_batches
from minigrad_rnn import GRUCell, LSTMCell, RNNCell, run_cell
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
    assert check_cell(MAKERS[name])


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
    from minigrad.testing.recurrent import _check_against_torch

    cell = GRUCell(2, 3, dtype=np.float64, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((4, 2, 2))
    _check_against_torch(cell, x, 1e-10)  # the real cell matches
    step = cell.step
    cell.step = lambda x_t, h: tuple(t * 1.01 for t in step(x_t, h))  # off by 1%: must be caught
    with pytest.raises(AssertionError, match="outputs differ from torch.nn.GRUCell's"):
        _check_against_torch(cell, x, 1e-10)
