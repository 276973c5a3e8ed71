"""The loops of :func:`minigrad.scan` around a step program: hoisted invariants, loop fission (what
reads only forward values, for many steps at once), the batched backward lines and the loop source.
"""
from __future__ import annotations

import collections
import math
import time

import numpy as np

from .. import ops
from .codegen import (
    ADD_INTO, ALLOCATE, Program, SCATTER_SUM, WRITE_BLOCKS, _Node, _OUT_KERNELS, _Writer, _body,
    _index_source, _lines, _unpack, _writes_into,
)
from .passes import _write_directly
from .tracing import STATS


def _hoist(nodes: list, invariant: set) -> tuple[list, list]:
    """Split ``nodes`` into those that read only loop invariants (``invariant``: captured inputs and
    constants), computed once before the loop, and the rest (per step)."""
    written_into = {n.args[0] for n in nodes if n.op is ADD_INTO}  # changed in place every step
    before, inside, invariant = [], [], set(invariant)
    for node in nodes:
        if all(a in invariant for a in node.args) and node.out not in written_into and node.into is None \
                and node.op not in (SCATTER_SUM, ADD_INTO, ALLOCATE, WRITE_BLOCKS):
            before.append(node)
            invariant.add(node.out)
        else:
            inside.append(node)
    return before, inside


# A fused VJP that is g times a derivative of a forward value: a loop splits it, so that the
# derivative (tanh's 1 - y**2) is computed for all steps at once and only the product per step.
_SPLIT = {"tanh_backward": ops.tanh_derivative.op, "sigmoid_backward": ops.sigmoid_derivative.op}


def _stack_name(name: str) -> str:
    """The name of a per-step value's stack over all steps, (T, ...): ``v10`` -> ``V10``."""
    return name.upper()


class _Fission:
    """Loop fission of a backward step, as the hand-written NumPy LSTM computes its gate derivatives:
    the nodes that read forward values (residuals) and loop invariants only, not cotangents, run
    ONCE before the loop, on the residuals of all steps stacked (T, ...); the rest run per step.

    Attributes:
        batched: those nodes, on the stacks (``D3 = tanh_derivative(V10)``).
        per_step: the other nodes.
        stacks: the forward values that the forward loop writes into (T, ...) buffers, in order.
        views: ``(name, parent, index)``: residuals whose stack is a view of another's (a gate block).
        tuple_residuals: the residuals the forward loop still keeps per step.
        reads: the stacked values that the per-step code reads, as ``v10 = V10[t]``.
    """

    def __init__(self, nodes: list, residuals: list, returns: list, stackable: set, invariant: set,
                 forward_producers: dict, shapes: dict):
        available = set(residuals) & stackable  # the per-step forward values the backward reads
        self.batched, self.per_step, made = [], [], set()
        nodes = list(self._split(nodes, available, shapes))
        uses = collections.Counter(a for n in nodes for a in n.args)
        uses.update(x for r in returns for x in (r if isinstance(r, tuple) else (r,)))
        per_step, dropped = {}, set()  # the per-step nodes by name; those reassociation made dead
        for node in nodes:
            if not self._batchable(node, available, invariant, shapes):
                node, factor = self._reassociate(node, per_step, uses, available, shapes, dropped)
                self.per_step.append(node)
                per_step[node.out] = node
                if factor is None:
                    continue
                node = factor
            self.batched.append(self._on_stacks(node, available, shapes))
            available.add(node.out)
            made.add(node.out)
        self.per_step = _write_directly([n for n in self.per_step if n.out not in dropped], returns)
        read_by_batched = {a for n in self.batched for a in n.args}
        used = [r for r in residuals if r in available and _stack_name(r) in read_by_batched]
        self.views, self.stacks, pending = [], [], list(used)
        while pending:  # a basic slice of a per-step value (a gate block): a view of that value's stack
            name = pending.pop(0)
            node = forward_producers.get(name)
            if node is not None and node.op.name == "getitem" and node.params["basic"] and \
                    _index_source(node.params["index"]) is not None and node.args[0] in forward_producers:
                self.views.append((name, node.args[0], node.params["index"]))
                if node.args[0] not in self.stacks + pending:
                    pending.append(node.args[0])
            elif name not in self.stacks:
                self.stacks.append(name)
        self.tuple_residuals = [r for r in residuals if r not in used]
        per_step_args = [a for n in self.per_step for a in n.args]
        per_step_args += [x for r in returns for x in (r if isinstance(r, tuple) else (r,))]
        self.reads = [a for a in dict.fromkeys(per_step_args) if a in made or a in used]

    @staticmethod
    def _split(nodes, available, shapes):
        """The nodes, with each fused tanh/sigmoid VJP of a forward value as g * derivative."""
        for node in nodes:
            derivative = _SPLIT.get(node.op.name)
            if derivative is not None and node.args[1] in available and \
                    shapes[node.args[1]] == (node.shape, node.dtype) and shapes[node.args[0]][1] == node.dtype:
                d = _Node("d" + node.out[1:], derivative, (node.args[1],), {}, node.shape, node.dtype)
                shapes[d.out] = (node.shape, node.dtype)
                yield d
                yield _Node(node.out, ops.mul.op, (node.args[0], d.out), {}, node.shape, node.dtype)
            else:
                yield node

    @staticmethod
    def _reassociate(node, per_step, uses, available, shapes, dropped):
        """``(y * r) * s`` -> ``y * (r * s)`` where r and s are stacked (a gate's value times its
        derivative): then ``r * s`` is computed for all steps at once, one product per step fewer.
        Returns the node, and the new factor's node or None."""
        mul = ops.mul.op
        if node.op is not mul or len(node.args) != 2 or node.params:
            return node, None
        for x, s in (node.args, node.args[::-1]):
            inner = per_step.get(x)
            if s not in available or inner is None or inner.op is not mul or inner.into is not None \
                    or uses[x] != 1 or inner.params or x in dropped:
                continue
            for y, r in (inner.args, inner.args[::-1]):
                if r in available and y not in available and \
                        shapes[r] == shapes[s] == shapes[x] == (node.shape, node.dtype):
                    factor = _Node("f" + node.out[1:], mul, (r, s), {}, node.shape, node.dtype)
                    shapes[factor.out] = (node.shape, node.dtype)
                    dropped.add(x)  # its one use is gone
                    return _Node(node.out, mul, (y, factor.out), {}, node.shape, node.dtype, node.into), factor
        return node, None

    @staticmethod
    def _batchable(node, available, invariant, shapes) -> bool:
        """An elementwise op of stacked values of its own rank (so that their leading T axes line up)
        and loop invariants, basic indexing, or a reduction over ``axis`` of one stacked value."""
        stacked = [a for a in node.args if a in available]
        if not stacked or node.into is not None or any(a not in available and a not in invariant for a in node.args):
            return False
        if node.op.name == "getitem":
            return node.params["basic"] and _index_source(node.params["index"]) is not None
        if node.op in _REDUCTIONS:
            return len(node.args) == 1
        return node.op.elementwise and not node.params and all(len(shapes[a][0]) == len(node.shape) for a in stacked)

    @staticmethod
    def _on_stacks(node, available, shapes):
        """``node`` on the stacks of its per-step arguments (``V10`` for ``v10``; an index behind ``:``;
        a reduction's axes one further right)."""
        params = node.params
        if node.op.name == "getitem":
            index = params["index"] if isinstance(params["index"], tuple) else (params["index"],)
            params = dict(params, index=(slice(None),) + index)
        elif node.op in _REDUCTIONS:
            axis = params["axis"]  # normalized by the op: a sorted tuple, or None for every axis
            ndim = len(shapes[node.args[0]][0])
            params = dict(params, axis=tuple(range(1, ndim + 1)) if axis is None else tuple(a + 1 for a in axis))
        args = tuple(_stack_name(a) if a in available else a for a in node.args)
        return _Node(_stack_name(node.out), node.op, args, params, None, node.dtype)


# Ops whose ``axis`` param names the axes each output element reduces (or normalizes) over: on a
# stack of steps, the same op over the same axes, one further right.
_REDUCTIONS = frozenset({ops.SUM, ops.MAX, ops.MIN, ops.STANDARDIZE})


def _written_into(writer: _Writer, nodes: list, targets: dict, indent: str, zeroed: bool = False) -> tuple[list, dict]:
    """The lines of ``nodes``, where an op that takes ``out=`` writes a value named in ``targets``
    straight into its place there (``v10 = tanh(v8, out=V10[t])``) instead of a new array
    that is copied after; with ``zeroed`` (the places hold zeros), a buffer of gate blocks is
    the place itself.  Returns the lines and the values so written, with their places."""
    lines, direct = [], {}
    for node in nodes:
        place = targets.get(node.out)
        if place is not None and place not in direct.values() and node.op is ALLOCATE and zeroed:
            direct[node.out] = place
            lines.append(f"{indent}{node.out} = {place}")
        elif place is not None and place not in direct.values() and _writes_into(node.op.forward) \
                and not node.params and node.into is None and node.shape != ():  # X[t] of a 0-d step is no array
            direct[node.out] = place
            lines += [indent + line for line in _lines(writer, node, out=place)]
        else:
            lines += [indent + line for line in _lines(writer, node)]
    return lines, direct


# The batched lines of a backward loop run on this many steps at a time: each temporary they make
# then holds at most about this many elements (256 KB in float32, cache-sized), however long T is.
_CHUNK_ELEMENTS = 1 << 16


def _chunks(times: list, size: int) -> list:
    """The steps in the order the backward loop visits them (reversed ``times``), ``size`` at a time."""
    order = times[::-1]
    return [order[c:c + size] for c in range(0, len(order), size)]


def _batched_lines(writer: _Writer, fission: _Fission, direct: dict, returns: list, shapes: dict) -> tuple[int, list]:
    """The lines of the nodes run once over a chunk of steps ``lo:hi``, reusing buffers as
    hand-written BPTT does, and how many steps a chunk has (:data:`_CHUNK_ELEMENTS`):

    - a factor that one per-step op multiplies into x_t's cotangent, which that op writes into
      GX[t], is computed into GX itself: the op then multiplies in place (``D16`` is ``GX0[lo:hi]``);
    - an op whose argument is a temporary of these lines used only by it writes into that
      argument (``F3 = mul(V9[lo:hi], D3, out=D3)``).
    """
    stacks = {_stack_name(v) for v in fission.stacks} | {_stack_name(name) for name, _, _ in fission.views}
    stacked = {_stack_name(n.out): n for n in fission.batched}
    uses = collections.Counter(_stack_name(a) for a in fission.reads)
    uses.update(a for n in fission.batched for a in n.args)
    uses.update(_stack_name(x) for r in returns for x in (r if isinstance(r, tuple) else (r,)))
    per_step_uses = collections.Counter(a for n in fission.per_step for a in n.args)
    into = {}  # a batched value -> the buffer it is computed into
    for node in fission.per_step:
        place = direct.get(node.out)
        # (the op then writes over its own input: only a ufunc may, elementwise)
        for a in node.args if place is not None and isinstance(node.op.forward, np.ufunc) else ():
            producer = stacked.get(_stack_name(a))
            if producer is not None and uses[producer.out] == 1 and per_step_uses[a] == 1 \
                    and _writes_into(producer.op.forward) and not producer.params \
                    and shapes[a] == (node.shape, node.dtype) and place.endswith("[t]"):
                into.setdefault(producer.out, place[:-len("[t]")])  # GX0[t] -> GX0
                break
    fresh = set()  # temporaries of these lines, ours to overwrite
    lines = []
    for node in fission.batched:
        target = into.get(node.out)
        if target is not None:
            target += "[lo:hi]"
        elif isinstance(node.op.forward, np.ufunc) and not node.params:  # over its input
            target = next((a for a in node.args if a in fresh and uses[a] == 1 and a not in into
                           and shapes[a.lower()] == shapes[node.out.lower()]), None)
        on_chunk = _Node(node.out, node.op, tuple(f"{a}[lo:hi]" if a in stacks else a for a in node.args),
                         node.params, node.shape, node.dtype)
        lines += ["        " + line for line in _lines(writer, on_chunk, out=target)]
        if node.op.name != "getitem" and (isinstance(node.op.forward, np.ufunc) or node.op.forward in _OUT_KERNELS):
            fresh.add(node.out)
    temporary = [math.prod(shapes[n.out.lower()][0]) for n in fission.batched if n.out not in into]
    return max(1, _CHUNK_ELEMENTS // max(temporary + [1])), lines


def _dense_base(name: str, nodes: list) -> str:
    """The value whose buffer ``name`` is: itself, or for slices added into a dense value in place
    (``add_into``), that value's."""
    producers = {n.out: n for n in nodes}
    while name in producers and producers[name].op is ADD_INTO:
        name = producers[name].args[0]
    return name


def _fission(program: Program, nc: int, nx: int, forward_inside: list, backward_inside: list, residuals: list,
             invariant: set) -> _Fission:
    """The fission of the backward loop over the per-step ``residuals``."""
    parts = program.parts
    producers = {n.out: n for n in forward_inside}
    stackable = set(producers) | set(parts.input_names[:nc + nx])
    return _Fission(backward_inside, residuals, parts.backward_returns, stackable, invariant, producers, parts.shapes)


def _loop_source(program: Program, nc: int, nx: int, ranks: list, masked: bool) -> tuple:
    """The forward and backward loops of :func:`scan` around a step program, as Python source; the
    forward values they keep stacked over all steps (see :class:`_Fission`): each a name, or the
    index of the y whose (T, ...) output is its stack; the weights' cotangents summed from rows
    after the loop (:func:`_row_sums`); and the stacks that may go over a donated xs (:func:`_over_xs`).

    The step's lines are inlined into the loop, so a step costs its NumPy calls and nothing
    else; ``ranks`` are the ranks of the carry and then the y leaves (for widening masks);
    ``masked``: with the lines for per-step masks (padding).
    """
    parts = program.parts
    carry, xt = parts.input_names[:nc], parts.input_names[nc:nc + nx]
    captured = parts.input_names[program.n_inputs:]
    new_carry, ys = parts.forward_returns[:nc], parts.forward_returns[nc:]
    X, Y = [f"X{k}" for k in range(nx)], [f"Y{k}" for k in range(len(ys))]
    constants = set(parts.writer.constants.values())
    before, inside = _hoist(parts.forward_nodes, set(captured) | constants)
    # residuals that are loop invariants (W.T): kept once, as residuals[0], not once per step
    hoisted_names = {n.out for n in before}
    hoisted = [r for r in parts.residuals if r in hoisted_names]
    if parts.backward_nodes is not None:
        b_before, b_inside = _hoist(parts.backward_nodes, set(parts.captured_read_names) | constants | set(hoisted))
        invariant = set(parts.captured_read_names) | constants | set(hoisted) | {n.out for n in b_before}
        fission = _fission(program, nc, nx, inside, b_inside, [r for r in parts.residuals if r not in hoisted],
                           invariant)
        stacks = fission.stacks
    else:
        fission, stacks = None, []
    S = [_stack_name(v) for v in stacks]
    f = ["def forward_loop(times, carry, xs, captured, ys, residuals, stacks, masks):",
         "    " + _unpack(carry, "carry"), "    " + _unpack(X, "xs"), "    " + _unpack(captured, "captured"),
         "    " + _unpack(Y, "ys"), "    " + _unpack(S, "stacks"), *_body(parts.writer, before, "    ")]
    if hoisted and fission is not None:
        f.append(f"    residuals.append(({', '.join(hoisted)},))  # the loop invariants the backward reads, once")
    f.append("    for t in times:")
    f += [f"        {a} = {x}[t]" for a, x in zip(xt, X)]
    f += [f"        {_stack_name(a)}[t] = {a}" for a in parts.input_names[:nc + nx] if a in stacks]
    targets = {name: f"{_stack_name(name)}[t]" for name in stacks}
    aliases = {}  # a stacked value that is also a y: its stack is that y's (T, ...) output, no copy
    if not masked:  # (masked, y is a np.where of the value)
        for k, (y, v) in enumerate(zip(Y, ys)):
            if v in stacks:
                aliases.setdefault(v, k)
            targets.setdefault(v, f"{y}[t]")
    body, direct = _written_into(parts.writer, inside, targets, "        ")
    f += body
    f += [f"        {_stack_name(name)}[t] = {name}" for name in stacks
          if name not in direct and name not in parts.input_names]
    n_names, q_names = [f"n{k}" for k in range(nc)], [f"q{k}" for k in range(len(ys))]
    f += [f"        {n} = {v}" for n, v in zip(n_names, new_carry)] + [f"        {q} = {v}" for q, v in zip(q_names, ys)]
    if masked:  # past a sequence's end the carry keeps its value and y is 0
        f += ["        m = masks[t]", "        if m is not None:"]
        f += [f"            {n} = np.where(_widen(m, {r}), {n}, {a})" for n, a, r in zip(n_names, carry, ranks)]
        f += [f"            {q} = np.where(_widen(m, {r}), {q}, 0)" for q, r in zip(q_names, ranks[nc:])]
        f += ["            pass"]
    f += [f"        {y}[t] = {q}" for k, (y, q, v) in enumerate(zip(Y, q_names, ys))
          if direct.get(v) != f"{y}[t]" and aliases.get(v) != k]
    kept = parts.residuals if fission is None else fission.tuple_residuals
    if kept:
        f += [f"        residuals.append(({', '.join(kept)},))"]
    if carry:
        f += [f"        {', '.join(carry)}, = {', '.join(n_names)},"]
    f += [f"    return ({', '.join(carry)}{',' if carry else ''})"]
    stacked = [aliases.get(name, name) for name in stacks]
    if fission is None:
        return "\n".join(f), None, stacked, {}, {}
    over_xs = _over_xs(inside, xt, [v for v in stacks if v not in aliases], direct, set(kept) | set(stacks) |
                       set(new_carry) | set(ys), parts.shapes)
    over_xs = {stacks.index(name): k for name, k in over_xs.items()}
    stacks = stacked

    seeds = [f"g{k}" for k in range(nc + len(ys))]
    G, GX = [f"G{k}" for k in range(len(ys))], [f"GX{k}" for k in range(nx)]
    b = [("def backward_loop(times, g_carry, g_ys, residuals, stacks, captured, gxs, masks, sums, lefts, rights, "
          "zeros):"),
         "    " + _unpack(seeds[:nc], "g_carry"), "    " + _unpack(G, "g_ys"),
         "    " + _unpack(parts.captured_read_names, "captured"), "    " + _unpack(GX, "gxs"),
         "    " + _unpack(S, "stacks")]
    if hoisted:
        b.append("    " + _unpack(hoisted, "residuals[0]"))
    b += _body(parts.writer, b_before, "    ")
    for name, parent, index in reversed(fission.views):  # parents before their views
        b.append(f"    {_stack_name(name)} = {_stack_name(parent)}[:, {_index_source(index)}]")
    targets = {}  # x_t's cotangent is written into GX[t] by the op that makes it, if it can
    for j, i in enumerate(program.differentiable):
        if nc <= i < nc + nx and parts.backward_returns[j] != "None":
            targets.setdefault(_dense_base(parts.backward_returns[j], fission.per_step), f"GX{i - nc}[t]")
    row_sums = _row_sums(program, nc, nx, fission.per_step)
    per_step = [n for n in fission.per_step if n.out not in {name for name, _ in row_sums.values()}]
    body, direct = _written_into(parts.writer, per_step, targets, "        ", zeroed=True)  # gxs: zeros
    made = {n.out for n in fission.batched}
    if fission.batched:
        chunk, lines = _batched_lines(parts.writer, fission, direct, parts.backward_returns, parts.shapes)
        b.append(f"    for steps in _chunks(times, {chunk}):")
        b.append(f"        # what reads only forward values, for {chunk} steps at once")
        b.append("        lo, hi = min(steps), max(steps) + 1")
        b += lines
    loop_start = len(b)
    b.append("    for t in steps:" if fission.batched else "    for t in reversed(times):")
    if kept:
        b += [f"        {', '.join(kept)}, = residuals.pop()"]
    b += [f"        {v} = {_stack_name(v)}[t - lo]" if _stack_name(v) in made else f"        {v} = {_stack_name(v)}[t]"
          for v in fission.reads]
    b += [f"        {g} = {G_}[t]" for g, G_ in zip(seeds[nc:], G)]
    p_names = [f"p{k}" for k in range(nc)]
    if masked:  # padding passes the carry's cotangent through and gets none
        b += ["        m = masks[t]", "        if m is not None:"]
        b += [f"            {p} = np.where(_widen(m, {r}), 0, {g})" for p, g, r in zip(p_names, seeds, ranks)]
        b += [f"            {g} = np.where(_widen(m, {r}), {g}, 0)" for g, r in zip(seeds, ranks)] + ["            pass"]
    b += body
    carry_out, x_cotangents = {}, {}
    for j, i in enumerate(program.differentiable):
        r = parts.backward_returns[j]
        if i < nc:
            carry_out[i] = r
        elif i < nc + nx:
            if r != "None":
                if direct.get(_dense_base(r, fission.per_step)) != f"GX{i - nc}[t]":
                    b.append(f"        GX{i - nc}[t] = {r}")
                x_cotangents[r] = i - nc
        elif j in program.outer:
            # A factor that is also x_t's cotangent (an LSTM's gate cotangent) is already stacked in
            # GX (T, ...): it is not kept a second time.
            for side, factor in (("lefts", r[0]), ("rights", r[1])):
                if factor in x_cotangents:
                    k = x_cotangents[factor]
                    b.append(f"        {side}[{j}] = {k}  # the {side[:-1]} factors are GX{k}, already stacked")
                else:
                    b.append(f"        {side}[{j}].append({factor})")
        elif j in row_sums:
            continue
        elif r != "None":
            b.append(f"        np.add(sums[{j}], {r}, out=sums[{j}])")
    news = []
    for i in range(nc):
        r = carry_out.get(i, "None")
        news.append(f"zeros[{i}]" if r == "None" else r)
    if masked:
        b += ["        if m is not None:"] + [f"            {g} = {new} + {p}" for g, new, p in zip(seeds, news, p_names)]
        b += ["        else:"] + ([f"            {', '.join(seeds[:nc])}, = {', '.join(news)},"] if nc else ["            pass"])
    elif nc:
        b += [f"        {', '.join(seeds[:nc])}, = {', '.join(news)},"]
    if fission.batched:  # the step loop runs inside the chunk loop
        b[loop_start:] = ["    " + line for line in b[loop_start:]]
    b += [f"    # sums[{j}] = {name}: the sum of {where[0]}[{where[1]}]'s rows, after the loop"
          for j, (name, where) in row_sums.items()]
    b += [f"    return ({', '.join(seeds[:nc])}{',' if nc else ''})"]
    return "\n".join(f), "\n".join(b), stacks, row_sums, over_xs


def _makes_new_array(op) -> bool:
    """Whether ``op``'s kernel returns a new array, never a view of an input (a built-in that computes)."""
    return op.trusted and (op.elementwise or op in (ops.MATMUL, ops.ADDMM, ops.STANDARDIZE, ops.CONCATENATE))


def _over_xs(inside: list, xt: list, stacks: list, direct: dict, kept: set, shapes: dict) -> dict:
    """``{stack: k}``: the stacks whose step values may be written over ``x_t = X_k[t]`` when ``X_k``
    is donated (:func:`scan`'s ``donate_xs``): of x_t's shape and dtype, written after the step's
    last read of x_t or of a view of it, with x_t kept by nothing (no residual, stack, carry or y
    is x_t or a view of it).  The NumPy LSTM writes its gates over its projection this way."""
    written_at = {node.out: i for i, node in enumerate(inside)}
    over, taken = {}, set()
    for k, x in enumerate(xt):
        views, last_read = {x}, -1  # x_t and what may be a view of it
        for i, node in enumerate(inside):
            if views.intersection(node.args) or (node.into is not None and node.into[0] in views):
                last_read = i
                if not _makes_new_array(node.op):
                    views.add(node.out)
        if views & kept:
            continue
        for name in stacks:
            if name not in taken and name in written_at and shapes[name] == shapes[x] and (
                    name not in direct or written_at[name] > last_read):  # (else copied after the step)
                over[name] = k
                taken.add(name)
                break
    return over


def _row_sums(program: Program, nc: int, nx: int, per_step: list) -> dict:
    """The weights' cotangents that are ``sum_to(f, (n,))`` of a (B, n) factor the loop keeps for all
    steps anyway (a GRU's b_hn beside W_hh's outer product; x_t's cotangent in GX): summed once,
    over the stacked rows, after the loop, not per step.

    Returns ``{j: (name, where)}``: j indexes ``differentiable``, ``name`` is the per-step sum_to
    that is not run, ``where`` the factor's rows: ``("lefts" or "rights", j2)`` or ``("gxs", k)``."""
    parts = program.parts
    kept = {}
    for j, i in enumerate(program.differentiable):
        r = parts.backward_returns[j]
        if nc <= i < nc + nx and r != "None":
            kept.setdefault(r, ("gxs", i - nc))
    for j in program.outer:
        left, right = parts.backward_returns[j]
        kept.setdefault(left, ("lefts", j))
        kept.setdefault(right, ("rights", j))
    producers = {n.out: n for n in per_step}
    read = collections.Counter(a for n in per_step for a in n.args)
    read.update(x for r in parts.backward_returns for x in (r if isinstance(r, tuple) else (r,)))
    row_sums = {}
    for j, i in enumerate(program.differentiable):
        node = producers.get(parts.backward_returns[j])
        if i < nc + nx or j in program.outer or node is None or node.op is not ops.SUM_TO or read[node.out] != 1:
            continue
        f = node.args[0]
        shape = parts.shapes[f][0]
        if f in kept and len(shape) == 2 and tuple(node.params["shape"]) == shape[1:]:
            row_sums[j] = (node.out, kept[f])
    return row_sums


def _loops(program: Program, nc: int, nx: int, ranks: list, masked: bool):
    """The compiled loops of ``program`` (generated on first use, kept on it)."""
    key = (nc, nx, tuple(ranks), masked)
    loops = program.__dict__.setdefault("loops", {})
    if key not in loops:
        began = time.perf_counter()
        forward_source, backward_source, stacks, row_sums, over_xs = _loop_source(program, nc, nx, ranks, masked)
        namespace = dict(program.parts.writer.namespace, _widen=_widen, _chunks=_chunks)
        exec(forward_source, namespace)  # noqa: S102 - our own generated source
        if backward_source:
            exec(backward_source, namespace)  # noqa: S102
        # (shape, dtype) of one step, or the index of the y that is the stack
        stack_specs = [name if isinstance(name, int) else program.parts.shapes[name] for name in stacks]
        loops[key] = (namespace["forward_loop"], namespace.get("backward_loop"), stack_specs, row_sums, over_xs)
        STATS["build_seconds"] += time.perf_counter() - began
    return loops[key]


def _widen(mask: np.ndarray, ndim: int) -> np.ndarray:
    return mask.reshape(mask.shape[:1] + (1,) * (ndim - 1)) if ndim != mask.ndim else mask
