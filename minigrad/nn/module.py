"""Module and Parameter: PyTorch's ``nn.Module`` contract, on minigrad tensors."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..tensor import Tensor


class Parameter(Tensor):
    """A leaf tensor that requires grad and registers itself on the Module it is assigned to.

    ``Parameter(data, requires_grad=True, dtype=None)``; ``data`` is copied.
    Raises TypeError for non-floating data (only floats can require grad).
    """

    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True, dtype=None):
        super().__init__(data, requires_grad=requires_grad, dtype=dtype)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class Module:
    """Base class of layers: parameters and sub-modules assigned as attributes are registered.

    As ``torch.nn.Module``: ``__call__`` runs ``forward``; ``parameters()``,
    ``named_parameters()`` (dotted names such as ``encoder.weight_ih_l0``),
    ``children()``, ``modules()``, ``zero_grad()``, ``train()``/``eval()``,
    ``state_dict()`` and ``load_state_dict()``.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # ----------------------------------------------------------------- registration
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        # a re-assigned name keeps its place in the registry, as in PyTorch
        if isinstance(value, Parameter):
            self._modules.pop(name, None)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._parameters.pop(name, None)
            self._modules[name] = value
        else:
            self._parameters.pop(name, None)
            self._modules.pop(name, None)
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None):
        """Register ``param`` under ``name`` (None records an absent optional parameter such as a bias)."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: {name!r} must be a Parameter or None; got {type(param).__name__}")
        setattr(self, name, param)  # __setattr__ also unregisters a previous parameter of that name

    # ----------------------------------------------------------------- calling
    def forward(self, *args, **kwargs):
        """The computation; subclasses define it and are called as ``module(*args)``."""
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ----------------------------------------------------------------- traversal
    def named_children(self):
        """(attribute name, sub-module) pairs of the direct sub-modules, in assignment order."""
        yield from self._modules.items()

    def children(self):
        """Direct sub-modules, in assignment order."""
        for _, module in self.named_children():
            yield module

    def named_modules(self, prefix: str = ""):
        """(dotted name, module) pairs of this module ("" or ``prefix``) and all descendants, depth first."""
        yield prefix, self
        for name, module in self._modules.items():
            yield from module.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        """This module and all its descendants, depth first."""
        for _, module in self.named_modules():
            yield module

    def generators(self) -> list:
        """The ``numpy.random.Generator`` objects of this module and its descendants (dropout's masks
        come from them), each once: what ``minigrad.checkpoint`` and a compiled loop restore."""
        found = {}
        for module in self.modules():
            for value in vars(module).values():
                if isinstance(value, np.random.Generator):
                    found[id(value)] = value
        return list(found.values())

    def named_parameters(self, prefix: str = ""):
        """(dotted name, Parameter) pairs, each parameter once, in registration order."""
        seen = set()
        for module_name, module in self.named_modules(prefix):
            for name, param in module._parameters.items():
                if id(param) not in seen:
                    seen.add(id(param))
                    yield (f"{module_name}.{name}" if module_name else name), param

    def parameters(self):
        """All parameters (each once), in registration order: what an optimizer takes."""
        for _, param in self.named_parameters():
            yield param

    def num_parameters(self) -> int:
        """Total number of scalar parameters."""
        return sum(p.size for p in self.parameters())

    def zero_grad(self):
        """Reset every parameter's ``.grad`` to None (PyTorch's default ``set_to_none=True``)."""
        for param in self.parameters():
            param.grad = None

    def train(self, mode: bool = True):
        """Set training mode (dropout active) on this module and all descendants; returns self."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self):
        """Set evaluation mode; returns self."""
        return self.train(False)

    # ----------------------------------------------------------------- state
    def state_dict(self) -> OrderedDict:
        """Ordered ``{dotted name: np.ndarray}`` (copies) of every parameter."""
        return OrderedDict((name, param.data.copy()) for name, param in self.named_parameters())

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy arrays (NumPy arrays, Tensors, or anything ``np.asarray`` takes) into the parameters.

        A PyTorch ``state_dict`` converted with ``{k: v.numpy() for k, v in sd.items()}`` loads
        unchanged.  Values are cast to each parameter's dtype.

        Returns ``(missing_keys, unexpected_keys)`` as PyTorch does.

        Raises:
            KeyError: with ``strict=True``, names the missing and unexpected keys.
            ValueError: a shape mismatch, naming the key and both shapes (always checked).
        """
        params = dict(self.named_parameters())
        missing = [k for k in params if k not in state_dict]
        unexpected = [k for k in state_dict if k not in params]
        if strict and (missing or unexpected):
            raise KeyError(
                f"load_state_dict for {type(self).__name__}: missing keys {missing}, unexpected keys {unexpected}"
            )
        arrays = {}
        for name, param in params.items():
            if name in state_dict:
                value = np.asarray(state_dict[name])
                if value.shape != param.shape:
                    raise ValueError(
                        f"load_state_dict for {type(self).__name__}: size mismatch for {name}: "
                        f"checkpoint has shape {value.shape}, the model has {param.shape}"
                    )
                arrays[name] = value
        for name, value in arrays.items():  # only once every shape has been checked
            params[name].data = value.astype(params[name].dtype, copy=True)
        return missing, unexpected

    # ----------------------------------------------------------------- display
    def extra_repr(self) -> str:
        """Text shown inside this module's ``repr`` parentheses (e.g. sizes); override it."""
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, module in self._modules.items():
            child = repr(module).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child}")
        return "\n".join(lines) + (")" if len(lines) == 1 else "\n)")


class ModuleList(Module):
    """A list of sub-modules, registered under their index ("0", "1", ...), as ``torch.nn.ModuleList``."""

    def __init__(self, modules=()):
        super().__init__()
        for module in modules:
            self.append(module)

    def append(self, module: Module):
        """Register ``module`` under the next index; returns self. Raises TypeError for a non-Module."""
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList.append: expected a Module; got {type(module).__name__}")
        setattr(self, str(len(self._modules)), module)
        return self

    def __getitem__(self, index):
        items = list(self._modules.values())
        return ModuleList(items[index]) if isinstance(index, slice) else items[index]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())
