"""The character corpus of the language model: reading text, splitting it, and truncated-BPTT batches.

Pure Python + NumPy; nothing here depends on the autograd engine. Every id
array is int64. Sequence batches are time-major: shape (time, batch).
"""
from __future__ import annotations

import math
import sysconfig
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .errors import DataError

DEFAULT_CORPUS_CHARS = 1_500_000


def load_text(path: str | Path) -> str:
    """Read a whole UTF-8 text file (a leading byte-order mark is dropped).

    Raises DataError: "data file not found: PATH", "PATH is a directory, not a
    text file", "PATH is not a regular file ...", "PATH is empty", "PATH is not valid UTF-8 (byte offset N)",
    or "cannot read PATH: REASON".
    """
    path = Path(path)
    if path.is_dir():  # checked first: Windows reports a directory as PermissionError
        raise DataError(f"{path} is a directory, not a text file")
    if path.exists() and not path.is_file():  # a device or pipe (/dev/zero, /dev/stdin) would never end
        raise DataError(f"{path} is not a regular file (a device or a pipe); expected a text file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not valid UTF-8 (byte offset {e.start})") from None
    if not text:
        raise DataError(f"{path} is empty")
    return text


def default_corpus_text(max_chars: int | None = None) -> str:
    """The built-in corpus: source code of the Python standard library.

    Reads the top-level ``*.py`` files of ``sysconfig.get_paths()["stdlib"]``
    (so no test/, idlelib/, site-packages/ or __pycache__/), sorted by file
    name, as UTF-8 with universal newlines, skipping unreadable files, joined
    by blank lines and cut to at most ``max_chars`` characters (default
    DEFAULT_CORPUS_CHARS = 1.5M). Needs no download; the result is the same on
    every call with the same Python, but varies slightly between Python
    versions. Code is a classic char-rnn corpus (Karpathy 2015 trained on
    Linux sources).

    Raises ValueError if max_chars < 1, DataError if no source file is found
    (e.g. a Python shipped without its .py files).
    """
    limit = DEFAULT_CORPUS_CHARS if max_chars is None else max_chars
    if limit < 1:
        raise ValueError(f"max_chars must be positive, got {limit}")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts, total = [], 0
    for path in sorted(stdlib.glob("*.py"), key=lambda p: p.name):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        parts.append(text)
        total += len(text) + 2
        if total >= limit:
            break
    if not parts:
        raise DataError(f"no Python source files found in {stdlib}")
    return "\n\n".join(parts)[:limit]


def _split_sizes(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    # Cumulative rounding keeps sizes non-negative and summing to n.
    a = round(n * fractions[0])
    b = min(n, round(n * (fractions[0] + fractions[1])))
    return a, b - a, n - b


def split_corpus(ids: np.ndarray, fractions: Sequence[float] = (0.9, 0.05, 0.05),
                 min_len: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut ``ids`` (1-D) into contiguous (train, valid, test) slices, in that order.

    As in char-rnn. ``fractions`` are three non-negative numbers summing to 1;
    a split with fraction 0 is empty, every other split must have at least
    ``min_len`` ids (e.g. seq_len + 1 for evaluation), else DataError says how
    many characters are needed and how many were given. Returns views.
    """
    if len(fractions) != 3 or min(fractions) < 0 or not math.isclose(sum(fractions), 1, abs_tol=1e-6):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")

    def too_short(n):
        return [(name, size) for name, size, f in zip(("train", "valid", "test"), _split_sizes(n, fractions), fractions)
                if f > 0 and size < min_len]

    n = len(ids)
    short = too_short(n)
    if short:
        need = max(n, math.floor((min_len - 1) / min(f for f in fractions if f > 0)))
        while too_short(need):  # a size is at most n*f + 1, so this loop is short
            need += 1
        name, size = short[0]
        raise DataError(f"text too short: {n} characters give a {name} split of {size}, "
                        f"each split needs at least {min_len}; need at least {need} characters")
    a, b, _ = _split_sizes(n, fractions)
    return ids[:a], ids[a:a + b], ids[a + b:]


def _streams(ids: np.ndarray, batch_size: int) -> np.ndarray:
    """Cut ids into batch_size contiguous rows; returned time-major, (len // batch_size, batch_size)."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {ids.shape}")
    length = len(ids) // batch_size
    data = ids[:length * batch_size].reshape(batch_size, length).T.copy()
    data.flags.writeable = False  # batches are views of it
    return data


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if v < 1:
            raise ValueError(f"{name} must be positive, got {v}")


class TBPTTBatches:
    """Endless truncated-BPTT batches over the training ids, as in char-rnn.

    The ids are cut into ``batch_size`` contiguous streams (the remainder,
    fewer than batch_size ids, is dropped). Batch k is ``(inputs, targets)``,
    both int64 of shape (seq_len, batch_size), time-major, read-only views:
    column b of inputs is stream b at positions k*seq_len ... k*seq_len+seq_len-1
    and targets are the same positions plus one. So column b of batch k+1
    continues exactly where batch k ended and the hidden state can be carried
    over. After ``batches_per_epoch`` batches it wraps to the start:
    ``epoch`` (completed passes) grows and ``step`` (next batch in the pass)
    returns to 0. When ``step == 0`` before ``next()``, the batch starts a
    fresh pass: reset the hidden state.

    ``state_dict()``/``load_state_dict()`` save and restore the position for
    an exact resume. Raises ValueError for non-positive sizes, DataError if
    there are fewer than batch_size * (seq_len + 1) ids.
    Sources: Karpathy's char-rnn (2015) and min-char-rnn; Williams & Peng (1990).
    """

    def __init__(self, ids: np.ndarray, batch_size: int, seq_len: int):
        _check_positive(batch_size=batch_size, seq_len=seq_len)
        need = batch_size * (seq_len + 1)
        if len(ids) < need:
            raise DataError(f"training text too short: {len(ids)} characters, but batch_size {batch_size} "
                            f"x (seq_len {seq_len} + 1) needs at least {need}")
        self.batch_size, self.seq_len, self.num_tokens = batch_size, seq_len, len(ids)
        self._data = _streams(ids, batch_size)
        self.batches_per_epoch = (len(self._data) - 1) // seq_len
        self.epoch = 0
        self.step = 0

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        s = self.step * self.seq_len
        batch = self._data[s:s + self.seq_len], self._data[s + 1:s + 1 + self.seq_len]
        self.step += 1
        if self.step == self.batches_per_epoch:
            self.epoch, self.step = self.epoch + 1, 0
        return batch

    def state_dict(self) -> dict[str, int]:
        """The position plus the layout it belongs to (all ints, JSON-friendly)."""
        return {"epoch": self.epoch, "step": self.step, "batch_size": self.batch_size,
                "seq_len": self.seq_len, "num_tokens": self.num_tokens}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore a position; raises DataError if it was saved for another layout or is out of range."""
        for key in ("batch_size", "seq_len", "num_tokens"):
            if state[key] != getattr(self, key):
                raise DataError(f"cannot resume: checkpoint has {key}={state[key]}, "
                                f"but the data gives {getattr(self, key)}")
        if not (state["epoch"] >= 0 and 0 <= state["step"] < self.batches_per_epoch):
            raise DataError(f"cannot resume: bad position epoch={state['epoch']} step={state['step']}")
        self.epoch, self.step = int(state["epoch"]), int(state["step"])


def eval_batches(ids: np.ndarray, batch_size: int,
                 seq_len: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One ordered pass of (inputs, targets) batches over ``ids``, for validation loss.

    Same layout as TBPTTBatches (carry the hidden state between batches,
    starting from zeros) but finite: every position of each stream is a
    target once except its first, and the last batch may be shorter in time,
    shape (k <= seq_len, batch_size). Weight each batch's mean loss by
    ``targets.size``. Raises ValueError for non-positive sizes, DataError if
    there are fewer than 2 * batch_size ids.
    """
    _check_positive(batch_size=batch_size, seq_len=seq_len)
    if len(ids) < 2 * batch_size:
        raise DataError(f"evaluation text too short: {len(ids)} characters, "
                        f"batch_size {batch_size} needs at least {2 * batch_size}")
    data = _streams(ids, batch_size)
    n = len(data) - 1  # positions that have a next character

    def batches():
        for s in range(0, n, seq_len):
            k = min(seq_len, n - s)
            yield data[s:s + k], data[s + 1:s + 1 + k]
    return batches()
