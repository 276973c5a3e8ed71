"""Gradient checkpointing: keep a function's inputs and outputs, recompute what is between in backward.

As ``torch.utils.checkpoint`` / ``jax.checkpoint``: memory for ``fn``'s intermediate values is spent
only while its backward runs, at the price of running ``fn`` once more (Chen et al. 2016, "Training
Deep Nets with Sublinear Memory Cost").
"""
from __future__ import annotations

import numpy as np

from . import autograd, entries
from .modes import MODE
from .compiler.pytree import flatten, split_packed, unflatten
from .compiler.runtime import Run, record_run
from .compiler.tracing import generator_states, set_generator_states, walk_back
from .extend import defvjp_argnum, primitive, trust
from .tensor import Tensor

__all__ = ["checkpoint"]


def _packed_output(*arrays, run):
    return run.packed


CHECKPOINT = trust(defvjp_argnum(primitive(_packed_output, "checkpoint"),
                                 lambda i, g, ans, inputs, run: run.cotangent(i, g)))


def _generators(fn) -> list:
    """The NumPy generators of the module ``fn`` is (or is a method of): the dropout masks' sources.
    Any object with a ``generators()`` method counts (``nn.Module`` has one), so this imports no ``nn``."""
    owner = fn if hasattr(fn, "generators") else getattr(fn, "__self__", None)
    found = getattr(owner, "generators", None)
    return list(found()) if callable(found) else []


class _Checkpoint(Run):
    """One checkpointed call: its inputs, the generator states it started from, its packed outputs."""

    def __init__(self, fn, args, tensor_positions, captured, generators, states, out_structure, out_shapes, packed):
        self.fn, self.args, self.tensor_positions, self.captured = fn, args, tensor_positions, captured
        self.generators, self.states = generators, states
        self.out_structure, self.out_shapes, self.packed = out_structure, out_shapes, packed
        self.cotangents = None

    def _rerun(self, args):
        """``fn(*args)`` recorded, with the generators as they were at the first call (the same dropout masks).

        Raises:
            RuntimeError: the outputs differ from the first call's: something ``fn`` reads was changed
                in place since (eager's graph would refuse it too, by its version check), or it draws
                from a generator it was not given.
        """
        now = generator_states(self.generators)
        set_generator_states(self.generators, self.states)
        try:
            previous = MODE.get()
            MODE.set(previous.replace(grad_enabled=True))
            try:
                outputs = flatten(self.fn(*args))[0]
            finally:
                MODE.set(previous)
        finally:
            set_generator_states(self.generators, now)
        again = np.concatenate([np.ravel(t._data) for t in outputs]) if outputs else np.empty(0)
        if again.shape != self.packed.shape or not np.array_equal(again, self.packed, equal_nan=True):
            raise RuntimeError(
                f"checkpoint: recomputing {getattr(self.fn, '__name__', 'fn')} in backward gave other outputs than "
                "its forward: a tensor it reads was changed in place since (as eager's version check refuses), or "
                "it draws from a random generator not passed as generators=")
        return outputs

    def _backward(self, packed_cotangent: np.ndarray) -> list:
        args, standins = list(self.args), []
        for k in self.tensor_positions:  # fresh leaves: the recomputed graph must not reach outside
            x = Tensor._from_array(self.args[k]._data)
            x._requires_grad = self.args[k]._requires_grad
            args[k] = x
            standins.append(x)
        outputs = self._rerun(args)
        seeds = [Tensor._from_array(s) for s in split_packed(packed_cotangent, self.out_shapes)]
        return self._gradients(outputs, standins + self.captured, seeds, create_graph=False)

    def _eager_cotangents(self, g: Tensor) -> list:  # create_graph: recompute on the inputs themselves
        outputs = self._rerun(self.args)
        inputs = [self.args[k] for k in self.tensor_positions] + self.captured
        return self._gradients(outputs, inputs, split_packed(g, self.out_shapes), create_graph=True)

    @staticmethod
    def _gradients(outputs, inputs, seeds, create_graph: bool) -> list:
        live = [k for k, out in enumerate(outputs) if out._requires_grad]
        wanted = [x for x in inputs if x._requires_grad]
        # retain_graph: the captured tensors belong to the outer graph, which backward is still walking.
        # stop_at_inputs: a captured W.T read beside W passes its cotangent to W through the outer graph,
        # so here each input gets only its own term (counting it here too would count it twice).
        grads = iter(autograd.backward_pass([outputs[k] for k in live], [seeds[k] for k in live], retain_graph=True,
                                            create_graph=create_graph, inputs=wanted, stop_at_inputs=True)
                     if live and wanted else [])
        result = []
        for x in inputs:
            g = next(grads) if x._requires_grad else None
            if g is None:
                result.append(Tensor._from_array(np.zeros(x.shape, x.dtype)) if create_graph else np.zeros(x.shape, x.dtype))
            else:
                result.append(g if create_graph else g._data)
        return result


def checkpoint(fn, *args, generators=None):
    """``fn(*args)``, keeping only the inputs and outputs: backward runs ``fn`` again for the rest.

    Args:
        fn: returns a Tensor or a nest (tuple, list, dict) of Tensors of one float dtype.
        args: Tensors (and any other arguments, passed through).  Tensors ``fn`` reads without
            taking them (a module's parameters) get their gradients too.
        generators: the ``numpy.random.Generator`` objects ``fn`` draws from, restored for the
            recomputation so dropout masks match (torch.utils.checkpoint's ``preserve_rng_state``).
            Default: those of the module ``fn`` is, or is a bound method of.

    Gradients equal those of ``fn(*args)`` run plainly; ``create_graph=True`` through it works.
    Under ``no_grad``, in forward mode or while tracing it is simply ``fn(*args)``.
    """
    mode = MODE.get()
    if not mode.grad_enabled or mode.forward or mode.tracing or mode.anomaly:
        return fn(*args)
    generators = _generators(fn) if generators is None else list(generators)
    states = generator_states(generators)
    positions = [k for k, a in enumerate(args) if isinstance(a, Tensor)]
    standins, first_args = {}, list(args)
    for k in positions:  # the first run's graph is only walked to find the tensors fn reads, then dropped
        x = Tensor._from_array(args[k]._data)
        x._requires_grad = args[k]._requires_grad
        standins[x], first_args[k] = k, x
    start = next(entries.ENTRY_INDEX)
    outputs, structure = flatten(fn(*first_args), "checkpoint")
    captured = [t for t in walk_back(outputs, standins, start)[1] if t._requires_grad]
    dtypes = {t.dtype for t in outputs}
    if len(dtypes) != 1 or next(iter(dtypes)).kind != "f":
        raise TypeError(f"checkpoint: fn must return Tensors of one floating dtype; got {sorted(map(str, dtypes))}")
    shapes = [t.shape for t in outputs]
    packed = np.concatenate([np.ravel(t._data) for t in outputs]) if outputs else np.empty(0)
    del outputs  # the activations of the first run go now
    run = _Checkpoint(fn, list(args), positions, captured, generators, states, structure, shapes, packed)
    inputs = tuple(args[k] for k in positions) + tuple(captured)
    differentiate = any(x._requires_grad for x in inputs)
    return unflatten(structure, record_run(CHECKPOINT, run, inputs, differentiate))
