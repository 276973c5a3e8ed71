"""Custom cells: worked examples of the cell protocol (see :mod:`minigrad_rnn.cells`).

Each is a few lines of minigrad ops; the driver runs it over time, layers,
directions and padded batches exactly as it runs the built-in cells::

    import numpy as np
    from minigrad_rnn import Recurrent
    from minigrad_rnn.examples import PeepholeLSTMCell

    rng = np.random.default_rng(0)
    layer = Recurrent([PeepholeLSTMCell(10, 32, rng=rng), PeepholeLSTMCell(10, 32, rng=rng)],
                      bidirectional=True, rng=rng)
    out, (h_n, c_n) = layer(x, lengths=lengths)     # x (T, B, 10) -> out (T, B, 64)

Parameters get PyTorch-style names there too (``weight_ci_l0_reverse``, ...).
"""
from __future__ import annotations

import math

import numpy as np

from minigrad import Tensor, ops
from minigrad.functional import linear
from minigrad.nn import LayerNorm, Parameter, init
from minigrad.tensor import _rng

from .cells import RecurrentCell

__all__ = ["PeepholeLSTMCell", "LayerNormLSTMCell", "IndRNNCell"]


def _uniform(rng, shape, bound, dtype) -> Parameter:
    return init.uniform_(Parameter(np.empty(shape, dtype)), -bound, bound, rng)


class _LSTMState:
    """The (h, c) zero state of the LSTM variants below."""

    def initial_state(self, batch_size: int):
        zeros = np.zeros((batch_size, self.hidden_size), self.dtype)
        return Tensor._from_array(zeros), Tensor._from_array(zeros.copy())


class PeepholeLSTMCell(_LSTMState, RecurrentCell):
    """LSTM with peephole connections (Gers & Schmidhuber 2000, "Recurrent nets that time and count"):
    the gates also see the cell state, through diagonal weights w_ci, w_cf, w_co::

        i = sigmoid(W_ii x + W_hi h + w_ci * c + b_i)
        f = sigmoid(W_if x + W_hf h + w_cf * c + b_f)
        c' = f * c + i * tanh(W_ig x + W_hg h + b_g)
        o = sigmoid(W_io x + W_ho h + w_co * c' + b_o)       # the output gate sees the new c'
        h' = o * tanh(c')

    Parameters: ``weight_ih`` (4H, I), ``weight_hh`` (4H, H), ``bias`` (4H,) (gate order i, f, g, o),
    ``weight_ci``, ``weight_cf``, ``weight_co`` (H,); all U(-1/sqrt(H), 1/sqrt(H)).
    State (h, c), each (B, H).
    """

    def __init__(self, input_size: int, hidden_size: int, *, dtype=np.float32, rng=None):
        super().__init__(input_size, hidden_size, dtype=dtype)
        rng, bound, H = _rng(rng), 1 / math.sqrt(hidden_size), hidden_size
        self.weight_ih = _uniform(rng, (4 * H, input_size), bound, self.dtype)
        self.weight_hh = _uniform(rng, (4 * H, H), bound, self.dtype)
        self.bias = _uniform(rng, (4 * H,), bound, self.dtype)
        self.weight_ci, self.weight_cf, self.weight_co = (_uniform(rng, (H,), bound, self.dtype) for _ in range(3))

    def project(self, x):
        return linear(x, self.weight_ih, self.bias)

    def step(self, x_t, state):
        h, c = state
        H = self.hidden_size
        z = x_t + h @ self.weight_hh.T
        i = ops.sigmoid(z[:, :H] + self.weight_ci * c)
        f = ops.sigmoid(z[:, H:2 * H] + self.weight_cf * c)
        c = f * c + i * ops.tanh(z[:, 2 * H:3 * H])
        o = ops.sigmoid(z[:, 3 * H:] + self.weight_co * c)
        h = o * ops.tanh(c)
        return h, (h, c)


class LayerNormLSTMCell(_LSTMState, RecurrentCell):
    """Layer-normalized LSTM (Ba, Kiros & Hinton 2016, "Layer Normalization", section 6.4)::

        i, f, g, o = LN(W_ih x) + LN(W_hh h) + b          # each LN over all 4H gate inputs
        c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
        h' = sigmoid(o) * tanh(LN(c'))

    As in the paper, the input and recurrent terms are normalized separately, and the cell
    state only where it feeds the output.  LN(W_ih x) needs no state, so it is computed for
    the whole sequence at once in ``project``.  The two gate LNs have gains but no shifts:
    the gate bias ``b`` is their shift.

    Parameters: ``weight_ih`` (4H, I), ``weight_hh`` (4H, H) ~ U(-1/sqrt(H), 1/sqrt(H)),
    ``bias`` (4H,) = 0, and LayerNorm gains (ones) ``ln_ih.weight``, ``ln_hh.weight`` (4H,),
    ``ln_c.weight``, shift ``ln_c.bias`` (H,).  State (h, c), each (B, H).
    """

    def __init__(self, input_size: int, hidden_size: int, *, eps: float = 1e-5, dtype=np.float32, rng=None):
        super().__init__(input_size, hidden_size, dtype=dtype)
        rng, bound, H = _rng(rng), 1 / math.sqrt(hidden_size), hidden_size
        self.weight_ih = _uniform(rng, (4 * H, input_size), bound, self.dtype)
        self.weight_hh = _uniform(rng, (4 * H, H), bound, self.dtype)
        self.bias = Parameter(np.zeros(4 * H, self.dtype))
        self.ln_ih = LayerNorm(4 * H, eps=eps, bias=False, dtype=self.dtype)
        self.ln_hh = LayerNorm(4 * H, eps=eps, bias=False, dtype=self.dtype)
        self.ln_c = LayerNorm(H, eps=eps, dtype=self.dtype)

    def project(self, x):
        return self.ln_ih(linear(x, self.weight_ih)) + self.bias

    def step(self, x_t, state):
        h, c = state
        H = self.hidden_size
        z = x_t + self.ln_hh(h @ self.weight_hh.T)
        act = ops.sigmoid(z)
        c = act[:, H:2 * H] * c + act[:, :H] * ops.tanh(z[:, 2 * H:3 * H])
        h = act[:, 3 * H:] * ops.tanh(self.ln_c(c))
        return h, (h, c)


class IndRNNCell(RecurrentCell):
    """Independently recurrent cell (Li et al. 2018, "Independently Recurrent Neural Network")::

        h' = relu(W_ih x + b + u * h)          # u (H,): each unit sees only its own past

    Parameters: ``weight_ih`` (H, I), ``bias`` (H,) ~ U(-1/sqrt(H), 1/sqrt(H)), and the
    recurrent weights ``weight_hh`` (H,) ~ U(0, 1), so that |u| <= 1 keeps relu units from
    exploding (the paper bounds |u| by a power of 2 over the sequence length).  State h (B, H).
    """

    def __init__(self, input_size: int, hidden_size: int, *, dtype=np.float32, rng=None):
        super().__init__(input_size, hidden_size, dtype=dtype)
        rng, bound = _rng(rng), 1 / math.sqrt(hidden_size)
        self.weight_ih = _uniform(rng, (hidden_size, input_size), bound, self.dtype)
        self.weight_hh = init.uniform_(Parameter(np.empty(hidden_size, self.dtype)), 0.0, 1.0, rng)
        self.bias = _uniform(rng, (hidden_size,), bound, self.dtype)

    def project(self, x):
        return linear(x, self.weight_ih, self.bias)

    def step(self, x_t, h):
        h = ops.relu(x_t + self.weight_hh * h)
        return h, h
