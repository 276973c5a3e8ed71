"""Look inside a trained char-LM: which hidden units track which property of the text.

Karpathy, Johnson & Fei-Fei (2015), "Visualizing and Understanding Recurrent Networks", found
LSTM cells that count the position in a line, turn on inside quotes, or track the depth of
brackets and indentation.  ``minigrad-rnn inspect`` reads a text through a trained model, keeps
every unit's activation at every character (hidden and cell states, and the gates), and for each
property below finds the unit whose activation correlates best with it (Pearson's r over the
characters).  It writes the text coloured by each such unit (HTML) and the units as a heatmap (PNG).
"""
from __future__ import annotations

import html
import sys
from pathlib import Path

import numpy as np

import minigrad as mg

from .charlm import load_trained
from .corpus import load_text
from .errors import CommandError
from .options import describe_defaults, positive_int
from .runs import prepare_out_dir, say, write_atomically, write_json

GATE_NAMES = {"lstm": ("input gate", None, "forget gate", "output gate"), "gru": ("reset gate", "update gate")}
QUOTES, OPENING, CLOSING = '"', "([{", ")]}"
HEATMAP_CHARS = 120


# --------------------------------------------------------------------------- properties of the text
def text_properties(text: str) -> dict:
    """Per character, as float arrays of len(text): the properties a unit may track.

    "inside quotes" (1 between a double quote and the next, the quotes included), "bracket depth"
    (open ( [ { at this character), "indentation" (the leading spaces of its line) and "position in
    line" (characters since the last newline).
    """
    n = len(text)
    quotes, depth, indent, column = (np.zeros(n) for _ in range(4))
    inside, level, col = False, 0, 0
    for k, ch in enumerate(text):
        if ch == QUOTES:
            inside = not inside
        quotes[k] = 1.0 if ch == QUOTES else float(inside)
        level += ch in OPENING
        depth[k] = level
        level = max(level - (ch in CLOSING), 0)
        column[k] = col
        col = 0 if ch == "\n" else col + 1
    starts = [0] + [k + 1 for k, ch in enumerate(text) if ch == "\n"]
    for a, b in zip(starts, starts[1:] + [n]):  # every character of a line gets the line's indentation
        line = text[a:b]
        indent[a:b] = len(line) - len(line.lstrip(" "))
    return {"inside quotes": quotes, "bracket depth": depth, "indentation": indent, "position in line": column}


# --------------------------------------------------------------------------- activations
def _sigmoid(z):
    return 0.5 * (1 + np.tanh(0.5 * z))


def activations(model, ids: np.ndarray) -> dict:
    """``{name: (T, units)}`` for every layer: the hidden state h, the LSTM's cell state c, and the gates.

    The states come from the layer itself (``return_states=True``, eval mode, no recording); the
    gates are recomputed from them with the cell's own weights (PyTorch's equations and gate order).
    """
    rnn = model.rnn
    kind = type(rnn).__name__.lower()
    with mg.no_grad():
        x = model.embed(ids[:, None])  # (T, 1, E)
        _, _, per_layer = rnn(x, return_states=True)
    found = {}
    layer_input = np.asarray(x)[:, 0]
    for layer, (cell, states) in enumerate(zip(rnn.cells, per_layer)):
        hs = np.stack([np.asarray(s[0] if isinstance(s, tuple) else s)[0] for s in states])  # (T, H)
        found[f"layer {layer} hidden state"] = hs
        if kind == "lstm":
            found[f"layer {layer} cell state"] = np.stack([np.asarray(s[1])[0] for s in states])
        if kind in GATE_NAMES:
            previous = np.vstack([np.zeros((1, hs.shape[1]), hs.dtype), hs[:-1]])
            pre_input = layer_input @ np.asarray(cell.weight_ih).T + _bias(cell, "bias_ih")
            pre_hidden = previous @ np.asarray(cell.weight_hh).T + _bias(cell, "bias_hh")
            H = hs.shape[1]
            for k, name in enumerate(GATE_NAMES[kind]):
                if name is not None:  # the LSTM's g (the candidate) is not a gate
                    block = slice(k * H, (k + 1) * H)
                    found[f"layer {layer} {name}"] = _sigmoid(pre_input[:, block] + pre_hidden[:, block])
        layer_input = hs
    return found


def _bias(cell, name):
    bias = getattr(cell, name, None)
    return 0.0 if bias is None else np.asarray(bias)


def best_units(properties: dict, acts: dict) -> dict:
    """For each property, the unit whose activation has the largest |Pearson r| with it:
    ``{property: {"where": name, "unit": u, "r": r}}`` (None for a property constant over the text)."""
    best = {}
    for prop, signal in properties.items():
        s = signal - signal.mean()
        if not np.any(s):
            best[prop] = None
            continue
        winner = None
        for where, a in acts.items():
            centered = a - a.mean(axis=0)
            denominator = np.linalg.norm(centered, axis=0) * np.linalg.norm(s)
            with np.errstate(invalid="ignore", divide="ignore"):
                r = np.where(denominator > 0, centered.T @ s / denominator, 0.0)
            u = int(np.argmax(np.abs(r)))
            if winner is None or abs(r[u]) > abs(winner["r"]):
                winner = {"where": where, "unit": u, "r": float(r[u])}
        best[prop] = winner
    return best


# --------------------------------------------------------------------------- pictures
def _color(value: float) -> str:
    """Red for negative, blue for positive activations (of a unit scaled to about [-1, 1]), as Karpathy et al."""
    v = float(np.clip(value, -1, 1))
    if v >= 0:
        return f"rgba(33, 102, 172, {0.85 * v:.2f})"
    return f"rgba(214, 47, 39, {-0.85 * v:.2f})"


def _scale(a: np.ndarray) -> float:
    """A unit's typical largest magnitude (99th percentile of |a|): a few outliers of a cell state must
    not wash out the colours of the rest."""
    return float(np.percentile(np.abs(a), 99)) or 1.0


def _window(text: str, properties: dict, n: int) -> int:
    """Where the heatmap's ``n`` characters (at most the text's length) start: the line start where
    the properties vary most, among those with ``n`` characters after them."""
    starts = [0] + [k + 1 for k, ch in enumerate(text[:-1]) if ch == "\n" and k + 1 + n <= len(text)]
    spread = {name: p.std() or 1.0 for name, p in properties.items()}
    return max(starts, key=lambda a: sum(p[a:a + n].std() / spread[name] for name, p in properties.items()))


def html_page(text: str, best: dict, acts: dict, source: str) -> str:
    """The text coloured character by character by each property's best unit."""
    parts = ["<!doctype html><meta charset='utf-8'><title>minigrad-rnn inspect</title>",
             "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}"
             "pre{font-family:monospace;line-height:1.35;white-space:pre-wrap;border:1px solid #ddd;padding:1em}"
             "</style>", f"<h1>Inside {html.escape(source)}</h1>",
             "<p>Each character is coloured by one unit's activation after reading it: blue positive, red "
             "negative, scaled by the unit's typical largest magnitude on this text (99th percentile) (Karpathy, Johnson &amp; Fei-Fei "
             "2015).</p>"]
    for prop, found in best.items():
        if found is None:
            parts.append(f"<h2>{html.escape(prop)}</h2><p>constant on this text: no unit to find</p>")
            continue
        a = acts[found["where"]][:, found["unit"]]
        scale = _scale(a)
        spans = "".join(f"<span style='background:{_color(v / scale)}'>{html.escape(ch)}</span>"
                        if ch != "\n" else "\n" for ch, v in zip(text, a))
        parts.append(f"<h2>{html.escape(prop)}: {html.escape(found['where'])}, unit {found['unit']} "
                     f"(r = {found['r']:.2f})</h2><pre>{spans}</pre>")
    return "\n".join(parts) + "\n"


def heatmap(path: Path, text: str, best: dict, acts: dict, properties: dict) -> bool:
    """The best units over a stretch of the text where the properties vary, as a PNG heatmap;
    False if matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    rows = [(prop, found) for prop, found in best.items() if found is not None]
    if not rows:
        return False
    n = min(len(text), HEATMAP_CHARS)
    a = _window(text, properties, n)
    values = np.array([acts[f["where"]][a:a + n, f["unit"]] / _scale(acts[f["where"]][:, f["unit"]])
                       for _, f in rows])
    fig = Figure(figsize=(max(8, n * 0.13), 1 + 0.6 * len(rows)), tight_layout=True)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
    ax.set_title(f"The units that track each property, over {n} characters of the text", fontsize=9)
    fig.colorbar(image, ax=ax, pad=0.01, fraction=0.02).set_label(
        "activation / the unit's\n99th-percentile |activation|", fontsize=7)
    ax.set_yticks(range(len(rows)), [f"{prop}: {f['where']} #{f['unit']} (r={f['r']:.2f})" for prop, f in rows],
                  fontsize=8)
    ax.set_xticks(range(n), ["⏎" if ch == "\n" else ("␣" if ch == " " else ch) for ch in text[a:a + n]],
                  fontsize=7, family="monospace")
    ax.tick_params(axis="x", length=0)
    fig.savefig(path, dpi=110)
    return True


# --------------------------------------------------------------------------- the subcommand
def cmd_inspect(args) -> int:
    """Find the units of a trained char-LM that track simple properties of a text; write HTML and a PNG."""
    model, vocab, file = load_trained(args.checkpoint)
    source = "standard input" if args.text == "-" else args.text
    text = sys.stdin.read() if args.text == "-" else load_text(args.text)
    text = text[:args.max_chars]
    if len(text) < 2:
        raise CommandError(f"--text: {source} has {len(text)} characters; expected at least 2")
    unknown = sorted(set(text) - set(vocab.items))
    if unknown:
        shown = ", ".join(repr(ch) for ch in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise CommandError(f"--text: {source} has {len(unknown)} characters the model does not know: {shown} "
                           f"(the model knows {len(vocab)} characters)")
    acts = activations(model, vocab.encode(text))
    properties = text_properties(text)
    best = best_units(properties, acts)
    out = prepare_out_dir(Path(args.out or file.parent / "inspect"), resumable=False,
                          replaces={"inspect.html", "units.png", "units.json"})  # its own files of a run before
    shown = text[:args.html_chars]
    write_atomically(out / "inspect.html", html_page(shown, best, {k: v[:len(shown)] for k, v in acts.items()},
                                                     source))
    plotted = heatmap(out / "units.png", text, best, acts, properties)
    write_json(out / "units.json", {"text": source, "characters": len(text), "units": best})
    for prop, found in best.items():
        say(f"{prop:>16}: " + ("constant on this text" if found is None else
                               f"{found['where']}, unit {found['unit']}, r = {found['r']:+.2f}"))
    say(f"wrote {out / 'inspect.html'}, {out / 'units.json'}" + (f" and {out / 'units.png'}" if plotted else ""))
    return 0


def add_commands(commands) -> None:
    """Register ``inspect`` on the command's subparsers."""
    p = commands.add_parser("inspect", help="which units of a trained char-LM track quotes, brackets, indentation")
    p.add_argument("--checkpoint", metavar="DIR", required=True, help="a train output folder (or checkpoint.safetensors)")
    p.add_argument("--text", metavar="FILE", required=True, help="UTF-8 text to read through the model (- for stdin)")
    p.add_argument("--max-chars", type=positive_int, default=20000, help="read at most this many characters")
    p.add_argument("--html-chars", type=positive_int, default=3000, help="characters shown coloured in the HTML page")
    p.add_argument("--out", metavar="DIR", help="output folder (without it: DIR/inspect beside the checkpoint)")
    describe_defaults(p, {})
    p.set_defaults(handler=cmd_inspect)
