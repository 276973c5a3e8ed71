"""Adding an op to minigrad: a NumPy forward and its vector-Jacobian product (VJP) rules.

The anchors are HIPS autograd's ``autograd.extend`` (``primitive``, ``defvjp``), JAX's
``custom_vjp`` and PyTorch's ``autograd.Function``.  Every built-in op in ``ops.py`` is
declared with this same API, so that table is also this module's documentation::

    import numpy as np
    import minigrad as mg
    from minigrad.extend import primitive, defvjp

    softplus = primitive(lambda x: np.logaddexp(0, x), "softplus")   # log(1 + e**x), stable
    defvjp(softplus, lambda g, ans, x: g * mg.sigmoid(x))              # d/dx = sigmoid(x)

    y = softplus(mg.tensor([-800.0, 0.0, 800.0], requires_grad=True))

A rule ``rule(g, ans, *inputs, **params)`` receives the output's cotangent ``g``, the output
``ans`` and the op's inputs (all Tensors) and returns the cotangent of one input.  Write it
with minigrad ops and the op gets second derivatives (``create_graph=True``) for free.  A
user's op gets everything a built-in gets: a tape entry that can be replayed, hooks,
in-place version checks, ``detect_anomaly``, ``create_graph`` and ``minigrad.testing``.
"""
from __future__ import annotations

import inspect

import numpy as np

from .tensor import Tensor, as_operand

__all__ = ["Op", "primitive", "defvjp", "defvjp_argnum", "defjvp", "defjvp_argnums", "saves"]


class Op:
    """A differentiable primitive: a name, a NumPy forward kernel and the VJP rule of each input.

    Calling it, ``op(*inputs, **params)``, converts the inputs (Tensors, arrays, numbers) to
    Tensors, runs ``forward(*arrays, **params)`` and records one tape entry ``(op, inputs,
    params)`` when an input requires grad.  The entry is enough to re-run ``forward``.

    Attributes:
        name: how the tape and error messages name the op.
        forward: ``forward(*arrays, **params) -> np.ndarray``.
        rules: ``rules[i](g, ans, *inputs, **params)``, the VJP of input ``i`` as declared (None:
            not differentiable), or ``argnum_rule(i, g, ans, inputs, **params)`` for any number
            of inputs (HIPS autograd's ``defvjp_argnum``; used by ``concatenate``).
        vjps: what reverse mode calls for input ``i``, ``vjps[i](g, ans, *inputs, **params)``:
            the rule wrapped in a check of its result's type, shape and dtype (a clear error
            naming the op and the input; a ``broadcasts`` op's cotangent is summed back), or
            for the built-in ops, whose rules the gradient tests cover, the rule itself (:func:`trust`).
        jvp_rules: ``jvp_rules[i](t, ans, *inputs, **params)``, the tangent of the output caused by the
            tangent ``t`` of input ``i`` (forward mode; :func:`defjvp`); the output's tangent is their
            sum over the inputs that have one.  Or ``jvp_argnums(argnums, tangents, ans, inputs,
            **params)`` for all of them at once (:func:`defjvp_argnums`; used by ``concatenate``).
        broadcasts: the op broadcasts its inputs as NumPy does, so a rule may return a
            cotangent of the output's shape and it is summed back to the input's (``sum_to``).
        lazy_vjp: optional ``lazy_vjp(total, i, g, ans, *inputs, **params) -> bool``: add the
            cotangent of input ``i`` into ``total`` (an ``autograd._Cotangent``: a dense buffer,
            or deferred ``left.T @ right`` factors) and return True, or return False to use the
            rule.  Reverse mode calls it when no graph is built, to skip full-size temporaries.
        elementwise: each output element depends only on the input elements at its position
            (after NumPy broadcasting), so the op may run on a stack of many calls' inputs at once:
            a compiled loop runs such ops of its backward over all steps in one call.
        saved_inputs, saves_output: which values the rules read (:func:`saves`): the positions of
            those inputs (None: all) and whether the output.  Backward refuses an entry whose
            saved values changed in place after the op ran; the others may change.
    """

    __slots__ = ("name", "forward", "rules", "argnum_rule", "vjps", "broadcasts", "lazy_vjp", "max_inputs",
                 "trusted", "jvp_rules", "jvp_argnums", "elementwise", "saved_inputs", "saves_output")

    def __init__(self, forward, name: str | None = None, broadcasts: bool = False, elementwise: bool = False):
        if not callable(forward):
            raise TypeError(f"primitive: forward must be a function of NumPy arrays; got {type(forward).__name__}")
        self.name = name or getattr(forward, "__name__", None) or "op"
        self.forward = forward
        self.rules, self.argnum_rule, self.vjps = (), None, ()
        self.broadcasts, self.elementwise = broadcasts, elementwise
        self.lazy_vjp = None
        self.max_inputs = _max_positional(forward)
        self.trusted = False
        self.jvp_rules, self.jvp_argnums = (), None
        self.saved_inputs, self.saves_output = None, True  # until saves() says less: every value

    def __repr__(self):
        return f"Op({self.name})"

    def __call__(self, *inputs, **params) -> Tensor:
        like = next((x for x in inputs if isinstance(x, Tensor)), None)
        tensors = tuple(as_operand(x, like, self.name) for x in inputs)
        if len(self.rules) > len(tensors):
            raise ValueError(
                f"{self.name}: has VJP rules for {len(self.rules)} inputs but was called with {len(tensors)}")
        if self.argnum_rule is None and len(self.vjps) < len(tensors):  # inputs without rules
            self.vjps += tuple(self._wrap(i, None) for i in range(len(self.vjps), len(tensors)))
        data = self.forward(*(t._data for t in tensors), **params)
        if type(data) is not np.ndarray:
            if not isinstance(data, np.generic):
                raise TypeError(
                    f"{self.name}: forward must return a NumPy array; got {type(data).__name__} "
                    f"(wrap a Python number with np.asarray)")
            data = np.asarray(data)
        if data.dtype.kind not in "biuf":
            raise TypeError(f"{self.name}: forward returned an array of dtype {data.dtype}; expected a numeric dtype")
        return Tensor._from_op(self, data, tensors, params)

    def _wrap(self, i: int, rule):
        """The function ``vjps[i]`` for a declared ``rule``: checked (a user's op) or as it is (a trusted one)."""
        if rule is None:
            def missing(g, ans, *inputs, **params):
                raise RuntimeError(f"{self.name}: input {i} requires grad but the op has no VJP rule for it "
                                   "(give one with minigrad.extend.defvjp)")
            return missing
        if self.trusted:
            return rule

        def checked(g, ans, *inputs, **params):
            return self._conform(rule(g, ans, *inputs, **params), inputs[i]._data, i)
        return checked

    def jvp(self, tangents: list, ans: Tensor, inputs: tuple, params: dict):
        """The output's tangent from the inputs' ``tangents`` (None where an input has none)."""
        argnums = [i for i, t in enumerate(tangents) if t is not None]
        if self.jvp_argnums is not None:
            tangent = self.jvp_argnums(argnums, [tangents[i] for i in argnums], ans, inputs, **params)
            return self._conform_tangent(tangent, ans._data, argnums[0])
        total = None
        for i in argnums:
            rule = self.jvp_rules[i] if i < len(self.jvp_rules) else None
            if rule is None:
                raise RuntimeError(f"{self.name}: input {i} has a forward-mode tangent but the op has no JVP rule "
                                   "for it (give one with minigrad.extend.defjvp)")
            term = self._conform_tangent(rule(tangents[i], ans, *inputs, **params), ans._data, i)
            total = term if total is None else total + term
        return total

    def _conform_tangent(self, t, ans: np.ndarray, i: int) -> Tensor:
        """A JVP rule's result as a Tensor of the output's shape (broadcast to it) and dtype, or a clear error."""
        if not isinstance(t, Tensor):
            if not isinstance(t, np.ndarray):
                raise TypeError(f"{self.name}: the JVP rule of input {i} returned {type(t).__name__}; expected a Tensor")
            t = Tensor._from_array(t)
        if t._data.shape != ans.shape:
            try:
                fits = np.broadcast_shapes(t._data.shape, ans.shape) == ans.shape
            except ValueError:
                fits = False
            if not fits:
                raise ValueError(f"{self.name}: the JVP rule of input {i} returned shape {t._data.shape}; expected "
                                 f"the output's shape {ans.shape}")
            t = _broadcast_to(t, ans.shape)
        if t._data.dtype != ans.dtype:
            if t._data.dtype.kind != "f":
                raise TypeError(f"{self.name}: the JVP rule of input {i} returned dtype {t._data.dtype}; expected a "
                                f"floating-point tangent ({ans.dtype})")
            t = t.astype(ans.dtype)
        return t

    def _build_vjps(self):
        if self.argnum_rule is not None:
            self.vjps = _ArgnumVJPs(self)
        else:
            self.vjps = tuple(self._wrap(i, rule) for i, rule in enumerate(self.rules))

    def _conform(self, gx, x: np.ndarray, i: int) -> Tensor:
        """A rule's result as a Tensor of the input's shape and dtype, or a clear error."""
        if not isinstance(gx, Tensor):
            gx = _as_cotangent(gx, self.name, i)
        if gx._data.shape != x.shape:
            gx = self._unbroadcast(gx, x, i)
        if gx._data.dtype != x.dtype:  # e.g. the float32 input of a float64 op gets a float32 cotangent
            if gx._data.dtype.kind != "f":
                raise TypeError(
                    f"{self.name}: the VJP rule of input {i} returned dtype {gx._data.dtype}; "
                    f"expected a floating-point cotangent ({x.dtype})")
            gx = gx.astype(x.dtype)
        return gx

    def _unbroadcast(self, gx: Tensor, x: np.ndarray, i: int) -> Tensor:
        if self.broadcasts:
            try:
                if np.broadcast_shapes(x.shape, gx._data.shape) == gx._data.shape:
                    return _sum_to(gx, x.shape)
            except ValueError:
                pass
        raise ValueError(
            f"{self.name}: the VJP rule of input {i} returned shape {gx._data.shape}; expected the input's "
            f"shape {x.shape}" + ("" if self.broadcasts else " (sum a broadcast cotangent back with minigrad.sum_to)"))


class _ArgnumVJPs:
    """``vjps`` of an op with one rule for any input: ``vjps[i]`` calls ``argnum_rule(i, ...)``."""

    def __init__(self, op: Op):
        self.op = op

    def __getitem__(self, i: int):
        op = self.op

        def argnum_vjp(g, ans, *inputs, **params):
            gx = op.argnum_rule(i, g, ans, inputs, **params)
            return gx if op.trusted else op._conform(gx, inputs[i]._data, i)
        return argnum_vjp


# The op table's sum_to and broadcast_to, with which a broadcasting op's rules sum back to each
# input's shape, differentiably: ops.py, which builds on this module, hands them over when it has
# defined them (set_broadcasting_ops), so that this module imports nothing of it.
_BROADCASTING = {}


def set_broadcasting_ops(sum_to, broadcast_to) -> None:
    """Give the rules of broadcasting ops the ``sum_to`` and ``broadcast_to`` ops (ops.py does, once)."""
    _BROADCASTING.update(sum_to=sum_to, broadcast_to=broadcast_to)


def _sum_to(g: Tensor, shape) -> Tensor:
    return _BROADCASTING["sum_to"](g, shape)


def _broadcast_to(t: Tensor, shape) -> Tensor:
    return _BROADCASTING["broadcast_to"](t, shape)


def trust(op: Op) -> Op:
    """Call the rules of ``op`` unchecked (for the built-in ops, whose rules the gradient tests cover).

    A trusted op's rules must return a Tensor of their input's shape (a broadcasting op's rules
    sum back themselves); reverse mode still casts the dtype to the input's.  Returns ``op``.
    """
    op.trusted = True
    op._build_vjps()
    return op


def saves(op: Op, *inputs: int, output: bool = False) -> Op:
    """Declare that the VJP rules of ``op`` read the values of only these inputs (positions), and of
    the output if ``output``; of the others they read at most the shape and dtype.  Returns ``op``.

    PyTorch's autograd saves for backward only the tensors a formula of ``derivatives.yaml`` names,
    and checks the version of only those.  So does minigrad after this declaration: an input or
    output not saved may change in place after the op ran, which a compiled loop relies on when it
    reuses the memory of the projection it was given (:func:`minigrad.scan`'s ``donate_xs``).  Without
    it every value counts as saved, which is always safe.  Declare only what the rules and the
    ``lazy_vjp`` truly leave unread: a wrong declaration lets a changed value through unnoticed.

    Raises:
        TypeError: ``op`` is not an Op, or a position is not an int.
    """
    if not isinstance(op, Op):
        raise TypeError(f"saves: expected an Op made by minigrad.extend.primitive; got {type(op).__name__}")
    if any(isinstance(i, bool) or not isinstance(i, int) for i in inputs):
        raise TypeError(f"saves: input positions of {op.name} must be ints; got {inputs!r}")
    op.saved_inputs, op.saves_output = frozenset(inputs), bool(output)
    return op


def _max_positional(forward) -> int | None:
    """How many positional arguments ``forward`` takes, or None if any number (or unknown)."""
    if isinstance(forward, np.ufunc):
        return forward.nin
    try:
        parameters = inspect.signature(forward).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters)


def _as_cotangent(gx, name: str, i: int) -> Tensor:
    if isinstance(gx, np.ndarray):
        return Tensor._from_array(gx)  # a constant: fine for first order, not differentiable again
    raise TypeError(f"{name}: the VJP rule of input {i} returned {type(gx).__name__}; expected a Tensor")


def primitive(forward, name: str | None = None, *, broadcasts: bool = False, elementwise: bool = False) -> Op:
    """Turn a NumPy function into a minigrad op (HIPS autograd's ``primitive``).

    Args:
        forward: ``forward(*arrays, **params) -> np.ndarray``; positional arguments are the
            op's inputs (Tensors, arrays or numbers when called), keyword arguments its
            parameters (saved on the tape entry as they are, never differentiated).
        name: the op's name on the tape and in errors; defaults to ``forward.__name__``.
        broadcasts: the op broadcasts its inputs as NumPy does; rules may then return
            cotangents of the output's shape and minigrad sums them back to each input's.
        elementwise: ``forward`` maps each position on its own (as a NumPy ufunc does), so a
            compiled loop may call it once on the inputs of all its steps stacked.

    Returns:
        An :class:`Op`, called like ``forward`` but on Tensors.  Give it rules with :func:`defvjp`.

    Raises:
        TypeError: ``forward`` is not callable; when called, ``forward`` returns something that
            is not a NumPy array of a numeric dtype (the message names the op).
    """
    return Op(forward, name, broadcasts, elementwise)


def defvjp(op: Op, *rules) -> Op:
    """Give ``op`` one VJP rule per input, in order (HIPS autograd's ``defvjp``); returns ``op``.

    ``rules[i](g, ans, *inputs, **params)`` returns the cotangent of input ``i``: a Tensor of
    that input's shape (or, for a ``broadcasts`` op, of the output's shape) and a floating
    dtype (cast to the input's).  ``None`` marks an input with no derivative.

    Raises:
        TypeError: ``op`` is not an Op, or a rule is neither callable nor None.
        ValueError: more rules than the forward takes positional arguments (names the op).
            In backward, a rule's result of the wrong shape is a ValueError, and one that is not a
            Tensor a TypeError, naming the op, the input and the shapes.
    """
    _check_rules("defvjp", op, rules)
    op.rules = rules
    op._build_vjps()
    return op


def _check_rules(where: str, op, rules):
    """One rule (a function or None) per input of ``op``, no more than its forward takes."""
    if not isinstance(op, Op):
        raise TypeError(f"{where}: expected an Op made by minigrad.extend.primitive; got {type(op).__name__}")
    for i, rule in enumerate(rules):
        if rule is not None and not callable(rule):
            raise TypeError(f"{where}: the rule for input {i} of {op.name} is a {type(rule).__name__}, not a function")
    if op.max_inputs is not None and len(rules) > op.max_inputs:
        raise ValueError(
            f"{where}: {len(rules)} rules given, but the forward of {op.name} takes {op.max_inputs} inputs "
            f"(valid input indices are 0 to {op.max_inputs - 1})")


def defjvp(op: Op, *rules) -> Op:
    """Give ``op`` one JVP rule per input, in order (HIPS autograd's ``defjvp``); returns ``op``.

    ``rules[i](t, ans, *inputs, **params)`` returns the output's tangent caused by the tangent
    ``t`` of input ``i``: a Tensor of the output's shape (or one that broadcasts to it) and a
    floating dtype.  The output's tangent is the sum over the inputs that have tangents.  Written
    with minigrad ops, forward mode composes with reverse mode (``jacfwd(jacrev(f))``).
    ``None`` marks an input with no derivative.

    Raises:
        TypeError: ``op`` is not an Op, or a rule is neither callable nor None.
        ValueError: more rules than the forward takes positional arguments (names the op).
            In forward mode, a rule's result of the wrong shape is a ValueError, and one of the
            wrong type or dtype a TypeError, naming the op, the input and the shapes.
    """
    _check_rules("defjvp", op, rules)
    op.jvp_rules = rules
    return op


def defjvp_argnums(op: Op, rule) -> Op:
    """Give ``op`` one rule ``rule(argnums, tangents, ans, inputs, **params)`` for the output's tangent
    from the tangents of the inputs ``argnums`` at once (HIPS autograd's ``defjvp_argnums``)."""
    if not isinstance(op, Op) or not callable(rule):
        raise TypeError("defjvp_argnums: expected an Op made by minigrad.extend.primitive and a function")
    op.jvp_argnums = rule
    return op


def defvjp_argnum(op: Op, rule) -> Op:
    """Give ``op`` one rule ``rule(i, g, ans, inputs, **params)`` for the cotangent of any input ``i``.

    For ops with any number of inputs, as HIPS autograd's ``defvjp_argnum``; returns ``op``.
    """
    if not isinstance(op, Op) or not callable(rule):
        raise TypeError("defvjp_argnum: expected an Op made by minigrad.extend.primitive and a function")
    op.argnum_rule = rule
    op._build_vjps()
    return op
