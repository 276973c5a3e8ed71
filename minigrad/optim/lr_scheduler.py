"""Learning-rate schedules, as ``torch.optim.lr_scheduler``, in PyTorch's closed forms.

Call ``scheduler.step()`` once per epoch, after ``optimizer.step()``.  The
schedule sets ``group["lr"]`` of every parameter group from its base lr (the
lr when the scheduler was made) and the epoch count ``last_epoch`` (0 at
construction), so the lr depends only on the epoch, never on rounding
accumulated over steps.
"""
from __future__ import annotations

import math
import numbers

from .optimizer import Optimizer

__all__ = ["LRScheduler", "StepLR", "ExponentialLR", "CosineAnnealingLR"]


class LRScheduler:
    """Base of the schedules: ``step()``, ``get_last_lr()``, ``state_dict()``, ``load_state_dict()``.

    Subclasses give ``_lr(base_lr, epoch)``.  Raises TypeError if ``optimizer``
    is not a minigrad Optimizer.
    """

    _options: tuple = ()  # hyper-parameters saved in state_dict()

    def __init__(self, optimizer: Optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: expected a minigrad.optim Optimizer; got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.last_epoch = 0
        self._last_lr = list(self.base_lrs)

    def _lr(self, base_lr: float, epoch: int) -> float:
        raise NotImplementedError

    def step(self):
        """Advance one epoch and set every group's lr for it."""
        self.last_epoch += 1
        self._last_lr = [self._lr(base, self.last_epoch) for base in self.base_lrs]
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr

    def get_last_lr(self) -> list:
        """The lr of each group as last set by this scheduler (the base lrs before any step)."""
        return list(self._last_lr)

    def state_dict(self) -> dict:
        """``{"base_lrs", "last_epoch", "_last_lr", and the options}``: plain numbers and lists."""
        state = {"base_lrs": list(self.base_lrs), "last_epoch": self.last_epoch, "_last_lr": list(self._last_lr)}
        state.update((name, getattr(self, name)) for name in self._options)
        return state

    def load_state_dict(self, state_dict: dict):
        """Restore what ``state_dict()`` saved.

        As in PyTorch, the optimizer's lrs are not touched: they come back with
        ``optimizer.load_state_dict``.  Raises ValueError naming missing or
        unexpected keys, or a number of base lrs that differs from the groups'.
        """
        where = f"{type(self).__name__}.load_state_dict"
        expected = set(self.state_dict())
        if set(state_dict) != expected:
            raise ValueError(
                f"{where}: missing keys {sorted(expected - set(state_dict))}, "
                f"unexpected keys {sorted(set(state_dict) - expected)}"
            )
        if len(state_dict["base_lrs"]) != len(self.optimizer.param_groups):
            raise ValueError(
                f"{where}: {len(state_dict['base_lrs'])} base lrs for {len(self.optimizer.param_groups)} parameter groups"
            )
        self.base_lrs = list(state_dict["base_lrs"])
        self.last_epoch = int(state_dict["last_epoch"])
        self._last_lr = list(state_dict["_last_lr"])
        for name in self._options:
            setattr(self, name, state_dict[name])

    def __repr__(self):
        options = "".join(f", {name}={getattr(self, name)}" for name in self._options)
        return f"{type(self).__name__}(last_epoch={self.last_epoch}{options})"


def _positive_int(value, name: str, where: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{where}: {name} must be a positive integer; got {value!r}")
    return int(value)


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (epoch // step_size): decay by ``gamma`` every ``step_size`` epochs.

    As ``torch.optim.lr_scheduler.StepLR``.  Raises ValueError unless ``step_size``
    is a positive integer.
    """

    _options = ("step_size", "gamma")

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        self.step_size = _positive_int(step_size, "step_size", "StepLR")
        self.gamma = gamma
        super().__init__(optimizer)

    def _lr(self, base_lr, epoch):
        return base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialLR(LRScheduler):
    """lr = base_lr * gamma ** epoch, as ``torch.optim.lr_scheduler.ExponentialLR``."""

    _options = ("gamma",)

    def __init__(self, optimizer: Optimizer, gamma: float):
        self.gamma = gamma
        super().__init__(optimizer)

    def _lr(self, base_lr, epoch):
        return base_lr * self.gamma**epoch


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2 (Loshchilov & Hutter 2017, SGDR).

    The closed form of ``torch.optim.lr_scheduler.CosineAnnealingLR``'s docs: it
    reaches ``eta_min`` at ``T_max`` and, like PyTorch's, rises again after it.
    Raises ValueError unless ``T_max`` is a positive integer.
    """

    _options = ("T_max", "eta_min")

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0):  # noqa: N803 - PyTorch's name
        self.T_max = _positive_int(T_max, "T_max", "CosineAnnealingLR")
        self.eta_min = eta_min
        super().__init__(optimizer)

    def _lr(self, base_lr, epoch):
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2
