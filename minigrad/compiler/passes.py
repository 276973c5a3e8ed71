"""The simplifications of a traced program, each a function of its nodes: identities, common
subexpressions and dead code, broadcasts that the ops do anyway, slice cotangents written into one
buffer, and ops writing into their destinations.
"""
from __future__ import annotations

import collections

import numpy as np

from .. import ops
from .codegen import (
    ADD_INTO, ALLOCATE, SCATTER_SUM, WRITE_BLOCKS, _Node, _index_source, _param_key, _writes_into,
)


_IDENTITIES = {"sum_to": "shape", "reshape": "shape", "broadcast_to": "shape"}


def _simplify(nodes: list, returns: list, shapes: dict) -> tuple[list, list]:
    """Drop identities (``sum_to``/``reshape``/``broadcast_to`` to the input's own shape, ``astype`` to
    its dtype), merge common subexpressions and remove dead code; ``returns`` are kept.

    A sum with a negation, ``add(g, neg(b))`` (a ``sub``'s VJP meeting another term), becomes
    ``sub(g, b)``: the same rounding, one op fewer once the ``neg`` is dead.

    Returns the kept nodes, ``returns`` renamed, and the renaming (``alias``)."""
    alias, kept, seen, negated = {}, [], {}, {}
    for node in nodes:
        args = tuple(alias.get(a, a) for a in node.args)
        name = node.op.name
        if node.op is ops.neg.op:
            negated[node.out] = args[0]
        elif node.op is ops.add.op and not node.params and any(a in negated for a in args):
            g, b = args if args[1] in negated else args[::-1]
            node.op, args = ops.sub.op, (g, negated[b])
        if len(args) == 1 and (
                (name in _IDENTITIES and tuple(node.params.get(_IDENTITIES[name], ())) == shapes[args[0]][0])
                or (name == "astype" and np.dtype(node.params["dtype"]) == shapes[args[0]][1])):
            alias[node.out] = args[0]
            continue
        try:
            key = (id(node.op), args, tuple((k, _param_key(v)) for k, v in node.params.items()))
        except TypeError:
            key = None
        if key is not None and key in seen:
            alias[node.out] = seen[key]
            continue
        if key is not None:
            seen[key] = node.out
        node.args = args
        kept.append(node)
    returns = [alias.get(r, r) for r in returns]
    return _live(kept, returns), returns, alias


def _drop_broadcasts(nodes: list, returns: list, shapes: dict) -> list:
    """Drop a ``broadcast_to`` (as the VJP of a sum makes) whose every use is an elementwise op that
    broadcasts its inputs anyway, to the same output shape."""
    users = collections.defaultdict(list)
    for node in nodes:
        for a in node.args:
            users[a].append(node)
    returned = {name for r in returns for name in (r if isinstance(r, tuple) else (r,))}
    alias = {}
    for node in nodes:
        if node.op.name != "broadcast_to" or node.out in returned or not users[node.out]:
            continue
        source = node.args[0]
        if all(u.op.broadcasts and u.op.elementwise and not u.params and np.broadcast_shapes(
                *(shapes[source if a == node.out else a][0] for a in u.args)) == u.shape for u in users[node.out]):
            alias[node.out] = source
    if not alias:
        return nodes
    kept = []
    for node in nodes:
        if node.out in alias:
            continue
        node.args = tuple(alias.get(a, a) for a in node.args)
        kept.append(node)
    return kept


# Ops whose output is a fresh array (no view of an input): a temporary the program may add into.
_FRESH = frozenset({"mul", "add", "sub", "div", "neg", "tanh_backward", "sigmoid_backward", "relu_backward",
                    "matmul", "addmm", "scatter_add", "scatter_sum", "add_into"})


def _fuse_slice_cotangents(nodes: list, returns: list, shapes: dict) -> list:
    """Write a sum of slice cotangents (``add`` of ``scatter_add`` terms, as the VJP of an LSTM's gate
    blocks makes) into ONE buffer, and add a slice term into a dense temporary in place."""
    producers = {n.out: n for n in nodes}
    uses = collections.Counter(a for n in nodes for a in n.args)
    uses.update(name for r in returns for name in (r if isinstance(r, tuple) else (r,)))

    def terms(name):
        """The (g, index, basic) slice terms summed in ``name``, if it is only such a sum: one slice
        (its buffer is then left to dead code, also where several sums read it, as a GRU's do), or
        a sum of several used once."""
        node = producers.get(name)
        if node is None:
            return None
        if node.op.name == "scatter_add":
            return [(node.args[0], node.params["index"], node.params["basic"])]
        if uses[name] != 1:
            return None
        if node.op.name == "scatter_sum":
            return list(zip(node.args, node.params["indices"], node.params["basics"]))
        return None

    fused = []
    for node in nodes:
        if node.op.name == "add" and len(node.args) == 2:
            left, right = terms(node.args[0]), terms(node.args[1])
            same_shape = shapes[node.args[0]][0] == shapes[node.args[1]][0] == node.shape
            if same_shape and left is not None and right is not None:
                items = left + right
                node = _Node(node.out, SCATTER_SUM, tuple(g for g, _, _ in items),
                             {"indices": tuple(i for _, i, _ in items), "basics": tuple(b for _, _, b in items),
                              "shape": node.shape}, node.shape, node.dtype)
            else:
                for slice_side, dense in ((left, node.args[1]), (right, node.args[0])):
                    dense_node = producers.get(dense)
                    if (slice_side is not None and same_shape and dense_node is not None and uses[dense] == 1
                            and dense_node.op.name in _FRESH and dense_node.dtype == node.dtype):
                        node = _Node(node.out, ADD_INTO, (dense, *(g for g, _, _ in slice_side)),
                                     {"indices": tuple(i for _, i, _ in slice_side),
                                      "basics": tuple(b for _, _, b in slice_side)}, node.shape, node.dtype)
                        break
        producers[node.out] = node
        fused.append(node)
    return _live(fused, returns)


def _write_blocks_in_place(nodes: list, returns: list) -> list:
    """A sum of slice cotangents into disjoint blocks (an LSTM's gate blocks): each block is written
    once, into ``np.empty`` where the blocks cover the buffer, else ``np.zeros``, and by the op that
    makes it where it can (:func:`_write_directly`); overlapping blocks are left to add up."""
    position = {n.out: k for k, n in enumerate(nodes)}
    allocations, blocks = {}, {}  # the node before which a buffer is allocated -> its allocation
    for node in nodes:
        p = node.params
        if node.op is not SCATTER_SUM or not all(p["basics"]) or None in map(_index_source, p["indices"]):
            continue
        cover = np.zeros(node.shape, np.uint8)
        for index in p["indices"]:
            cover[index] += 1
        if cover.max(initial=0) > 1:
            continue
        fill = "empty" if cover.all() else "zeros"
        first = min((g for g in node.args if g in position), key=position.get, default=node.out)
        allocations[first] = _Node(node.out, ALLOCATE, (), {"shape": node.shape, "dtype": node.dtype, "fill": fill},
                                   node.shape, node.dtype)
        blocks[node.out] = _Node(node.out, WRITE_BLOCKS, node.args, {
            "indices": p["indices"], "written": (False,) * len(node.args), "shape": node.shape}, node.shape, node.dtype)
    result = []
    for node in nodes:
        if node.out in allocations:
            result.append(allocations[node.out])
        result.append(blocks[node.out] if node.op is SCATTER_SUM and node.out in blocks else node)
    return _write_directly(result, returns)


def _write_directly(nodes: list, returns: list) -> list:
    """Each block of a ``write_blocks`` buffer that a ufunc makes, used only there, is written by that
    op into its place (``mul(b0, v10, out=b15[:, 96:128])``), not into a new array copied after."""
    producers = {n.out: k for k, n in enumerate(nodes)}
    uses = collections.Counter(a for n in nodes for a in n.args)
    uses.update(name for r in returns for name in (r if isinstance(r, tuple) else (r,)))
    nodes = list(nodes)
    changed_in_place = {n.args[0] for n in nodes if n.op is ADD_INTO}
    for k, node in enumerate(nodes):
        if node.op is not WRITE_BLOCKS:
            continue
        written, layout = list(node.params["written"]), np.empty(node.shape, np.uint8)  # (for the blocks' shapes)
        for j, (g, index) in enumerate(zip(node.args, node.params["indices"])):
            source = nodes[producers[g]] if g in producers else None
            # a value used again is then read from its block: only if nothing adds into the buffer later
            if (not written[j] and source is not None and (uses[g] == 1 or node.out not in changed_in_place)
                    and _writes_into(source.op.forward) and not source.params and source.into is None
                    and source.dtype == node.dtype and source.shape == layout[index].shape):
                nodes[producers[g]] = _Node(g, source.op, source.args, {}, source.shape, source.dtype,
                                            into=(node.out, index))
                written[j] = True
        nodes[k] = _Node(node.out, WRITE_BLOCKS, node.args, dict(node.params, written=tuple(written)), node.shape,
                         node.dtype)
    return nodes


def _live(nodes: list, returns: list) -> list:
    """The nodes that ``returns`` (names, or pairs of names) need: dead code removed."""
    needed = {name for r in returns for name in (r if isinstance(r, tuple) else (r,))}
    live = []
    for node in reversed(nodes):
        if node.out in needed:
            live.append(node)
            needed.update(node.args)
    return live[::-1]
