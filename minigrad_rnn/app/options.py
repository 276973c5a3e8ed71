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


def add_common_options(p, *, cell=True, dtype="float32"):
    """The options most subcommands share: cell, sizes, learning rate, seed, dtype."""
    if cell:
        p.add_argument("--cell", choices=sorted(CELLS), help="recurrent cell (default lstm)")
    p.add_argument("--hidden-size", type=size, help="hidden units per layer")
    p.add_argument("--batch-size", type=size, help="sequences per batch")
    p.add_argument("--lr", type=positive_float, help="learning rate")
    p.add_argument("--seed", type=nonnegative_int, help="random seed (default 0)")
    p.add_argument("--dtype", choices=["float32", "float64"], help=f"floating-point type (default {dtype})")
