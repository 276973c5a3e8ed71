"""One LSTM or GRU training step, written the way a user of each library would.

Every builder takes the same case data (weights in PyTorch's names and
layout, input ``x`` (T, B, I), a fixed random cotangent ``g_out``) and returns
a zero-argument ``step`` that runs the forward pass over all T steps, the loss
``sum(out * g_out)``, the backward pass, and returns the weight gradients as
``{name: ndarray}`` so the harness can check that all libraries agree.

A builder raises :class:`Unavailable` when its library (or the part of the
minigrad API it needs) is missing.
"""

import importlib

import numpy as np

from benchmarks.numpy_lstm import PARAM_NAMES, NumpyLSTM

GATES = {"lstm": 4, "gru": 3}


class Unavailable(Exception):
    """The library for a benchmark row is not installed or not usable."""


def make_data(kind, B, T, I, H, dtype, seed=0):
    """Weights, input and cotangent for one case, identical for every library."""
    rng = np.random.default_rng(seed)
    k, G = 1.0 / np.sqrt(H), GATES[kind]
    shapes = {"weight_ih": (G * H, I), "weight_hh": (G * H, H), "bias_ih": (G * H,), "bias_hh": (G * H,)}
    params = {name: rng.uniform(-k, k, shape).astype(dtype) for name, shape in shapes.items()}
    x = rng.standard_normal((T, B, I)).astype(dtype)
    g_out = rng.standard_normal((T, B, H)).astype(dtype)
    return {"kind": kind, "params": params, "x": x, "g_out": g_out, "dtype": np.dtype(dtype), "H": H}


def require(module):
    """Import ``module``, or raise :class:`Unavailable` saying its package is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise Unavailable(f"{module.split('.')[0]} not installed") from err


# --- the hand-written NumPy LSTM -------------------------------------------


def numpy_lstm(data):
    """The hand-written BPTT LSTM (LSTM only): the NumPy limit."""
    if data["kind"] != "lstm":
        raise Unavailable("LSTM only")
    p, x, g_out = data["params"], data["x"], data["g_out"]
    lstm = NumpyLSTM(x.shape[2], data["H"], dtype=data["dtype"])
    lstm.load_state_dict(p)

    def step():
        lstm.forward(x)
        return lstm.backward(g_out, input_grads=False)

    return step


# --- PyTorch ----------------------------------------------------------------


def torch_rnn(data):
    """``torch.nn.LSTM`` / ``torch.nn.GRU`` on the CPU, default thread count."""
    torch = require("torch")
    dtype = {np.float32: torch.float32, np.float64: torch.float64}[data["dtype"].type]
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[data["kind"]]
    x, g_out = data["x"], data["g_out"]
    rnn = module(x.shape[2], data["H"], dtype=dtype)
    with torch.no_grad():
        for name, param in rnn.named_parameters():
            param.copy_(torch.from_numpy(data["params"][name.removesuffix("_l0")]))
    x, g_out = torch.from_numpy(x), torch.from_numpy(g_out)

    def step():
        rnn.zero_grad(set_to_none=True)
        out, _ = rnn(x)
        (out * g_out).sum().backward()
        return {name.removesuffix("_l0"): p.grad.numpy() for name, p in rnn.named_parameters()}

    return step


# --- minigrad ---------------------------------------------------------------


def minigrad_rnn(data, compile=True, checkpoint_every=None):  # noqa: A002
    """``minigrad_rnn.LSTM`` / ``GRU`` on minigrad tensors: compiled steps, or every op eagerly;
    with ``checkpoint_every=k``, gradient checkpointing every k steps."""
    mg = require("minigrad")
    layers = require("minigrad_rnn")
    cls_name = data["kind"].upper()
    x, g_out = data["x"], data["g_out"]
    rnn = getattr(layers, cls_name)(x.shape[2], data["H"], dtype=data["dtype"], rng=np.random.default_rng(0),
                                    compile=compile, checkpoint_every=checkpoint_every)
    # Parameter names may carry a layer suffix or prefix ("weight_ih_l0").
    names = {name: next(p for p in PARAM_NAMES if p in name) for name, _ in rnn.named_parameters()}
    rnn.load_state_dict({name: data["params"][ours] for name, ours in names.items()})
    x, g_out = mg.Tensor(x), mg.Tensor(g_out)

    def step():
        rnn.zero_grad()
        out = rnn(x)[0]
        (out * g_out).sum().backward()
        return {names[name]: np.asarray(p.grad) for name, p in rnn.named_parameters()}

    return step


# --- HIPS autograd ----------------------------------------------------------


def autograd_rnn(data):
    """A plain autograd.numpy loop, differentiated with ``autograd.grad``."""
    autograd = require("autograd")
    anp = require("autograd.numpy")
    H, kind = data["H"], data["kind"]

    def sigmoid(z):
        return 1 / (1 + anp.exp(-z))

    def lstm_cell(p, x_t, h, c):
        z = x_t @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"].T + p["bias_hh"]
        i, f = sigmoid(z[:, :H]), sigmoid(z[:, H : 2 * H])
        g, o = anp.tanh(z[:, 2 * H : 3 * H]), sigmoid(z[:, 3 * H :])
        c = f * c + i * g
        return o * anp.tanh(c), c

    def gru_cell(p, x_t, h):
        gi = x_t @ p["weight_ih"].T + p["bias_ih"]
        gh = h @ p["weight_hh"].T + p["bias_hh"]
        r = sigmoid(gi[:, :H] + gh[:, :H])
        z = sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
        n = anp.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
        return (1 - z) * n + z * h

    def loss(p, x, g_out):
        h = c = np.zeros((x.shape[1], H), x.dtype)
        outs = []
        for x_t in x:
            if kind == "lstm":
                h, c = lstm_cell(p, x_t, h, c)
            else:
                h = gru_cell(p, x_t, h)
            outs.append(h)
        return anp.sum(anp.stack(outs) * g_out)

    grad = autograd.grad(loss)
    params, x, g_out = dict(data["params"]), data["x"], data["g_out"]
    return lambda: grad(params, x, g_out)


# --- MyGrad -----------------------------------------------------------------


def mygrad_rnn(data):
    """A loop over mygrad tensors, then ``loss.backward()``."""
    mygrad = require("mygrad")
    sigmoid = require("mygrad.nnet.activations").sigmoid
    H, kind = data["H"], data["kind"]
    p = {name: mygrad.tensor(value) for name, value in data["params"].items()}
    x, g_out = data["x"], data["g_out"]

    def step():
        h = c = np.zeros((x.shape[1], H), x.dtype)
        outs = []
        for x_t in x:
            if kind == "lstm":
                z = x_t @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"].T + p["bias_hh"]
                i, f = sigmoid(z[:, :H]), sigmoid(z[:, H : 2 * H])
                g, o = mygrad.tanh(z[:, 2 * H : 3 * H]), sigmoid(z[:, 3 * H :])
                c = f * c + i * g
                h = o * mygrad.tanh(c)
            else:
                gi = x_t @ p["weight_ih"].T + p["bias_ih"]
                gh = h @ p["weight_hh"].T + p["bias_hh"]
                r = sigmoid(gi[:, :H] + gh[:, :H])
                z = sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
                n = mygrad.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
                h = (1 - z) * n + z * h
            outs.append(h)
        loss = (mygrad.stack(outs) * g_out).sum()
        loss.backward()
        return {name: t.grad for name, t in p.items()}

    return step


LIBRARIES = {
    "minigrad": minigrad_rnn,
    "minigrad-eager": lambda data: minigrad_rnn(data, compile=False),
    "torch": torch_rnn,
    "numpy-lstm": numpy_lstm,
    "autograd": autograd_rnn,
    "mygrad": mygrad_rnn,
}


def check_grads(grads, reference):
    """Largest relative difference of the weight gradients from ``reference`` (``{name: array}``)."""
    worst = 0.0
    for name in reference:
        got, want = np.asarray(grads[name], dtype=np.float64), np.asarray(reference[name], dtype=np.float64)
        worst = max(worst, float(np.max(np.abs(got - want)) / (np.max(np.abs(want)) + 1e-30)))
    return worst
