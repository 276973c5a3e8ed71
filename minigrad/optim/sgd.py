"""Stochastic gradient descent with momentum, as ``torch.optim.SGD``."""
from __future__ import annotations

import numpy as np

from .optimizer import Optimizer, _is_real, _require


class SGD(Optimizer):
    """SGD with optional (Nesterov) momentum and L2 weight decay: PyTorch's documented algorithm.

    Per step, with g the gradient::

        g = g + weight_decay * p                          (if weight_decay)
        b = g at the first step, else momentum * b + (1 - dampening) * g   (if momentum)
        g = g + momentum * b if nesterov else b           (if momentum)
        p = p - lr * g

    State per parameter: "momentum_buffer" (None until the first step; only with momentum).
    Parameters keep their dtype.  Raises ValueError for a negative option, or
    ``nesterov`` without momentum or with dampening.
    """

    def __init__(self, params, lr: float, momentum: float = 0, dampening: float = 0, nesterov: bool = False,
                 weight_decay: float = 0):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=weight_decay)
        super().__init__(params, defaults)

    def _check(self, group):
        for name in ("lr", "momentum", "weight_decay"):
            _require("SGD", name, group[name], _is_real(group[name]) and group[name] >= 0, "a number >= 0")
        _require("SGD", "dampening", group["dampening"], _is_real(group["dampening"]), "a number")
        nesterov_ok = not group["nesterov"] or (group["momentum"] > 0 and group["dampening"] == 0)
        _require("SGD", "nesterov", group["nesterov"], nesterov_ok, "momentum > 0 and dampening == 0 with nesterov")

    def _init_state(self, param, group):
        return {"momentum_buffer": None} if group["momentum"] else {}

    def _update(self, param, grad, state, group, buf):
        lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
        if weight_decay:
            grad = grad + weight_decay * param
        if momentum:
            b = state["momentum_buffer"]
            if b is None:  # PyTorch starts the buffer at the first gradient, undamped
                b = state["momentum_buffer"] = grad.astype(param.dtype, copy=True)
            else:
                b *= momentum
                np.multiply(grad, 1 - group["dampening"], out=buf)
                b += buf
            if group["nesterov"]:
                np.multiply(b, momentum, out=buf)
                buf += grad
                grad = buf
            else:
                grad = b
        np.multiply(grad, lr, out=buf)
        param -= buf
