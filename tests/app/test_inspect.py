"""`minigrad-rnn inspect`: the text's properties, the unit search, and the command's files and errors."""
import json

import numpy as np
import pytest

import minigrad as mg
from minigrad_rnn.app import inspection
from minigrad_rnn.app.charlm import load_model
from minigrad_rnn.app.cli import main

TEXT = 'def f(x):\n    return "a(b)" + g(x, [1])\n'


def test_text_properties():
    p = inspection.text_properties(TEXT)
    line2 = TEXT.index("return")
    assert p["position in line"][line2] == 4 and p["position in line"][0] == 0
    assert p["indentation"][line2] == 4 and p["indentation"][0] == 0 and p["indentation"][TEXT.index("\n")] == 0
    quote = TEXT.index('"')
    assert p["inside quotes"][quote:quote + 6].tolist() == [1] * 6 and p["inside quotes"][quote + 6] == 0
    assert p["bracket depth"][TEXT.index("(")] == 1 and p["bracket depth"][TEXT.index("1")] == 2
    assert p["bracket depth"][TEXT.index(":")] == 0


def test_the_unit_that_tracks_a_property_is_found():
    rng = np.random.default_rng(0)
    props = inspection.text_properties(TEXT * 5)
    n = len(TEXT) * 5
    acts = {"layer 0 hidden state": rng.standard_normal((n, 8)), "layer 0 cell state": rng.standard_normal((n, 8))}
    acts["layer 0 cell state"][:, 5] = -0.3 * props["indentation"] + 0.01 * rng.standard_normal(n)
    best = inspection.best_units(props, acts)
    assert best["indentation"]["where"] == "layer 0 cell state" and best["indentation"]["unit"] == 5
    assert best["indentation"]["r"] < -0.99
    assert inspection.best_units({"constant": np.ones(n)}, acts) == {"constant": None}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny char-LM trained for a few steps on a text that has every character TEXT needs."""
    folder = tmp_path_factory.mktemp("inspect")
    data = folder / "data.txt"
    data.write_text(TEXT * 200)
    out = folder / "run"
    assert main(["train", "--data", str(data), "--hidden-size", "8", "--batch-size", "2", "--seq-len", "8",
                 "--sample-every", "0", "--steps", "2", "--eval-every", "2", "--out", str(out)]) == 0
    return out


def test_inspect_writes_the_page_the_heatmap_and_the_units(trained, tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text(TEXT * 3)
    capsys.readouterr()
    assert main(["inspect", "--checkpoint", str(trained), "--text", str(text), "--out", str(tmp_path / "i")]) == 0
    stdout = capsys.readouterr().out
    units = json.loads((tmp_path / "i" / "units.json").read_text())
    assert units["characters"] == len(TEXT) * 3 and set(units["units"]) == set(inspection.text_properties(TEXT))
    for prop, found in units["units"].items():
        assert -1 <= found["r"] <= 1 and 0 <= found["unit"] < 8
        assert f"{prop:>16}: {found['where']}, unit {found['unit']}" in stdout
    page = (tmp_path / "i" / "inspect.html").read_text()
    assert page.count("<span style='background:") == len(TEXT.replace("\n", "")) * 3 * 4  # 4 properties
    assert (tmp_path / "i" / "units.png").read_bytes().startswith(b"\x89PNG")
    model, _ = load_model(mg.load(str(trained / "checkpoint.safetensors")))
    acts = inspection.activations(model, np.array([1, 2, 3]))
    gates = {"input gate", "forget gate", "output gate"}
    assert {name.removeprefix("layer 0 ") for name in acts} == {"hidden state", "cell state"} | gates
    assert all(0 < a.min() and a.max() < 1 for name, a in acts.items() if name.endswith("gate"))


def test_the_heatmaps_window_fits_the_text_for_every_length():
    # --max-chars 119, 120, 121, 300 or 1000 crashed matplotlib: the window ran past the text's end
    text = (TEXT * 40)
    for length in range(1, 401):
        part = text[:length]
        n = min(len(part), inspection.HEATMAP_CHARS)
        a = inspection._window(part, inspection.text_properties(part), n)
        assert len(part[a:a + n]) == n, length


@pytest.mark.parametrize("length", [3, 119, 120, 121, 300, 1000])
def test_the_heatmap_renders_with_a_colour_bar_and_a_title(tmp_path, length):
    pytest.importorskip("matplotlib")
    text = (TEXT * 40)[:length]
    props = inspection.text_properties(text)
    acts = {"layer 0 hidden state": np.random.default_rng(0).standard_normal((len(text), 4))}
    best = {"indentation": {"where": "layer 0 hidden state", "unit": 1, "r": 0.5}}
    assert inspection.heatmap(tmp_path / "units.png", text, best, acts, props)
    assert (tmp_path / "units.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("content, message", [
    ("x", "has 1 characters; expected at least 2"),
    ("def à é", "has 2 characters the model does not know: 'à', 'é' (the model knows"),
])
def test_inspect_bad_text_is_one_line(trained, tmp_path, capsys, content, message):
    text = tmp_path / "text.txt"
    text.write_text(content)
    capsys.readouterr()
    assert main(["inspect", "--checkpoint", str(trained), "--text", str(text)]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("minigrad-rnn: error: ")


def test_inspect_without_a_checkpoint_is_one_line(tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    assert main(["inspect", "--checkpoint", str(tmp_path / "nothing"), "--text", str(text)]) == 1
    assert capsys.readouterr().err.startswith("minigrad-rnn: error: ")
