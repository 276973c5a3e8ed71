"""Pictures of the graph: Graphviz DOT text of the tape behind a tensor, and its rendering.

As micrograd's ``draw_dot``: tensors are boxes (name, shape, dtype; with ``show_values``
their values and gradients), ops are ellipses, and an edge runs from each input through the
op to its output.  :func:`to_dot` needs nothing but minigrad; :func:`draw` renders with the
``graphviz`` package and Graphviz's ``dot`` program.  An unrolled RNN stays readable when the
ops of each time step are grouped into a cluster (:func:`cluster_calls`)::

    with mg.graph.cluster_calls(cell, "step", "t={}") as steps:
        out, h = run_cell(cell, x, compile=False)
    mg.draw(loss, "bptt.svg", clusters=steps)
"""
from __future__ import annotations

import contextlib
import html
import os

import numpy as np

from . import entries
from .entries import tape
from .tensor import Tensor

__all__ = ["to_dot", "draw", "cluster_calls"]

_FORMATS = ("svg", "png", "pdf")


@contextlib.contextmanager
def cluster_calls(obj, method: str = "step", label: str = "t={}"):
    """While the block runs, each call of ``obj.method`` groups the ops it records into one cluster.

    Args:
        obj: e.g. a recurrent cell; ``method`` is wrapped on this instance only, and restored after.
        label: the cluster's title, formatted with the call's number (0, 1, ...).

    Yields a list of ``(label, first, last)``, the range of tape-entry indices each call recorded,
    to pass to :func:`to_dot` / :func:`draw` as ``clusters``.  The compiled driver records one
    entry for the whole loop, so run the cell with ``compile=False``.
    """
    clusters, inner = [], getattr(obj, method)

    def wrapped(*args, **kwargs):
        first = next(entries.ENTRY_INDEX)
        try:
            return inner(*args, **kwargs)
        finally:
            clusters.append((label.format(len(clusters)), first, next(entries.ENTRY_INDEX)))

    setattr(obj, method, wrapped)
    try:
        yield clusters
    finally:
        if vars(obj).get(method) is wrapped:
            delattr(obj, method)


def _shape(t) -> str:
    return f"({', '.join(map(str, t.shape))}{',' if t.ndim == 1 else ''}) {t.dtype}"


def _array_text(a, limit: int = 6) -> str:
    a = np.asarray(a)
    if a.size > limit:
        return f"{a.size} values in [{a.min():.4g}, {a.max():.4g}]"
    return np.array2string(a, precision=4, separator=", ", suppress_small=True).replace("\n", "")


def _tensor_label(t, name: str, show_values: bool) -> str:
    rows = [f"<b>{html.escape(name)}</b> {html.escape(_shape(t))}"]
    if show_values:
        rows.append(f"data {html.escape(_array_text(t._data))}")
        if t.grad is not None:
            rows.append(f"grad {html.escape(_array_text(t.grad._data))}")
    return "<" + "<br/>".join(rows) + ">"


def to_dot(tensor, show_values: bool = False, clusters=None, rankdir: str = "LR") -> str:
    """Graphviz DOT text of the graph that produced ``tensor`` (no dependency).

    Args:
        tensor: a Tensor; its tape (:func:`minigrad.tape`) is drawn.  The names are the tape's:
            leaves ``x0, x1, ...``, constants ``c0, ...``, the output of entry k ``%k``.
        show_values: also print each tensor's values and, where it has one (after
            ``backward(retain_graph=True)``: leaves, and tensors that ``retain_grad()``), its
            gradient; arrays of more than 6 elements are summarised by their range.
        clusters: ``(label, first, last)`` ranges of entry indices, e.g. from :func:`cluster_calls`:
            the ops recorded in each range (and their outputs) are drawn inside one box.
        rankdir: Graphviz's layout direction: "LR" (left to right), "TB" (top to bottom), "RL" or "BT".

    Returns:
        The DOT source, a ``digraph``: each op an ellipse named after the op, each tensor a box.

    Raises:
        TypeError: ``tensor`` is not a Tensor.
        ValueError: an unknown ``rankdir``.
        RuntimeError: a backward pass without ``retain_graph=True`` freed the graph.
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"to_dot: expected a Tensor, got {type(tensor).__name__}")
    if rankdir not in ("LR", "TB", "RL", "BT"):
        raise ValueError(f"to_dot: rankdir must be LR, TB, RL or BT; got {rankdir!r}")
    try:
        lines = tape(tensor)
    except RuntimeError:
        raise RuntimeError("to_dot: a backward pass freed this graph; to draw it with its gradients, "
                           "call backward(retain_graph=True)") from None
    names = lines[0].names if lines else {tensor: "x0" if tensor._requires_grad else "c0"}
    ids = {t: f"t{k}" for k, t in enumerate(names)}
    out = ["digraph minigrad {", f"  rankdir={rankdir};",
           '  node [fontname="Helvetica", fontsize=10]; edge [arrowsize=0.6];']
    boxes = {}  # tensor -> the cluster it is drawn in (None: outside every cluster)
    for line in lines:
        boxes[line.output] = _cluster_of(line.entry.index, clusters)
    groups: dict = {}
    for t in names:
        groups.setdefault(boxes.get(t), []).append(("tensor", t))
    for line in lines:
        groups.setdefault(boxes[line.output], []).append(("op", line))
    for key, members in groups.items():
        indent = "  "
        if key is not None:
            out.append(f"  subgraph cluster_{key} {{")
            out.append(f'    label="{_escape(clusters[key][0])}"; style=rounded; color=gray60;')
            indent = "    "
        for kind, item in members:
            if kind == "tensor":
                style = "filled" if item._requires_grad and item._entry is None else "solid"
                out.append(f'{indent}{ids[item]} [shape=box, style="{style}", fillcolor=lightblue, '
                           f"label={_tensor_label(item, names[item], show_values)}];")
            else:
                out.append(f'{indent}op{item.index} [shape=ellipse, label="{_escape(item.op)}"];')
        if key is not None:
            out.append("  }")
    for line in lines:
        for x in dict.fromkeys(line.inputs):  # an op reading a tensor twice gets one edge
            out.append(f"  {ids[x]} -> op{line.index};")
        out.append(f"  op{line.index} -> {ids[line.output]};")
    out.append("}")
    return "\n".join(out) + "\n"


def _cluster_of(index: int, clusters):
    for k, (_, first, last) in enumerate(clusters or ()):
        if first <= index <= last:
            return k
    return None


def _escape(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace('"', '\\"')


def draw(tensor, path, show_values: bool = False, clusters=None, rankdir: str = "LR") -> str:
    """Render :func:`to_dot`'s picture of ``tensor``'s graph to ``path`` (.svg, .png or .pdf).

    Needs the ``graphviz`` Python package (``pip install "minigrad[graph]"``) and Graphviz's
    ``dot`` program (``apt-get install graphviz``, ``brew install graphviz``, ``conda install
    graphviz``).  The file is written atomically: nothing half-written is left if rendering fails.

    Returns:
        ``path`` as a string.

    Raises:
        ValueError: the suffix is not .svg, .png or .pdf.
        RuntimeError: the graphviz package or the dot program is missing (one line saying how to
            install it), or dot failed.
    """
    path = os.fspath(path)
    fmt = os.path.splitext(path)[1].lstrip(".").lower()
    if fmt not in _FORMATS:
        raise ValueError(f"draw: cannot render to {path!r}; expected a .svg, .png or .pdf path")
    source = to_dot(tensor, show_values, clusters, rankdir)
    try:
        import graphviz
    except ImportError:
        raise RuntimeError('draw: needs the graphviz package: pip install "minigrad[graph]" '
                           "(or call minigrad.to_dot for the DOT text)") from None
    try:
        data = graphviz.Source(source).pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise RuntimeError("draw: needs Graphviz's dot program on PATH: apt-get install graphviz, "
                           "brew install graphviz or conda install graphviz") from None
    except graphviz.CalledProcessError as error:
        raise RuntimeError(f"draw: dot failed: {error.stderr.decode(errors='replace').strip()}") from None
    from .serialization import _write_atomically

    _write_atomically(path, data)
    return path
