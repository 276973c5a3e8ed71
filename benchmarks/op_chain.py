"""Per-op overhead: a chain of many tiny elementwise ops, forward and backward.

The chain repeats x = x * 1.0001, x = tanh(x), x = x + 0.1 on a float64
vector of 16 elements, so the time is almost all bookkeeping: creating
tensors, recording the graph and walking it back. Every builder returns a
zero-argument function that runs the whole chain (and the backward pass, for
the autograd libraries) and returns the gradient (or the value, for NumPy).
"""

import numpy as np

from benchmarks.rnn_steps import require

N_OPS = 1000
SHAPE = (16,)


def chain(x, tanh, n_ops=N_OPS):
    """Apply ``n_ops`` cheap elementwise ops to ``x``, cycling through three kinds."""
    for k in range(n_ops):
        kind = k % 3
        if kind == 0:
            x = x * 1.0001
        elif kind == 1:
            x = tanh(x)
        else:
            x = x + 0.1
    return x


def _start():
    return np.random.default_rng(0).uniform(-1, 1, SHAPE)


def numpy_forward():
    """Plain NumPy, forward only: the floor for any of the libraries."""
    x = _start()
    return lambda: chain(x, np.tanh)


def minigrad_chain():
    """minigrad: Tensor ops, then ``backward()``."""
    mg = require("minigrad")
    start = _start()

    def run():
        x = mg.Tensor(start, requires_grad=True)
        chain(x, lambda t: t.tanh()).sum().backward()
        return np.asarray(x.grad)

    return run


def torch_chain():
    """PyTorch eager mode on the CPU."""
    torch = require("torch")
    start = torch.from_numpy(_start())

    def run():
        x = start.clone().requires_grad_(True)
        chain(x, torch.tanh).sum().backward()
        return x.grad.numpy()

    return run


def autograd_chain():
    """HIPS autograd: ``grad`` of the chain's sum."""
    autograd = require("autograd")
    anp = require("autograd.numpy")
    grad = autograd.grad(lambda x: anp.sum(chain(x, anp.tanh)))
    start = _start()
    return lambda: grad(start)


def mygrad_chain():
    """MyGrad tensors, then ``backward()``."""
    mygrad = require("mygrad")
    start = _start()

    def run():
        x = mygrad.tensor(start)
        chain(x, mygrad.tanh).sum().backward()
        return x.grad

    return run


LIBRARIES = {
    "minigrad": minigrad_chain,
    "torch": torch_chain,
    "autograd": autograd_chain,
    "mygrad": mygrad_chain,
    "numpy (forward only)": numpy_forward,
}


def reference_grad():
    """The chain's gradient (of the sum of its output) worked out by hand."""
    tanh_inputs = []

    def tanh(x):
        tanh_inputs.append(x)
        return np.tanh(x)

    chain(_start(), tanh)
    grad = np.ones(SHAPE)
    for k in reversed(range(N_OPS)):
        if k % 3 == 0:
            grad = grad * 1.0001
        elif k % 3 == 1:
            grad = grad * (1 - np.tanh(tanh_inputs.pop()) ** 2)
    return grad
