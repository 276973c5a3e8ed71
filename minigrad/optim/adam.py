"""Adam and AdamW, as ``torch.optim.Adam`` / ``torch.optim.AdamW``."""
from __future__ import annotations

import math

import numpy as np

from .optimizer import Optimizer, _is_real, _require


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with L2 weight decay and AMSGrad: PyTorch's documented algorithm.

    Per step t = 1, 2, ..., with g the gradient::

        g = g + weight_decay * p                     (if weight_decay)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        v_max = max(v_max, v); use v_max for v       (if amsgrad)
        denom = sqrt(v) / sqrt(1 - beta2^t) + eps
        p = p - lr / (1 - beta1^t) * m / denom

    State per parameter: "step" (int), "exp_avg", "exp_avg_sq" (and "max_exp_avg_sq"),
    arrays of the parameter's dtype.  Raises ValueError for a negative lr, eps or
    weight_decay, or betas outside [0, 1).
    """

    _decoupled = False  # AdamW decays the weights directly instead of through the gradient

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0,
                 amsgrad: bool = False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad))

    def _check(self, group):
        where = type(self).__name__
        for name in ("lr", "eps", "weight_decay"):
            _require(where, name, group[name], _is_real(group[name]) and group[name] >= 0, "a number >= 0")
        betas = group["betas"]
        ok = isinstance(betas, (tuple, list)) and len(betas) == 2 and all(_is_real(b) and 0 <= b < 1 for b in betas)
        _require(where, "betas", betas, ok, "two numbers in [0, 1)")

    def _init_state(self, param, group):
        state = {"step": 0, "exp_avg": np.zeros_like(param._data), "exp_avg_sq": np.zeros_like(param._data)}
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = np.zeros_like(param._data)
        return state

    def _update(self, param, grad, state, group, buf):
        lr, (beta1, beta2), eps, weight_decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if weight_decay:
            if self._decoupled:
                param *= 1 - lr * weight_decay
            else:
                grad = grad + weight_decay * param
        state["step"] = t = state["step"] + 1
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= beta1
        np.multiply(grad, 1 - beta1, out=buf)
        m += buf
        v *= beta2
        np.multiply(grad, grad, out=buf)
        buf *= 1 - beta2
        v += buf
        if group["amsgrad"]:
            v = np.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
        denom = np.sqrt(v, out=buf)
        denom /= math.sqrt(1 - beta2**t)
        denom += eps
        step = np.divide(m, denom, out=buf)
        step *= lr / (1 - beta1**t)
        param -= step


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019): PyTorch's documented algorithm.

    Each step first decays ``p = p * (1 - lr * weight_decay)``, then takes the
    Adam step on the plain gradient.  Default ``weight_decay=1e-2``.  State,
    dtypes and errors as :class:`Adam`.
    """

    _decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2,
                 amsgrad: bool = False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
