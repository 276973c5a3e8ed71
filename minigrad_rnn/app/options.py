"""The option types and shared options of the ``minigrad-rnn`` subcommands."""
from __future__ import annotations

import argparse
import math

from minigrad import optim

from ..layers import GRU, LSTM, RNN
from .errors import UsageError
from .runs import MAX_SIZE  # a layer size, batch or sequence length beyond it is a typo, not a model

CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
OPTIMIZERS = {"adam": optim.Adam, "rmsprop": optim.RMSprop, "adagrad": optim.Adagrad, "sgd": optim.SGD}


def make_optimizer(name: str, params, lr: float):
    """One of OPTIMIZERS with the learning rate ``lr`` and PyTorch's other defaults."""
    return OPTIMIZERS[name](params, lr=lr)


def _number(kind, test, expected):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not (math.isfinite(value) and test(value)):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return parse


positive_int = _number(int, lambda v: v >= 1, "a positive integer")
size = _number(int, lambda v: 1 <= v <= MAX_SIZE, f"a positive integer up to {MAX_SIZE}")
nonnegative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: v > 0, "a positive number")
nonnegative_float = _number(float, lambda v: v >= 0, "a number >= 0")
dropout_probability = _number(float, lambda v: 0 <= v < 1, "a probability in [0, 1)")
finite_float = _number(float, lambda v: True, "a number")
open_fraction = _number(float, lambda v: 0 < v < 1, "a fraction in (0, 1)")


def cell_list(text):
    """argparse type: "rnn,lstm" -> ["rnn", "lstm"]; ArgumentTypeError names the known cells."""
    cells = text.split(",")
    unknown = [c for c in cells if c not in CELLS]
    if unknown or not text:
        raise argparse.ArgumentTypeError(f"expected cells among {', '.join(sorted(CELLS))} "
                                         f"separated by commas, got {text!r}")
    return cells


class Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage dump) and never exit the process."""

    def error(self, message):
        raise UsageError(message)


def add_common_options(p, *, cell=True):
    """The options most subcommands share: cell, sizes, learning rate, seed, dtype."""
    if cell:
        p.add_argument("--cell", choices=sorted(CELLS), help="recurrent cell")
    p.add_argument("--hidden-size", type=size, help="hidden units per layer")
    p.add_argument("--batch-size", type=size, help="sequences per batch")
    p.add_argument("--lr", type=positive_float, help="learning rate")
    p.add_argument("--seed", type=nonnegative_int, help="random seed")
    p.add_argument("--dtype", choices=["float32", "float64"], help="floating-point type")


def add_run_folder_options(p, out: str, continues: str = "exactly where it stopped") -> None:
    """``--out`` (``out`` says what happens without it) and ``--resume``, as every training task has them."""
    p.add_argument("--out", metavar="DIR", help=f"output folder, new or empty ({out})")
    p.add_argument("--resume", metavar="DIR",
                   help=f"continue the run in DIR (or from DIR/checkpoint.safetensors) {continues}")


def show_default(value) -> str:
    """A default as its option would be typed: 0.002, 10, additive,none."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def describe_defaults(parser, defaults: dict, alternative: dict | None = None, when: str = "") -> None:
    """Append to each option's help the default the command uses: from ``defaults`` (the dict the
    command resolves its config from), else the option's argparse default; where ``alternative``
    (used ``when``, e.g. "with --data") differs, that too.  So the help cannot drift from the code.
    The dicts are kept on the parser as ``parser.task_defaults``, for the test that checks --help."""
    parser.task_defaults = (defaults, alternative or {}, when)
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        value = defaults.get(action.dest, action.default)
        if value is None or value is argparse.SUPPRESS:
            continue  # no default: the help says what happens without it
        text = f"default {show_default(value)}"
        if alternative and action.dest in alternative and alternative[action.dest] != value:
            text += f"; {show_default(alternative[action.dest])} {when}"
        action.help = f"{action.help} ({text})".replace("%", "%%") if action.help else text
