"""Adagrad, as ``torch.optim.Adagrad``."""
from __future__ import annotations

import numpy as np

from .optimizer import Optimizer, _is_real, _require


class Adagrad(Optimizer):
    """Adagrad (Duchi et al. 2011), the optimizer of Karpathy's min-char-rnn: PyTorch's documented algorithm.

    Per step t = 1, 2, ..., with g the gradient::

        g = g + weight_decay * p                      (if weight_decay)
        clr = lr / (1 + (t - 1) * lr_decay)
        sum = sum + g * g                             (sum starts at initial_accumulator_value)
        p = p - clr * g / (sqrt(sum) + eps)

    State per parameter: "step" (int) and "sum" (an array of the parameter's dtype).
    Raises ValueError for any negative option.
    """

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0, weight_decay: float = 0,
                 initial_accumulator_value: float = 0, eps: float = 1e-10):
        defaults = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, eps=eps)
        super().__init__(params, defaults)

    def _check(self, group):
        for name in ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"):
            _require("Adagrad", name, group[name], _is_real(group[name]) and group[name] >= 0, "a number >= 0")

    def _init_state(self, param, group):
        return {"step": 0, "sum": np.full_like(param._data, group["initial_accumulator_value"])}

    def _update(self, param, grad, state, group, buf):
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * param
        state["step"] = t = state["step"] + 1
        clr = group["lr"] / (1 + (t - 1) * group["lr_decay"])
        total = state["sum"]
        np.multiply(grad, grad, out=buf)
        total += buf
        denom = np.sqrt(total, out=buf)
        denom += group["eps"]
        step = np.divide(grad, denom, out=buf)
        step *= clr
        param -= step
