"""RMSprop, as ``torch.optim.RMSprop``."""
from __future__ import annotations

import numpy as np

from .optimizer import Optimizer, _is_real, _require


class RMSprop(Optimizer):
    """RMSprop (Hinton's lecture 6e; centered as Graves 2013), the optimizer of char-rnn: PyTorch's algorithm.

    Per step, with g the gradient::

        g = g + weight_decay * p                      (if weight_decay)
        v = alpha * v + (1 - alpha) * g * g
        if centered: g_avg = alpha * g_avg + (1 - alpha) * g;  v~ = v - g_avg^2   else v~ = v
        if momentum: b = momentum * b + g / (sqrt(v~) + eps);  p = p - lr * b
        else:        p = p - lr * g / (sqrt(v~) + eps)

    State per parameter: "step" (int), "square_avg" (and "momentum_buffer",
    "grad_avg"), arrays of the parameter's dtype.  Raises ValueError for any
    negative option.
    """

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0,
                 momentum: float = 0, centered: bool = False):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum, centered=centered)
        super().__init__(params, defaults)

    def _check(self, group):
        for name in ("lr", "alpha", "eps", "weight_decay", "momentum"):
            _require("RMSprop", name, group[name], _is_real(group[name]) and group[name] >= 0, "a number >= 0")

    def _init_state(self, param, group):
        state = {"step": 0, "square_avg": np.zeros_like(param._data)}
        if group["momentum"] > 0:
            state["momentum_buffer"] = np.zeros_like(param._data)
        if group["centered"]:
            state["grad_avg"] = np.zeros_like(param._data)
        return state

    def _update(self, param, grad, state, group, buf):
        alpha = group["alpha"]
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * param
        state["step"] += 1
        square_avg = state["square_avg"]
        square_avg *= alpha
        np.multiply(grad, grad, out=buf)
        buf *= 1 - alpha
        square_avg += buf
        if group["centered"]:
            grad_avg = state["grad_avg"]
            grad_avg *= alpha
            np.multiply(grad, 1 - alpha, out=buf)
            grad_avg += buf
            np.multiply(grad_avg, grad_avg, out=buf)
            np.subtract(square_avg, buf, out=buf)
            avg = np.sqrt(buf, out=buf)
        else:
            avg = np.sqrt(square_avg, out=buf)
        avg += group["eps"]
        step = np.divide(grad, avg, out=buf)
        if group["momentum"] > 0:
            momentum_buffer = state["momentum_buffer"]
            momentum_buffer *= group["momentum"]
            momentum_buffer += step
            step = np.multiply(momentum_buffer, group["lr"], out=buf)
        else:
            step *= group["lr"]
        param -= step
