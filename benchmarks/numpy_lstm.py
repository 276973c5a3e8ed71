"""A hand-written NumPy LSTM with explicit backpropagation through time.

This is "the NumPy limit" the benchmarks compare against: the same
computation as one layer of ``torch.nn.LSTM`` (gate order i, f, g, o),
written as fast as plain NumPy allows, with no autograd machinery at all:

* one matmul projects the inputs of all time steps at once;
* each step does one matmul (``h @ W_hh^T``) and a handful of in-place
  elementwise ops into preallocated buffers;
* the backward pass computes the activation derivatives of all steps in a
  few vectorised ops, runs the recurrence with one matmul per step, and then
  gets every weight gradient from a single matmul over all steps.

Two tricks keep the per-step op count low:

* internally the gates are stored in the order o, i, f, g, so the three
  sigmoid gates are one contiguous slice and the three gates that the cell
  gradient flows into (i, f, g) are another;
* the forward pass uses weights whose rows are pre-scaled by -1 (sigmoid
  gates) and -2 (g), so a single ``exp`` over all four gates, ``+ 1`` and a
  reciprocal give every sigmoid, and tanh(z) = 2 sigmoid(2z) - 1 gives g.
  ``exp`` is about twice as fast as ``tanh`` in NumPy (float64).

Example::

    lstm = NumpyLSTM(128, 128, dtype=np.float32)
    out, h_n, c_n = lstm.forward(x)           # x: (T, B, I)
    grads = lstm.backward(g_out)              # dict with x, h0, c0, weight_ih, ...
"""

import numpy as np

PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


class NumpyLSTM:
    """One LSTM layer with PyTorch's equations and parameter layout.

    Parameters are plain arrays: ``weight_ih`` (4H, I), ``weight_hh`` (4H, H),
    ``bias_ih`` (4H,), ``bias_hh`` (4H,), initialised like PyTorch's
    (uniform in +-1/sqrt(H)).
    """

    def __init__(self, input_size, hidden_size, dtype=np.float64, rng=None):
        rng = np.random.default_rng(0) if rng is None else rng
        self.input_size, self.hidden_size = input_size, hidden_size
        self.dtype = np.dtype(dtype)
        k = 1.0 / np.sqrt(hidden_size)
        shapes = {
            "weight_ih": (4 * hidden_size, input_size),
            "weight_hh": (4 * hidden_size, hidden_size),
            "bias_ih": (4 * hidden_size,),
            "bias_hh": (4 * hidden_size,),
        }
        for name, shape in shapes.items():
            setattr(self, name, rng.uniform(-k, k, shape).astype(self.dtype))
        H = hidden_size
        # Row order of the internal (o, i, f, g) layout, and its inverse.
        self._perm = np.concatenate([np.arange(k * H, (k + 1) * H) for k in (3, 0, 1, 2)])
        self._unperm = np.argsort(self._perm)
        self._cache = None

    def state_dict(self):
        """Return the parameters by PyTorch name (the arrays themselves)."""
        return {name: getattr(self, name) for name in PARAM_NAMES}

    def load_state_dict(self, state):
        """Copy parameters from ``{name: array}`` (PyTorch's names without the ``_l0`` suffix)."""
        for name in PARAM_NAMES:
            value = state[name]
            old = getattr(self, name)
            if np.shape(value) != old.shape:
                raise ValueError(f"{name}: expected shape {old.shape}, got {np.shape(value)}")
            setattr(self, name, np.array(value, dtype=self.dtype))

    def forward(self, x, h0=None, c0=None):
        """Run the layer over ``x`` (T, B, I); return ``out`` (T, B, H), ``h_n``, ``c_n`` (B, H).

        Missing initial states are zeros. The activations are kept for
        :meth:`backward`; ``out`` is a view of them, so do not modify it.
        """
        dt, H = self.dtype, self.hidden_size
        x = np.asarray(x, dtype=dt)
        T, B, I = x.shape
        h0 = np.zeros((B, H), dt) if h0 is None else np.asarray(h0, dtype=dt)
        c0 = np.zeros((B, H), dt) if c0 is None else np.asarray(c0, dtype=dt)

        # Weights in (o, i, f, g) order. The forward copies are scaled so that
        # one exp over all four gates gives exp(-z) for the sigmoid gates and
        # exp(-2z) for g: then 1 / (1 + e) is sigmoid(z), resp. sigmoid(2z),
        # and tanh(z) = 2 sigmoid(2z) - 1.
        w_ih, w_hh = self.weight_ih[self._perm], self.weight_hh[self._perm]
        bias = (self.bias_ih + self.bias_hh)[self._perm]
        scale = np.full((4 * H, 1), -1.0, dt)
        scale[3 * H :] = -2.0
        w_ih_fwd, w_hh_fwd_t = w_ih * scale, (w_hh * scale).T
        bias_fwd = bias * scale[:, 0]

        gates = np.empty((T, B, 4 * H), dt)  # activated gates o, i, f, g
        cs = np.empty((T + 1, B, H), dt)  # cs[t] is the cell state before step t
        hs = np.empty((T + 1, B, H), dt)  # hs[t] is the hidden state before step t
        tanh_c = np.empty((T, B, H), dt)
        tmp = np.empty((B, 4 * H), dt)
        ig = np.empty((B, H), dt)
        cs[0], hs[0] = c0, h0

        # Input projection of every step in one matmul.
        np.matmul(x.reshape(T * B, I), w_ih_fwd.T, out=gates.reshape(T * B, 4 * H))
        gates += bias_fwd
        with np.errstate(over="ignore", under="ignore"):  # saturated gates: exp gives inf or 0, both fine
            for t in range(T):
                z = gates[t]
                np.matmul(hs[t], w_hh_fwd_t, out=tmp)
                z += tmp
                np.exp(z, out=z)
                z += 1
                np.reciprocal(z, out=z)
                o, i, f, g = z[:, :H], z[:, H : 2 * H], z[:, 2 * H : 3 * H], z[:, 3 * H :]
                g *= 2
                g -= 1
                np.multiply(f, cs[t], out=cs[t + 1])
                np.multiply(i, g, out=ig)
                cs[t + 1] += ig
                np.tanh(cs[t + 1], out=tanh_c[t])
                np.multiply(o, tanh_c[t], out=hs[t + 1])

        self._cache = (x, gates, cs, hs, tanh_c, w_ih, w_hh)
        return hs[1:], hs[T], cs[T]

    def backward(self, g_out, g_h_n=None, g_c_n=None, input_grads=True):
        """Backpropagate through the last :meth:`forward` call (any number of times).

        ``g_out`` (T, B, H) is dL/d(out); ``g_h_n`` and ``g_c_n`` (B, H) are
        optional cotangents of the final states. Returns a dict with the
        gradients of every parameter (PyTorch names and shapes) and, when
        ``input_grads`` is true, of ``x``, ``h0`` and ``c0``.
        """
        if self._cache is None:
            raise RuntimeError("backward() needs a forward() first")
        x, gates, cs, hs, tanh_c, w_ih, w_hh = self._cache
        dt, H = self.dtype, self.hidden_size
        T, B, I = x.shape
        g_out = np.asarray(g_out, dtype=dt)

        # dz = dL/d(pre-activation) is, per gate, one recurrent factor
        # (dh for o, dc for i, f, g) times a factor known from the forward
        # pass. Compute those factors for all steps at once, in the buffer
        # that then becomes dz.
        g4 = gates.reshape(T, B, 4, H)
        o, i, f, g = g4[:, :, 0], g4[:, :, 1], g4[:, :, 2], g4[:, :, 3]
        dz = np.empty_like(gates)
        d4 = dz.reshape(T, B, 4, H)
        sig, dsig = gates[:, :, : 3 * H], dz[:, :, : 3 * H]
        np.subtract(1, sig, out=dsig)
        dsig *= sig  # sigmoid' = s (1 - s)
        np.multiply(g, g, out=d4[:, :, 3])
        np.subtract(1, d4[:, :, 3], out=d4[:, :, 3])  # tanh' = 1 - g^2
        d4[:, :, 0] *= tanh_c  # do:  dh * tanh(c)
        d4[:, :, 1] *= g  # di:  dc * g
        d4[:, :, 2] *= cs[:-1]  # df:  dc * c_prev
        d4[:, :, 3] *= i  # dg:  dc * i
        dc_from_h = np.multiply(tanh_c, tanh_c)
        np.subtract(1, dc_from_h, out=dc_from_h)
        dc_from_h *= o  # dc += dh * o * (1 - tanh(c)^2)

        dh = np.zeros((B, H), dt) if g_h_n is None else np.array(g_h_n, dtype=dt)
        dc = np.zeros((B, H), dt) if g_c_n is None else np.array(g_c_n, dtype=dt)
        tmp = np.empty((B, H), dt)
        for t in range(T - 1, -1, -1):
            dh += g_out[t]
            np.multiply(dh, dc_from_h[t], out=tmp)
            dc += tmp
            zt = d4[t]
            zt[:, 0] *= dh
            zt[:, 1:] *= dc[:, None, :]
            if t == 0 and not input_grads:
                break  # dh and dc of the initial state are not wanted
            dc *= f[t]
            np.matmul(dz[t], w_hh, out=dh)

        # Weight gradients: one matmul over all steps, then back to i, f, g, o.
        dz2 = dz.reshape(T * B, 4 * H)
        d_bias = dz2.sum(axis=0)[self._unperm]
        grads = {
            "weight_ih": (dz2.T @ x.reshape(T * B, I))[self._unperm],
            "weight_hh": (dz2.T @ hs[:T].reshape(T * B, H))[self._unperm],
            "bias_ih": d_bias,
            "bias_hh": d_bias.copy(),
        }
        if input_grads:
            grads["x"] = (dz2 @ w_ih).reshape(T, B, I)
            grads["h0"], grads["c0"] = dh, dc
        return grads
