"""Data for the ``minigrad-rnn`` command: a character corpus for language
modelling and Universal Dependencies sentences for part-of-speech tagging.

Pure Python + NumPy; nothing here depends on the autograd engine. Every id
array is int64. Sequence batches are time-major: shape (time, batch).
"""
from __future__ import annotations

import math
import re
import sysconfig
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

DEFAULT_CORPUS_CHARS = 1_500_000
PAD, UNK = "<pad>", "<unk>"   # ids 0 and 1 in vocabularies with specials
IGNORE_INDEX = -100           # tag id at padding: use as the loss's ignore_index
UPOS_TAGS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM",
             "PART", "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X")


class DataError(ValueError):
    """Bad or unsuitable input data; the message is one line meant for the user."""


# --------------------------------------------------------------------------
# Text files and the character corpus
# --------------------------------------------------------------------------

def load_text(path: str | Path) -> str:
    """Read a whole UTF-8 text file (a leading byte-order mark is dropped).

    Raises DataError: "data file not found: PATH", "PATH is a directory, not a
    text file", "PATH is empty", "PATH is not valid UTF-8 (byte offset N)",
    or "cannot read PATH: REASON".
    """
    path = Path(path)
    if path.is_dir():  # checked first: Windows reports a directory as PermissionError
        raise DataError(f"{path} is a directory, not a text file")
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


class Vocabulary:
    """Characters <-> ids for the language model: id i is ``chars[i]``.

    Build with ``Vocabulary.from_text(text)`` (sorted unique characters) or
    ``Vocabulary.from_list(saved)``. Raises DataError if ``chars`` is empty,
    has duplicates or has entries that are not single characters.
    """

    def __init__(self, chars: Iterable[str]):
        self.chars = list(chars)
        if not self.chars:
            raise DataError("vocabulary is empty")
        if not all(isinstance(c, str) and len(c) == 1 for c in self.chars):
            raise DataError("vocabulary entries must be single characters")
        if len(set(self.chars)) != len(self.chars):
            raise DataError("vocabulary has duplicate characters")
        codes = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        self._order = np.argsort(codes)  # ids by code point, for searchsorted
        self._sorted = codes[self._order]

    @classmethod
    def from_text(cls, text: str) -> Vocabulary:
        return cls(sorted(set(text)))

    @classmethod
    def from_list(cls, chars: list[str]) -> Vocabulary:
        return cls(chars)

    def to_list(self) -> list[str]:
        """JSON-friendly list of the characters in id order."""
        return list(self.chars)

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """Ids of the characters of ``text``: int64 array of shape (len(text),).

        Raises DataError naming the characters that are not in the vocabulary.
        """
        # Vectorised lookup: code points -> position among the sorted codes.
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        pos = np.searchsorted(self._sorted, codes).clip(max=len(self) - 1)
        unknown = np.unique(codes[self._sorted[pos] != codes])
        if unknown.size:
            names = ", ".join(repr(chr(c)) for c in unknown[:10])
            more = f" and {unknown.size - 10} more" if unknown.size > 10 else ""
            raise DataError(f"characters not in the vocabulary: {names}{more}")
        return self._order[pos].astype(np.int64)

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """The text for a sequence of ids. Raises DataError for an id out of range."""
        return "".join([self.chars[i] for i in _checked_ids(ids, len(self))])


def _checked_ids(ids: Iterable[int] | np.ndarray, size: int) -> list[int]:
    # Explicit check: a negative id (e.g. IGNORE_INDEX) would otherwise index from the end.
    ids = np.asarray(ids, dtype=np.int64).ravel()
    if ids.size and (ids.min() < 0 or ids.max() >= size):
        raise DataError(f"ids must be in [0, {size}), got {ids.min()}..{ids.max()}")
    return ids.tolist()


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


# --------------------------------------------------------------------------
# Part-of-speech data: Universal Dependencies CoNLL-U
# --------------------------------------------------------------------------

class Sentence(NamedTuple):
    """One sentence: its syntactic words and their universal POS tags (same length)."""
    words: list[str]
    upos: list[str]


_WORD_ID = re.compile(r"[1-9][0-9]*")
_SKIPPED_ID = re.compile(r"[1-9][0-9]*-[1-9][0-9]*|[0-9]+\.[1-9][0-9]*")  # multi-word token, empty node


def parse_conllu(text: str, source: str = "<string>") -> list[Sentence]:
    """Parse CoNLL-U text into sentences of (FORM, UPOS) of the syntactic words.

    Comment lines (#) are ignored; a blank line ends a sentence; multi-word
    token lines (ID "3-4") and empty nodes (ID "8.1") are skipped, since the
    words they span are listed on their own lines. A malformed line (not 10
    tab-separated fields, non-numeric or out-of-sequence ID, empty FORM,
    missing UPOS) raises DataError "SOURCE:LINE: ...". Format:
    https://universaldependencies.org/format.html
    """
    sentences, words, tags = [], [], []

    def fail(lineno, message):
        raise DataError(f"{source}:{lineno}: {message}")

    # split("\n"), not splitlines(): the latter also breaks at \x1c, \u2028, ...
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            if words:
                sentences.append(Sentence(words, tags))
                words, tags = [], []
            continue
        if line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 10:
            fail(lineno, f"expected 10 tab-separated fields, got {len(fields)}")
        if _SKIPPED_ID.fullmatch(fields[0]):
            continue
        if not _WORD_ID.fullmatch(fields[0]):
            fail(lineno, f"bad word ID {fields[0]!r}")
        if int(fields[0]) != len(words) + 1:
            fail(lineno, f"expected word ID {len(words) + 1}, got {fields[0]} (missing blank line?)")
        form, upos = fields[1], fields[3]
        if not form:
            fail(lineno, "empty FORM")
        if upos in ("", "_"):
            fail(lineno, f"missing UPOS for {form!r}")
        words.append(form)
        tags.append(upos)
    if words:
        sentences.append(Sentence(words, tags))
    return sentences


def read_conllu(path: str | Path) -> list[Sentence]:
    """Read a CoNLL-U file (see parse_conllu). Raises DataError for an
    unreadable or malformed file ("PATH:LINE: ...") and for a file without sentences."""
    sentences = parse_conllu(load_text(path), str(path))
    if not sentences:
        raise DataError(f"{path} contains no sentences")
    return sentences


class TokenVocab:
    """Strings <-> ids for the tagger: words, characters or tags.

    ``items`` are all entries in id order. With ``specials=True`` items[0] is
    PAD ("<pad>", id 0) and items[1] is UNK ("<unk>", id 1), and unknown
    strings map to 1; without, unknown strings raise DataError. With
    ``lower=True`` strings are lowercased before lookup.
    """

    def __init__(self, items: list[str], *, specials: bool, lower: bool = False):
        self.items, self.specials, self.lower = list(items), specials, lower
        if specials and self.items[:2] != [PAD, UNK]:
            raise DataError(f"a vocabulary with specials must start with {PAD!r}, {UNK!r}")
        self._index = {s: i for i, s in enumerate(self.items)}
        if len(self._index) != len(self.items):
            raise DataError("vocabulary has duplicate entries")

    @classmethod
    def build(cls, tokens: Iterable[str], *, specials: bool, lower: bool = False,
              min_count: int = 1) -> TokenVocab:
        """Vocabulary of the tokens seen at least ``min_count`` times, most frequent first (ties by string)."""
        counts = Counter(t.lower() if lower else t for t in tokens)
        kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        head = [PAD, UNK] if specials else []
        return cls(head + [t for t in kept if t not in head], specials=specials, lower=lower)

    def __len__(self) -> int:
        return len(self.items)

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        """int64 ids of shape (len(tokens),); a str is encoded character by character."""
        tokens = [t.lower() for t in tokens] if self.lower else list(tokens)
        if self.specials:
            return np.array([self._index.get(t, 1) for t in tokens], dtype=np.int64)
        unknown = sorted(set(tokens) - self._index.keys())
        if unknown:
            raise DataError(f"not in the vocabulary: {', '.join(map(repr, unknown[:10]))}")
        return np.array([self._index[t] for t in tokens], dtype=np.int64)

    def decode(self, ids: Iterable[int] | np.ndarray) -> list[str]:
        """The strings for a sequence of ids. Raises DataError for an id out of range."""
        return [self.items[i] for i in _checked_ids(ids, len(self))]

    def to_dict(self) -> dict:
        """JSON-friendly form: {"items": [...], "specials": bool, "lower": bool}."""
        return {"items": list(self.items), "specials": self.specials, "lower": self.lower}

    @classmethod
    def from_dict(cls, d: dict) -> TokenVocab:
        return cls(d["items"], specials=d["specials"], lower=d["lower"])


def build_word_vocab(sentences: Sequence[Sentence], min_count: int = 1, lower: bool = False) -> TokenVocab:
    """Word vocabulary with <pad>=0, <unk>=1; build it from the training sentences only."""
    return TokenVocab.build((w for s in sentences for w in s.words), specials=True, lower=lower, min_count=min_count)


def build_char_vocab(sentences: Sequence[Sentence], min_count: int = 1) -> TokenVocab:
    """Character vocabulary (case kept) with <pad>=0, <unk>=1."""
    return TokenVocab.build((c for s in sentences for w in s.words for c in w), specials=True, min_count=min_count)


def build_tag_vocab(sentences: Sequence[Sentence]) -> TokenVocab:
    """Tag vocabulary without specials (padding uses IGNORE_INDEX instead); unknown tags raise DataError."""
    return TokenVocab.build((t for s in sentences for t in s.upos), specials=False)


class Batch(NamedTuple):
    """A padded batch of B sentences of at most T words, W = longest word (chars).

    word_ids:     (T, B) int64, 0 (<pad>) after a sentence ends.
    char_ids:     (T, B, W) int64, each word's characters left-aligned, 0-padded.
    char_lengths: (T, B) int64, characters per word, 0 at padding.
    lengths:      (B,) int64, words per sentence.
    tag_ids:      (T, B) int64, IGNORE_INDEX (-100) at padding; None without a tag vocabulary.
    """
    word_ids: np.ndarray
    char_ids: np.ndarray
    char_lengths: np.ndarray
    lengths: np.ndarray
    tag_ids: np.ndarray | None


def pad_batch(sentences: Sequence[Sentence], word_vocab: TokenVocab, char_vocab: TokenVocab,
              tag_vocab: TokenVocab | None = None, *, max_word_len: int | None = None) -> Batch:
    """Pad sentences into time-major arrays for a BiLSTM tagger with character features.

    For a character BiLSTM per word (Plank et al. 2016; Lample et al. 2016),
    reshape char_ids to (T*B, W) and mask steps t >= char_lengths. Words
    longer than ``max_word_len`` keep their first max_word_len characters.
    Raises ValueError for an empty batch, DataError for a tag not in tag_vocab.
    """
    if not sentences:
        raise ValueError("cannot pad an empty batch")
    lengths = np.array([len(s.words) for s in sentences], dtype=np.int64)
    T, B = int(lengths.max()), len(sentences)
    W = max((len(w) for s in sentences for w in s.words), default=1)
    W = min(W, max_word_len) if max_word_len else W
    word_ids = np.zeros((T, B), dtype=np.int64)
    char_ids = np.zeros((T, B, W), dtype=np.int64)
    char_lengths = np.zeros((T, B), dtype=np.int64)
    tag_ids = None if tag_vocab is None else np.full((T, B), IGNORE_INDEX, dtype=np.int64)
    for b, s in enumerate(sentences):
        n = len(s.words)
        word_ids[:n, b] = word_vocab.encode(s.words)
        if tag_vocab is not None:
            tag_ids[:n, b] = tag_vocab.encode(s.upos)
        for t, word in enumerate(s.words):
            word = word[:W]
            char_ids[t, b, :len(word)] = char_vocab.encode(word)
            char_lengths[t, b] = len(word)
    return Batch(word_ids, char_ids, char_lengths, lengths, tag_ids)


def split_sentences(sentences: Sequence[Sentence], valid_fraction: float = 0.1,
                    seed: int = 0) -> tuple[list[Sentence], list[Sentence]]:
    """Random (train, valid) split of round(n * valid_fraction) validation sentences.

    Deterministic for a seed (NumPy PCG64); both parts keep the original
    order. Raises ValueError unless 0 < valid_fraction < 1, DataError if
    either part would be empty.
    """
    if not 0 < valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    n = len(sentences)
    n_valid = round(n * valid_fraction)
    if not 0 < n_valid < n:
        raise DataError(f"cannot split {n} sentences with valid_fraction {valid_fraction}: a part would be empty")
    is_valid = np.zeros(n, dtype=bool)
    is_valid[np.random.default_rng(seed).permutation(n)[:n_valid]] = True
    return ([s for s, v in zip(sentences, is_valid) if not v],
            [s for s, v in zip(sentences, is_valid) if v])


def check_checkpoint_header(checkpoint, where: str, kind: str, version: int, description: str) -> dict:
    """``checkpoint`` if it is a dict of this ``kind`` and ``version`` (as ``minigrad.load`` gave it),
    else a one-line DataError naming ``where`` (the file) and what it holds instead."""
    if not isinstance(checkpoint, dict) or checkpoint.get("kind") != kind:
        raise DataError(f"{where} is not a minigrad-rnn {description} checkpoint")
    if checkpoint.get("version") != version:
        raise DataError(f"{where} has checkpoint version {checkpoint.get('version')!r}; "
                        f"this minigrad-rnn reads version {version}")
    return checkpoint
