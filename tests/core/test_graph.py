"""minigrad.to_dot / draw: the DOT text names every op and tensor of the tape, clusters group the
steps of an unrolled RNN, and a picture is rendered (Graphviz is installed in CI)."""
import os
import re
import shutil

import numpy as np
import pytest

import minigrad as mg
from minigrad_rnn import RNNCell, run_cell


def _require_graphviz():
    """Skip when the graphviz package or the dot program is missing; fail instead under CI."""
    missing = [what for what, found in (("the graphviz package", _importable("graphviz")),
                                        ("Graphviz's dot program", shutil.which("dot"))) if not found]
    if missing:
        reason = f"{' and '.join(missing)} not installed"
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(f"{reason} (CI installs both)")
        pytest.skip(reason)


def _importable(name):
    try:
        __import__(name)
        return True
    except ImportError:
        return False


def small_graph():
    x = mg.Tensor(np.array([0.5, -1.0]), requires_grad=True)
    w = mg.Tensor(np.array([2.0, 3.0]), requires_grad=True)
    y = (mg.tanh(x * w) * x).sum()
    return x, w, y


def test_the_dot_text_names_every_op_and_tensor_of_the_tape():
    x, w, y = small_graph()
    dot = mg.to_dot(y)
    tape = mg.tape(y)
    assert dot.startswith("digraph minigrad {") and dot.rstrip().endswith("}")
    assert re.findall(r'label="(\w+)"', dot) == [line.op for line in tape] == ["mul", "tanh", "mul", "sum"]
    for name in ("x0", "x1", "%0", "%1", "%2", "%3"):
        assert f"<b>{name}</b>" in dot
    assert dot.count(" -> ") == (2 + 1) + (1 + 1) + (2 + 1) + (1 + 1)  # each op: its inputs in, its output out
    assert "(2,) float64" in dot and "data " not in dot


def test_show_values_prints_values_and_the_gradients_after_backward():
    x, w, y = small_graph()
    y.backward(retain_graph=True)
    dot = mg.to_dot(y, show_values=True)
    expected = np.tanh(0.5 * 2.0) + 0.5 * 2.0 * (1 - np.tanh(1.0) ** 2)  # dy/dx_0
    assert f"grad [ {expected:.4f}" in dot and "data [ 0.5, -1. ]" in dot
    large = mg.Tensor(np.arange(10.0), requires_grad=True)
    assert "10 values in [0, 9]" in mg.to_dot((large * 2).sum(), show_values=True)


def test_clusters_group_the_ops_of_each_time_step():
    cell = RNNCell(2, 3, dtype=np.float64, rng=np.random.default_rng(0))
    with mg.graph.cluster_calls(cell, "step", "t={}") as steps:
        out, _ = run_cell(cell, mg.Tensor(np.ones((3, 1, 2))), compile=False)
    assert "step" not in vars(cell)  # the wrapper is gone after the block
    assert [label for label, _, _ in steps] == ["t=0", "t=1", "t=2"]
    dot = mg.to_dot(out.sum(), clusters=steps)
    for k in range(3):
        block = dot.split(f"subgraph cluster_{k} {{")[1].split("  }")[0]
        assert f'label="t={k}"' in block and 'label="addmm"' in block and 'label="tanh"' in block


def test_errors_name_what_was_expected(tmp_path):
    x, w, y = small_graph()
    with pytest.raises(TypeError, match="to_dot: expected a Tensor, got ndarray"):
        mg.to_dot(np.ones(2))
    with pytest.raises(ValueError, match="draw: cannot render to .* expected a .svg, .png or .pdf path"):
        mg.draw(y, tmp_path / "graph.jpg")
    y.backward()
    with pytest.raises(RuntimeError, match=r"to_dot: a backward pass freed this graph.*retain_graph=True"):
        mg.to_dot(y)


def test_a_missing_graphviz_is_one_line_saying_how_to_install_it(tmp_path, monkeypatch):
    _, _, y = small_graph()
    monkeypatch.setitem(__import__("sys").modules, "graphviz", None)  # import graphviz fails
    with pytest.raises(RuntimeError, match=r'draw: needs the graphviz package: pip install "minigrad\[graph\]"'):
        mg.draw(y, tmp_path / "graph.svg")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_dot_program_is_one_line_and_leaves_no_file(tmp_path, monkeypatch):
    pytest.importorskip("graphviz")
    _, _, y = small_graph()
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot on PATH
    with pytest.raises(RuntimeError, match="draw: needs Graphviz's dot program on PATH: apt-get install graphviz"):
        mg.draw(y, tmp_path / "graph.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix, magic", [(".svg", b"<?xml"), (".png", b"\x89PNG"), (".pdf", b"%PDF")])
def test_draw_renders_a_picture(tmp_path, suffix, magic):
    _require_graphviz()
    _, _, y = small_graph()
    y.backward(retain_graph=True)
    path = mg.draw(y, tmp_path / f"graph{suffix}", show_values=True)
    data = open(path, "rb").read()
    assert data.startswith(magic) and len(data) > 1000
    if suffix == ".svg":
        text = data.decode()
        for op in ("mul", "tanh", "sum"):
            assert f">{op}</text>" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"graph{suffix}"]  # no temporary file left
