"""The Optimizer base class: parameter groups, per-parameter state, zero_grad and state_dict.

As ``torch.optim.Optimizer``.  Subclasses give ``_check(group)`` (validate the
hyper-parameters), ``_init_state(param, group)`` (a fresh state, allocated at
the parameter's first update) and ``_update(param, grad, state, group, buf)``,
which changes the arrays ``param`` and ``state`` in place with a few NumPy
ufunc calls; ``buf`` is a scratch array shaped like ``param``, so an update
allocates nothing (except ``grad + weight_decay * param`` when weight decay is on).
"""
from __future__ import annotations

import numbers

import numpy as np

from ..modes import enable_grad
from ..tensor import Tensor


def _require(where: str, name: str, value, ok: bool, expected: str):
    """Raise a ValueError naming the optimizer and the option unless ``ok``."""
    if not ok:
        raise ValueError(f"{where}: invalid {name} {value!r}; expected {expected}")


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class Optimizer:
    """Base of the optimizers: updates parameters in place from their ``.grad``.

    Args:
        params: an iterable of Parameters (float tensors, leaves), or of dicts
            (parameter groups) ``{"params": [...], "lr": ..., ...}`` whose
            options override the defaults, as PyTorch.
        defaults: the default options of every group.

    Attributes:
        param_groups (list of dict): each with "params" and every option; a
            scheduler or the user may change an option (e.g. "lr") between steps.
        state (dict): per-parameter state (keyed by the parameter), created lazily.

    Raises:
        TypeError: ``params`` is a single tensor or holds something other than tensors.
        ValueError: an empty parameter list, a non-leaf or non-float tensor, a
            parameter in two groups, or an invalid option.
    """

    def __init__(self, params, defaults: dict):
        where = type(self).__name__
        if isinstance(params, (Tensor, dict)):
            raise TypeError(
                f"{where}: params must be an iterable of Parameters or of dicts (parameter groups); "
                f"got a single {type(params).__name__} (wrap it in a list)"
            )
        self.defaults = dict(defaults)
        self.param_groups: list[dict] = []
        self.state: dict = {}
        self._buffers: dict = {}  # scratch arrays, one per parameter; not part of the state
        groups = list(params)
        if not groups:
            raise ValueError(f"{where}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, param_group: dict):
        """Add a group ``{"params": [...], option: value, ...}``; missing options take the defaults."""
        where = type(self).__name__
        if not isinstance(param_group, dict) or "params" not in param_group:
            raise TypeError(f"{where}: a parameter group must be a dict with a 'params' entry; got {param_group!r}")
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"{where}: can only optimize Tensors (Parameters); got {type(p).__name__}")
            if p._entry is not None:
                raise ValueError(f"{where}: cannot optimize a non-leaf tensor of shape {p.shape} (an op's output)")
            if p.dtype.kind != "f":
                raise ValueError(f"{where}: can only optimize floating-point tensors; got dtype {p.dtype}")
        seen = {id(p) for group in self.param_groups for p in group["params"]}
        if len({id(p) for p in params}) != len(params) or any(id(p) in seen for p in params):
            raise ValueError(f"{where}: some parameters appear more than once (in one or in several groups)")
        group = {**self.defaults, **param_group, "params": params}
        self._check(group)
        self.param_groups.append(group)

    # ----------------------------------------------------------------- the update
    def _check(self, group: dict):
        raise NotImplementedError

    def _init_state(self, param: Tensor, group: dict) -> dict:
        raise NotImplementedError

    def _update(self, param: np.ndarray, grad: np.ndarray, state: dict, group: dict, buf: np.ndarray):
        raise NotImplementedError

    def step(self, closure=None):
        """Update every parameter that has a ``.grad`` (those with ``grad is None`` are skipped).

        ``closure``, if given, re-evaluates the model and returns the loss (run
        with grad enabled before the update); ``step`` returns that loss.
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state.get(p)
                if state is None:
                    state = self.state[p] = self._init_state(p, group)
                buf = self._buffers.get(p)
                if buf is None:
                    buf = self._buffers[p] = np.empty_like(p._data)
                self._update(p._data, p.grad._data, state, group, buf)
                p._mark_changed()  # graphs recorded before the step now refuse to backward
        return loss

    def zero_grad(self, set_to_none: bool = True):
        """Reset the gradients: to None (the default, as PyTorch 2) or to zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad._data.fill(0)

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """The optimizer's state as nested dicts, lists, numbers and array copies (``minigrad.save`` writes it).

        As PyTorch's: ``{"state": {"0": {"step": 3, "exp_avg": array, ...}, ...},
        "param_groups": [{"lr": ..., ..., "params": [0, 1]}, ...]}``, parameters
        numbered in group order; the keys of "state" are those numbers as strings
        (checkpoints need str keys).  Only parameters already updated have state.
        """
        groups, index = [], {}
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p in self.state:
                    state[str(index[id(p)])] = {
                        k: v.copy() if isinstance(v, np.ndarray) else v for k, v in self.state[p].items()
                    }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict):
        """Restore options and state saved by ``state_dict()`` (from an optimizer of the same parameters).

        Arrays are copied and cast to each parameter's dtype, so a resumed run
        continues bit for bit.  State keys may be ints or strings.  Everything is
        checked before anything changes.

        Nothing read is trusted: a file may have been changed.

        Raises:
            ValueError: missing "state"/"param_groups", a different number of groups or of
                parameters in a group, parameters not numbered in order as ``state_dict()``
                numbers them (a permuted list would swap moments between tensors of one shape),
                state for an unknown parameter, state entries that this optimizer (with the
                saved options) does not use or lacks, a count (``step``) that is not a whole
                number from 0 to 2**53, or an array whose shape differs from its parameter's
                (naming the key and both shapes) or that holds NaN or Inf.
        """
        where = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= state_dict.keys():
            raise ValueError(f"{where}: expected a dict with 'state' and 'param_groups' (from state_dict())")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"{where}: the state dict has {len(saved_groups)} parameter groups, the optimizer {len(self.param_groups)}"
            )
        new_groups, owner = [], {}  # owner: saved index -> (param, its new group)
        for k, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"{where}: parameter group {k} has {len(saved['params'])} parameters in the state dict, "
                    f"{len(group['params'])} in the optimizer"
                )
            numbers = list(range(len(owner), len(owner) + len(group["params"])))
            if list(saved["params"]) != numbers or not all(type(i) is int for i in saved["params"]):
                raise ValueError(f"{where}: parameter group {k} lists parameters {saved['params']!r}; "
                                 f"state_dict() numbers them {numbers} in order")
            new_group = {**{key: v for key, v in saved.items() if key != "params"}, "params": group["params"]}
            self._check(new_group)
            new_groups.append(new_group)
            owner.update((int(i), (p, new_group)) for i, p in zip(saved["params"], group["params"]))
        new_state = {}
        for key, saved in state_dict["state"].items():
            if int(key) not in owner:
                raise ValueError(f"{where}: the state dict has state for parameter {key}, which no group lists")
            param, group = owner[int(key)]
            expected = self._init_state(param, group)
            if saved.keys() != expected.keys():
                raise ValueError(
                    f"{where}: state[{key!r}] has entries {sorted(saved)}, {type(self).__name__} with these "
                    f"options uses {sorted(expected)}"
                )
            state = {}
            for name, value in saved.items():
                if isinstance(expected[name], np.ndarray) or (expected[name] is None and value is not None):
                    value = np.asarray(value)
                    if value.shape != param.shape:
                        raise ValueError(
                            f"{where}: state[{key!r}][{name!r}] has shape {value.shape}, "
                            f"its parameter has shape {param.shape}"
                        )
                    value = value.astype(param.dtype, copy=True)
                    if not np.isfinite(value).all():
                        raise ValueError(f"{where}: state[{key!r}][{name!r}] holds NaN or Inf")
                elif type(expected[name]) is int and (type(value) is not int or not 0 <= value <= 2**53):
                    raise ValueError(f"{where}: state[{key!r}][{name!r}] is {value!r}; expected a whole number "
                                     "from 0 to 2**53")
                state[name] = value
            new_state[param] = state
        for group, new_group in zip(self.param_groups, new_groups):
            group.clear()
            group.update(new_group)
        self.state = new_state

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for k, group in enumerate(self.param_groups):
            options = ", ".join(f"{key}={v}" for key, v in group.items() if key != "params")
            lines.append(f"  group {k}: {len(group['params'])} parameters, {options}")
        return "\n".join(lines) + "\n)"
