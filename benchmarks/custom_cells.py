"""Cells a user writes: minigrad's example cells, compiled and eager, against the same cells written
the natural way as a ``torch.nn.Module`` with a Python loop over time (the style of PyTorch's
``benchmarks/fastrnns/custom_lstms.py``, without TorchScript).

Each builder takes the case data and returns a zero-argument ``step``: forward over T steps, loss
``sum(out * g_out)``, backward, and the weight gradients as ``{name: ndarray}`` (checked against
each other by the harness).  ``lstm`` is the built-in LSTMCell through the same driver: the
baseline for time per matmul FLOP.
"""

import numpy as np

from benchmarks.rnn_steps import Unavailable, require

CELLS = ("lstm", "peephole", "layernorm", "indrnn")


def make_data(cell, B, T, H, dtype, seed=0):
    """A minigrad cell's initial weights (the torch rows copy them), input and cotangent."""
    rng = np.random.default_rng(seed)
    return {"cell": cell, "B": B, "T": T, "H": H, "dtype": np.dtype(dtype), "seed": seed,
            "x": rng.standard_normal((T, B, H)).astype(dtype), "g_out": rng.standard_normal((T, B, H)).astype(dtype)}


def matmul_flops(cell, B, T, H):
    """Forward + backward matmul FLOPs of a step over the sequence (I = H): backward is twice forward."""
    gates = {"lstm": 4, "peephole": 4, "layernorm": 4, "indrnn": 1}[cell]
    recurrent = 0 if cell == "indrnn" else H  # IndRNN's recurrence is elementwise
    return 3 * 2 * T * B * gates * H * (H + recurrent)


def _minigrad_cell(data):
    from minigrad_rnn import LSTMCell
    from minigrad_rnn.examples import IndRNNCell, LayerNormLSTMCell, PeepholeLSTMCell

    make = {"lstm": LSTMCell, "peephole": PeepholeLSTMCell, "layernorm": LayerNormLSTMCell, "indrnn": IndRNNCell}
    H = data["H"]
    return make[data["cell"]](H, H, dtype=data["dtype"], rng=np.random.default_rng(data["seed"]))


def minigrad_cell(data, compile=True):  # noqa: A002
    """The cell through ``minigrad_rnn.run_cell``: compiled steps, or every op eagerly."""
    mg = require("minigrad")
    layers = require("minigrad_rnn")
    cell = _minigrad_cell(data)
    x, g_out = mg.Tensor(data["x"]), mg.Tensor(data["g_out"])

    def step():
        cell.zero_grad()
        out, _ = layers.run_cell(cell, x, compile=compile)
        (out * g_out).sum().backward()
        return {name: np.asarray(p.grad) for name, p in cell.named_parameters()}

    return step


def torch_cell(data):
    """The same cell as a torch.nn.Module stepping over time in Python, as one would first write it."""
    torch = require("torch")
    if data["cell"] == "lstm":
        raise Unavailable("built-in: see the lstm section")
    F = torch.nn.functional
    ours = _minigrad_cell(data)
    params = {name: torch.nn.Parameter(torch.from_numpy(np.array(p.data))) for name, p in ours.named_parameters()}
    H, kind = data["H"], data["cell"]

    def cell_step(x_t, h, c):
        if kind == "peephole":
            z = x_t + h @ params["weight_hh"].T
            i = torch.sigmoid(z[:, :H] + params["weight_ci"] * c)
            f = torch.sigmoid(z[:, H:2 * H] + params["weight_cf"] * c)
            c = f * c + i * torch.tanh(z[:, 2 * H:3 * H])
            o = torch.sigmoid(z[:, 3 * H:] + params["weight_co"] * c)
            return o * torch.tanh(c), c
        if kind == "layernorm":
            z = x_t + F.layer_norm(h @ params["weight_hh"].T, (4 * H,), params["ln_hh.weight"], eps=1e-5)
            act = torch.sigmoid(z)
            c = act[:, H:2 * H] * c + act[:, :H] * torch.tanh(z[:, 2 * H:3 * H])
            c_normed = F.layer_norm(c, (H,), params["ln_c.weight"], params["ln_c.bias"], eps=1e-5)
            return act[:, 3 * H:] * torch.tanh(c_normed), c
        return torch.relu(x_t + params["weight_hh"] * h), None

    x, g_out = torch.from_numpy(data["x"]), torch.from_numpy(data["g_out"])

    def step():
        for p in params.values():
            p.grad = None
        if kind == "layernorm":
            projected = F.layer_norm(x @ params["weight_ih"].T, (4 * H,), params["ln_ih.weight"], eps=1e-5)
            projected = projected + params["bias"]
        else:
            projected = x @ params["weight_ih"].T + params["bias"]
        h = torch.zeros(x.shape[1], H, dtype=x.dtype)
        c, outs = torch.zeros_like(h), []
        for x_t in projected:
            h, c = cell_step(x_t, h, c)
            outs.append(h)
        (torch.stack(outs) * g_out).sum().backward()
        return {name: p.grad.numpy() for name, p in params.items()}

    return step


LIBRARIES = {
    "minigrad": minigrad_cell,
    "minigrad-eager": lambda data: minigrad_cell(data, compile=False),
    "torch": torch_cell,
}
