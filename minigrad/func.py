"""Function transforms with ``torch.func``'s names and signatures: grad, vjp, jvp, Jacobians, Hessians.

``jvp`` is real forward mode: the tangents are pushed through each op by its JVP rule, in the same
pass as the primal values and with no tape (see :class:`minigrad.ForwardLevel`).  The
reverse-mode transforms run :func:`minigrad.grad`.  All of them compose (``grad(grad(f))``,
``jacfwd(jacrev(f))``, ``jvp`` of a ``grad``), because every rule is written with minigrad ops.

``f`` takes Tensors (an argument differentiated by ``grad``/``vjp``/``jacrev`` may also be a dict,
list or tuple of Tensors, e.g. the parameters given to ``minigrad.nn.utils.functional_call``) and
returns a Tensor, or a tuple, list or dict of Tensors where noted.  Where an output does not depend
on an input, its gradient, tangent or Jacobian block is zeros, as ``torch.func`` gives.
"""
from __future__ import annotations

import numpy as np

from . import autograd, ops
from .modes import MODE, ForwardLevel
from .compiler import flatten, unflatten
from .tensor import Tensor

__all__ = ["grad", "grad_and_value", "vjp", "jvp", "jacrev", "jacfwd", "hessian", "hvp", "linearize"]


# --------------------------------------------------------------------------- helpers
def _argnums(argnums, n: int, where: str) -> tuple:
    nums = argnums if isinstance(argnums, tuple) else (argnums,)
    if not nums or any(not isinstance(a, int) or isinstance(a, bool) for a in nums):
        raise TypeError(f"{where}: argnums must be an int or a non-empty tuple of ints; got {argnums!r}")
    for a in nums:
        if not -n <= a < n:
            raise ValueError(f"{where}: argnums {a} is out of range for a function called with {n} positional "
                             f"argument{'s' if n != 1 else ''}")
    return tuple(a % n for a in nums)


def _differentiable(x, where: str) -> Tensor:
    """``x`` as a tensor that requires grad: itself if it does (an outer transform's input), else a
    leaf copy that keeps the tangents ``x`` has at the active forward levels."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{where}: expected Tensor arguments to differentiate; got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"{where}: can only differentiate with respect to floating-point tensors; got {x.dtype}")
    if x._requires_grad:
        return x
    leaf = Tensor._from_array(x._data)
    leaf._requires_grad = True
    for level in MODE.get().forward:
        if x in level.tangents:
            level.tangents[leaf] = level.tangents[x]
    return leaf


def _zeros_like(x: Tensor) -> Tensor:
    return Tensor._from_array(np.zeros(x.shape, x.dtype))


class _Inputs:
    """The arguments of ``f`` with those in ``argnums`` replaced by differentiable leaves (nests allowed)."""

    def __init__(self, args, argnums, where: str):
        self.args, self.leaves, self.structures = list(args), [], []
        # an outer transform (or the caller) differentiates the result: build the graph of ours
        self.outer = any(leaf._requires_grad for a in argnums for leaf in flatten(self.args[a])[0])
        for a in argnums:
            leaves, structure = flatten(self.args[a])
            leaves = [_differentiable(leaf, where) for leaf in leaves]
            self.args[a] = unflatten(structure, leaves)
            self.leaves.append(leaves)
            self.structures.append(structure)

    def cotangents(self, outputs, seeds) -> list:
        """Per argument in argnums, its cotangent (nested as the argument), from reverse mode."""
        flat = [leaf for leaves in self.leaves for leaf in leaves]
        live = [k for k, out in enumerate(outputs) if out._requires_grad]
        if live:
            mode = MODE.get()
            create_graph = mode.grad_enabled and (self.outer or bool(mode.forward)
                                                  or any(s._requires_grad for s in seeds))
            grads = autograd.grad([outputs[k] for k in live], flat, [seeds[k] for k in live], retain_graph=True,
                                  create_graph=create_graph, allow_unused=True)
        else:
            grads = [None] * len(flat)
        grads = [_zeros_like(x) if g is None else g for g, x in zip(grads, flat)]
        result, start = [], 0
        for leaves, structure in zip(self.leaves, self.structures):
            result.append(unflatten(structure, grads[start:start + len(leaves)]))
            start += len(leaves)
        return result


def _call(f, args):
    previous = MODE.get()
    MODE.set(previous.replace(grad_enabled=True))
    try:
        return f(*args)
    finally:
        MODE.set(previous)


def _as_tensors(values, like: list, where: str, what: str) -> list:
    """``values`` as Tensors with the shapes and dtypes of ``like`` (a clear error otherwise)."""
    out = []
    for k, (v, x) in enumerate(zip(values, like)):
        v = v if isinstance(v, Tensor) else Tensor._from_array(np.asarray(v, dtype=x.dtype))
        if v.shape != x.shape or v.dtype != x.dtype:
            raise ValueError(f"{where}: {what} {k} has shape {v.shape} and dtype {v.dtype}; expected the shape "
                             f"{x.shape} and dtype {x.dtype} of its primal")
        out.append(v)
    return out


# --------------------------------------------------------------------------- reverse mode
def grad_and_value(f, argnums=0, has_aux: bool = False):
    """``f``'s gradient with respect to the arguments ``argnums``, and its value (``torch.func.grad_and_value``).

    ``f`` returns a scalar Tensor (one element), or ``(scalar, aux)`` with ``has_aux=True``.  The
    returned function gives ``(gradient, value)`` or ``(gradient, (value, aux))``; the gradient is
    shaped (and nested) as the argument, a tuple of them when ``argnums`` is a tuple.

    Raises:
        ValueError: ``argnums`` out of range; RuntimeError: ``f`` returns a non-scalar or a non-Tensor.
    """
    def wrapper(*args):
        nums = _argnums(argnums, len(args), "grad")
        inputs = _Inputs(args, nums, "grad")
        result = _call(f, inputs.args)
        value, aux = (result if has_aux and isinstance(result, tuple) and len(result) == 2 else (result, None))
        if has_aux and not (isinstance(result, tuple) and len(result) == 2):
            raise RuntimeError("grad_and_value(f)(*args): with has_aux=True, f must return a pair (output, aux)")
        if not isinstance(value, Tensor) or value.size != 1:
            got = f"a tensor of shape {value.shape}" if isinstance(value, Tensor) else type(value).__name__
            raise RuntimeError(f"grad_and_value(f)(*args): expected f(*args) to return a scalar Tensor, got {got}")
        seed = Tensor._from_array(np.ones(value.shape, value.dtype))
        grads = inputs.cotangents([value], [seed])
        grads = grads[0] if isinstance(argnums, int) else tuple(grads)
        return grads, ((value, aux) if has_aux else value)
    return wrapper


def grad(f, argnums=0, has_aux: bool = False):
    """The gradient of scalar-valued ``f`` (``torch.func.grad``): as :func:`grad_and_value`, without the value
    (with ``has_aux=True`` the returned function gives ``(gradient, aux)``)."""
    def wrapper(*args):
        grads, value = grad_and_value(f, argnums, has_aux)(*args)
        return (grads, value[1]) if has_aux else grads
    return wrapper


def vjp(f, *primals, has_aux: bool = False):
    """``(output, vjp_fn)`` (``torch.func.vjp``): ``vjp_fn(cotangents)`` returns one cotangent per primal.

    ``output`` is ``f(*primals)`` (a Tensor or a nest of them); ``cotangents`` is nested as it.
    With ``has_aux=True``, ``f`` returns ``(output, aux)`` and this returns ``(output, vjp_fn, aux)``.
    """
    inputs = _Inputs(primals, tuple(range(len(primals))), "vjp")
    result = _call(f, inputs.args)
    output, aux = result if has_aux else (result, None)
    out_leaves, structure = flatten(output)

    def vjp_fn(cotangents):
        seeds, seed_structure = flatten(cotangents)
        if seed_structure != structure:
            raise ValueError("vjp: the cotangents must be nested as the output")
        return tuple(inputs.cotangents(out_leaves, _as_tensors(seeds, out_leaves, "vjp", "cotangent")))

    return (output, vjp_fn, aux) if has_aux else (output, vjp_fn)


def jacrev(f, argnums=0):
    """The Jacobian of ``f`` by reverse mode, one VJP per output element (``torch.func.jacrev``).

    ``f`` returns one Tensor y; the Jacobian with respect to a Tensor argument x has shape
    ``y.shape + x.shape`` (a tuple of them for a tuple ``argnums``).
    """
    def wrapper(*args):
        nums = _argnums(argnums, len(args), "jacrev")
        inputs = _Inputs(args, nums, "jacrev")
        out = _call(f, inputs.args)
        if not isinstance(out, Tensor):
            raise TypeError(f"jacrev: f must return a Tensor; got {type(out).__name__}")
        rows = []
        for k in range(out.size):
            basis = np.zeros(out.size, out.dtype)
            basis[k] = 1
            rows.append(inputs.cotangents([out], [Tensor._from_array(basis.reshape(out.shape))]))
        jacobians = []
        for j, a in enumerate(nums):
            x = inputs.leaves[j][0]
            if len(inputs.leaves[j]) != 1:
                raise TypeError("jacrev: the arguments differentiated must be Tensors (not nests)")
            if not rows:
                jacobians.append(_zeros_like(Tensor._from_array(np.zeros(out.shape + x.shape, x.dtype))))
                continue
            jacobians.append(ops.reshape(ops.stack([row[j] for row in rows]), out.shape + x.shape))
        return jacobians[0] if isinstance(argnums, int) else tuple(jacobians)
    return wrapper


# --------------------------------------------------------------------------- forward mode
def jvp(f, primals, tangents):
    """``(output, jvp_out)`` (``torch.func.jvp``): ``f(*primals)`` and its directional derivative along
    ``tangents``, by forward mode in one pass (no tape).

    ``primals`` and ``tangents`` are tuples (or lists) of Tensors of equal shapes and dtypes;
    ``output`` and ``jvp_out`` are nested alike.

    Raises:
        ValueError: different numbers of primals and tangents, or a tangent's shape or dtype differs.
        TypeError: a primal is not a floating-point Tensor.
    """
    primals, tangents = tuple(primals), tuple(tangents)
    if len(primals) != len(tangents):
        raise ValueError(f"jvp: got {len(primals)} primals and {len(tangents)} tangents; expected as many of each")
    for k, x in enumerate(primals):
        if not isinstance(x, Tensor) or x.dtype.kind != "f":
            raise TypeError(f"jvp: primal {k} must be a floating-point Tensor; got "
                            f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}")
    tangents = _as_tensors(tangents, primals, "jvp", "tangent")
    level, previous = ForwardLevel(), MODE.get()
    inputs = []
    for x, t in zip(primals, tangents):
        if x in level.tangents:  # the same tensor twice: each occurrence its own tangent
            x = x * 1
        level.tangents[x] = t
        inputs.append(x)
    MODE.set(previous.replace(forward=previous.forward + (level,)))
    try:
        output = f(*inputs)
    finally:
        MODE.set(previous)
    leaves, structure = flatten(output)
    pushed = [level.tangents.get(y) for y in leaves]
    return output, unflatten(structure, [_zeros_like(y) if t is None else t for t, y in zip(pushed, leaves)])


def linearize(f, *primals):
    """``(output, jvp_fn)`` (``torch.func.linearize``): ``jvp_fn(*tangents)`` is the JVP of ``f`` at ``primals``.

    Each ``jvp_fn`` call runs forward mode again (JAX keeps the linearized program instead; the
    values are the same).
    """
    output = f(*primals)
    return output, lambda *tangents: jvp(f, primals, tangents)[1]


def jacfwd(f, argnums=0):
    """The Jacobian of ``f`` by forward mode, one JVP per input element (``torch.func.jacfwd``): shape
    ``y.shape + x.shape``, a tuple for a tuple ``argnums``.  Cheaper than :func:`jacrev` when the
    inputs are few and the outputs many."""
    def wrapper(*args):
        nums = _argnums(argnums, len(args), "jacfwd")
        jacobians = []
        for a in nums:
            x = args[a]
            if not isinstance(x, Tensor):
                raise TypeError(f"jacfwd: argument {a} must be a Tensor; got {type(x).__name__}")

            def along(xa, a=a):
                return f(*args[:a], xa, *args[a + 1:])

            columns, out = [], None
            for k in range(x.size):
                basis = np.zeros(x.size, x.dtype)
                basis[k] = 1
                out, column = jvp(along, (x,), (Tensor._from_array(basis.reshape(x.shape)),))
                columns.append(column)
            if not columns:
                out = along(x)
                jacobians.append(Tensor._from_array(np.zeros(out.shape + x.shape, out.dtype)))
                continue
            stacked = ops.stack(columns, axis=-1)  # out.shape + (x.size,)
            jacobians.append(ops.reshape(stacked, out.shape + x.shape))
        return jacobians[0] if isinstance(argnums, int) else tuple(jacobians)
    return wrapper


def hessian(f, argnums=0):
    """The Hessian of scalar ``f`` as ``jacfwd(jacrev(f, argnums), argnums)``, as ``torch.func.hessian``:
    shape ``x.shape + x.shape``."""
    return jacfwd(jacrev(f, argnums), argnums)


def hvp(f, primals, tangents):
    """``(output, hvp_out)`` as ``torch.autograd.functional.hvp``: the value of scalar ``f`` at ``primals``
    (detached) and the Hessian-vector product H @ tangents, by forward mode over reverse mode.

    ``primals`` and ``tangents``: a Tensor each, or tuples of them; ``hvp_out`` matches ``primals``.
    """
    single = isinstance(primals, Tensor)
    primals = (primals,) if single else tuple(primals)
    tangents = (tangents,) if isinstance(tangents, Tensor) else tuple(tangents)
    values = []

    def gradient(*xs):
        grads, value = grad_and_value(f, tuple(range(len(xs))))(*xs)
        values.append(value)
        return grads

    _, products = jvp(gradient, primals, tangents)
    return values[0].detach(), (products[0] if single else tuple(products))
