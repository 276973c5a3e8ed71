"""Recurrent cells: one time step of RNN, LSTM and GRU, written only with minigrad ops.

Nothing here has a hand-written backward: backpropagation through time is the
core's generic reverse mode over these ops.  Equations, gate order, parameter
names, shapes and initialization are PyTorch's (``torch.nn.RNNCell``,
``LSTMCell``, ``GRUCell``), so weights move between the two unchanged.

The cell protocol
-----------------
Every cell the sequence driver (:func:`minigrad_rnn.run_cell`,
:class:`minigrad_rnn.Recurrent`) runs is a :class:`~minigrad.nn.Module` with

* ``project(x) -> projected``: the part of a step that needs only the input, for a
  whole sequence ``x`` (T, B, I) at once (one big matmul instead of T small
  ones).  The driver calls it once per sequence, before the steps, so a cell
  may also prepare per-sequence values there (the built-in cells transpose
  ``weight_hh`` and draw their variational dropout masks).  Default: identity.
  A projection in new memory is the driver's: once the compiled steps have read
  it, they may write their saved activations over it (:func:`minigrad.scan`'s
  ``donate_xs``), so a cell does not keep it.
* ``step(x_t, state) -> (output_t, new_state)``: one time step; ``x_t`` is
  ``projected[t]`` (B, ...), ``state`` any Tensor or tuple/list/dict of Tensors with
  the batch first (an LSTM's is ``(h, c)``), ``output_t`` (B, output_size).
* ``initial_state(batch_size) -> state``: the zero state.
* attributes ``input_size``, ``hidden_size`` and ``output_size`` (the last two
  are the same except for a projected LSTM); optional but used for checks.

:class:`RecurrentCell` gives the defaults and PyTorch's cell call form,
``new_state = cell(input, hx=None)``, on top of ``project`` and ``step``.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from minigrad import Tensor, ops
from minigrad.functional import linear
from minigrad.nn import Module, Parameter, init
from minigrad._checks import check_probability, check_size, float_dtype
from minigrad.tensor import _rng

from .utils import as_tensor, check_input, check_state, tree_map

__all__ = ["RecurrentCell", "RNNCell", "LSTMCell", "GRUCell"]


def _gate_slices(hidden_size: int, num_gates: int) -> list:
    """Indices of each gate's block of a (B, num_gates * H) tensor, built once rather than per step."""
    return [(slice(None), slice(k * hidden_size, (k + 1) * hidden_size)) for k in range(num_gates)]


def _dropout_mask(rng, shape, p: float, dtype) -> Tensor:
    """A constant inverted-dropout mask: 0 with probability p, else 1/(1-p)."""
    keep = rng.random(shape) >= p
    return Tensor._from_array(keep.astype(dtype) / np.asarray(1 - p, dtype=dtype))


class RecurrentCell(Module):
    """Base class of cells: PyTorch's call form and sensible defaults for the cell protocol.

    Subclasses define ``step(x_t, state) -> (output_t, new_state)`` and, if useful,
    ``project(x)`` and ``initial_state(batch_size)`` (default: zeros (B, hidden_size)).

    Call: ``new_state = cell(input, hx=None)`` with input (B, input_size) or unbatched
    (input_size,) and ``hx`` nested as ``initial_state`` (zeros if None; no batch axis for
    unbatched input), as ``torch.nn.RNNCell`` / ``LSTMCell`` / ``GRUCell``.

    Raises:
        ValueError: input not 1-D or 2-D, ``input.shape[-1] != input_size``, an input dtype
            other than the weights', or a state of the wrong nesting, shape or dtype.
    """

    def __init__(self, input_size: int, hidden_size: int, *, dtype=np.float32):
        super().__init__()
        name = type(self).__name__
        check_size(input_size, "input_size", name)
        check_size(hidden_size, "hidden_size", name)
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.dtype = float_dtype(dtype, name)

    @property
    def output_size(self) -> int:
        """Features of ``output_t``: what the next layer of a stack receives."""
        return self.hidden_size

    def project(self, x: Tensor) -> Tensor:
        """Input-only part of a step, for all steps at once. Default: the input itself."""
        return x

    def step(self, x_t: Tensor, state):
        """One time step: x_t (B, ...) is ``project(x)[t]``, ``state`` nested as ``initial_state(B)``;
        returns ``(output_t (B, output_size), new_state)``.  Raises NotImplementedError here."""
        raise NotImplementedError(f"{type(self).__name__} must define step(x_t, state) -> (output_t, new_state)")

    def initial_state(self, batch_size: int):
        """The zero state, (batch_size, hidden_size) in the cell's dtype."""
        return Tensor._from_array(np.zeros((batch_size, self.hidden_size), self.dtype))

    def forward(self, input, hx=None):  # noqa: A002 - PyTorch's argument name
        name = type(self).__name__
        x = as_tensor(input, name)
        if x.ndim not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {x.ndim}D instead")
        check_input(name, x, self.input_size, self.dtype)
        batched = x.ndim == 2
        if not batched:
            x = ops.expand_dims(x, 0)
        expected = self.initial_state(x.shape[0])
        state = expected if hx is None else check_state(name, hx, expected, batched, batch_axis=0, name="hx")
        _, new_state = self.step(self.project(x), state)
        return new_state if batched else tree_map(lambda t: ops.squeeze(t, 0), new_state)


class _PyTorchCell(RecurrentCell):
    """The parameters and input projection shared by the built-in cells.

    ``weight_ih`` (gates*H, I), ``weight_hh`` (gates*H, H), ``bias_ih``, ``bias_hh`` (gates*H,),
    all U(-1/sqrt(H), 1/sqrt(H)) as PyTorch's ``reset_parameters``; variational dropout
    (Gal & Ghahramani 2016) draws one mask per sequence in ``project``.
    """

    def __init__(self, input_size, hidden_size, bias, num_gates, *, recurrent_size=None, dtype, rng,
                 input_dropout=0.0, recurrent_dropout=0.0):
        super().__init__(input_size, hidden_size, dtype=dtype)
        name = type(self).__name__
        if not isinstance(bias, bool):
            raise TypeError(f"{name}: bias should be of type bool, got: {type(bias).__name__}")
        check_probability(input_dropout, "input_dropout", name)
        check_probability(recurrent_dropout, "recurrent_dropout", name)
        self.bias, self.input_dropout, self.recurrent_dropout = bias, input_dropout, recurrent_dropout
        self.rng = _rng(rng)
        gates = num_gates * hidden_size
        self.weight_ih = Parameter(np.empty((gates, input_size), self.dtype))
        self.weight_hh = Parameter(np.empty((gates, recurrent_size or hidden_size), self.dtype))
        self.register_parameter("bias_ih", Parameter(np.empty(gates, self.dtype)) if bias else None)
        self.register_parameter("bias_hh", Parameter(np.empty(gates, self.dtype)) if bias else None)

    def reset_parameters(self):
        """Every parameter ~ U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), as PyTorch."""
        bound = 1 / math.sqrt(self.hidden_size)
        for param in self.parameters():
            init.uniform_(param, -bound, bound, rng=self.rng)

    def _input_bias(self):
        """Bias folded into the projection: both biases for RNN and LSTM (they are only ever summed)."""
        return self.bias_ih + self.bias_hh

    def project(self, x: Tensor) -> Tensor:
        """x (..., I) -> x @ weight_ih.T + bias, (..., gates*H), as ONE matmul over all leading axes."""
        if self.training and self.input_dropout > 0:  # one mask per sequence, the same at every step
            x = x * _dropout_mask(self.rng, x.shape[-2:], self.input_dropout, self.dtype)
        self._h_mask = None
        if self.training and self.recurrent_dropout > 0:
            recurrent = (x.shape[-2], self.weight_hh.shape[1])
            self._h_mask = _dropout_mask(self.rng, recurrent, self.recurrent_dropout, self.dtype)
        self._weight_hh_t = self.weight_hh.T  # once per sequence rather than once per step
        return linear(x, self.weight_ih, None if self.bias_ih is None else self._input_bias())

    def _recurrent(self, h: Tensor, plus=None) -> Tensor:
        """plus + h @ weight_hh.T (one addmm), reading h through the variational dropout mask if any."""
        h = h if self._h_mask is None else h * self._h_mask
        return h @ self._weight_hh_t if plus is None else ops.addmm(plus, h, self._weight_hh_t)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        return s


class RNNCell(_PyTorchCell):
    """Elman RNN cell, as ``torch.nn.RNNCell``: h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh).

    Args:
        input_size, hidden_size: I and H (positive ints).
        bias: whether to have ``bias_ih``, ``bias_hh`` (H,).
        nonlinearity: ``"tanh"`` or ``"relu"``.
        dtype: float dtype of the parameters (float32 by default).
        rng: ``numpy.random.Generator`` for the init U(-1/sqrt(H), 1/sqrt(H)) and dropout masks.
        input_dropout, recurrent_dropout: variational dropout on x and on h as the recurrence
            reads it (Gal & Ghahramani 2016), in training mode only. PyTorch has neither.

    Parameters: ``weight_ih`` (H, I), ``weight_hh`` (H, H), ``bias_ih``, ``bias_hh`` (H,).
    Call: ``h1 = cell(x, hx=None)``; x (B, I) or (I,), h (B, H) or (H,). Errors: see RecurrentCell;
    ValueError for an unknown nonlinearity (PyTorch's message).
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh", *,
                 dtype=np.float32, rng=None, input_dropout=0.0, recurrent_dropout=0.0):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        super().__init__(input_size, hidden_size, bias, 1, dtype=dtype, rng=rng,
                         input_dropout=input_dropout, recurrent_dropout=recurrent_dropout)
        self.nonlinearity = nonlinearity
        self._activation = ops.tanh if nonlinearity == "tanh" else ops.relu
        self.reset_parameters()

    def step(self, x_t, h):
        h = self._activation(self._recurrent(h, plus=x_t))
        return h, h

    def extra_repr(self) -> str:
        return super().extra_repr() + (", nonlinearity='relu'" if self.nonlinearity == "relu" else "")


class LSTMCell(_PyTorchCell):
    """LSTM cell (Hochreiter & Schmidhuber 1997, with a forget gate), as ``torch.nn.LSTMCell``::

        i, f, g, o = split(x W_ih^T + b_ih + h W_hh^T + b_hh)      # gate order i, f, g, o
        c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
        h' = sigmoid(o) * tanh(c')            (then h' W_hr^T if proj_size > 0, as torch.nn.LSTM)

    Args: as :class:`RNNCell` (no nonlinearity), plus ``proj_size``: if > 0, h is projected to
    that size by ``weight_hr`` (proj_size, H) (Sak et al. 2014), which PyTorch offers on
    ``nn.LSTM`` only.  Raises ValueError unless 0 <= proj_size < hidden_size.

    Parameters: ``weight_ih`` (4H, I), ``weight_hh`` (4H, P), ``bias_ih``, ``bias_hh`` (4H,),
    ``weight_hr`` (P, H) if projected, where P = proj_size or H.
    Call: ``h1, c1 = cell(x, (h0, c0))`` (state optional); h (B, P), c (B, H); unbatched without B.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, proj_size: int = 0,
                 dtype=np.float32, rng=None, input_dropout=0.0, recurrent_dropout=0.0):
        name = type(self).__name__
        if isinstance(proj_size, bool) or not isinstance(proj_size, numbers.Integral) or proj_size < 0:
            raise ValueError(f"{name}: proj_size should be a positive integer or zero to disable projections")
        if proj_size and proj_size >= hidden_size:
            raise ValueError(f"{name}: proj_size has to be smaller than hidden_size; got {proj_size} >= {hidden_size}")
        super().__init__(input_size, hidden_size, bias, 4, recurrent_size=proj_size or None, dtype=dtype, rng=rng,
                         input_dropout=input_dropout, recurrent_dropout=recurrent_dropout)
        self.proj_size = int(proj_size)
        if proj_size:
            self.weight_hr = Parameter(np.empty((proj_size, hidden_size), self.dtype))
        self.reset_parameters()
        self._i, self._f, self._g, self._o = _gate_slices(hidden_size, 4)

    @property
    def output_size(self) -> int:
        return self.proj_size or self.hidden_size

    def project(self, x: Tensor) -> Tensor:
        if self.proj_size:
            self._weight_hr_t = self.weight_hr.T  # once per sequence, as weight_hh.T
        return super().project(x)

    def initial_state(self, batch_size: int):
        """Zeros (h (B, proj_size or H), c (B, H))."""
        return (Tensor._from_array(np.zeros((batch_size, self.output_size), self.dtype)),
                Tensor._from_array(np.zeros((batch_size, self.hidden_size), self.dtype)))

    def step(self, x_t, state):
        h, c = state
        gates = self._recurrent(h, plus=x_t)
        act = ops.sigmoid(gates)  # one sigmoid over all four blocks; the g block's is simply not used
        c = act[self._f] * c + act[self._i] * ops.tanh(gates[self._g])
        h = act[self._o] * ops.tanh(c)
        if self.proj_size:
            h = h @ self._weight_hr_t
        return h, (h, c)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", proj_size={self.proj_size}" if self.proj_size else "")


class GRUCell(_PyTorchCell):
    """GRU cell (Cho et al. 2014), as ``torch.nn.GRUCell``::

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))     # reset gate applied after W_hn h, as PyTorch
        h' = (1 - z) * n + z * h

    Args, call form and errors as :class:`RNNCell` (no nonlinearity).  Parameters: ``weight_ih``
    (3H, I), ``weight_hh`` (3H, H), ``bias_ih``, ``bias_hh`` (3H,), gate order r, z, n.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *,
                 dtype=np.float32, rng=None, input_dropout=0.0, recurrent_dropout=0.0):
        super().__init__(input_size, hidden_size, bias, 3, dtype=dtype, rng=rng,
                         input_dropout=input_dropout, recurrent_dropout=recurrent_dropout)
        self.reset_parameters()
        self._r, self._z, self._n = _gate_slices(hidden_size, 3)
        self._rz = (slice(None), slice(0, 2 * hidden_size))

    def _input_bias(self):
        return self.bias_ih  # b_hn sits inside r * (W_hn h + b_hn), so b_hh stays in the step

    def step(self, x_t, h):
        gh = self._recurrent(h, plus=self.bias_hh)
        rz = ops.sigmoid(x_t[self._rz] + gh[self._rz])
        n = ops.tanh(x_t[self._n] + rz[self._r] * gh[self._n])
        h = n + rz[self._z] * (h - n)  # (1 - z) * n + z * h, one op fewer
        return h, h
