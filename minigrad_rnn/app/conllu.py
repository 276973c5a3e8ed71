"""Part-of-speech data: Universal Dependencies CoNLL-U sentences, their vocabularies and padded batches.

The reader is our own, not the ``conllu`` package's: that parser accepts a line of 9 fields
and lines split by two spaces without a word, and reports no line numbers, while a malformed
line here must end in one message "FILE:LINE: what is wrong".
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .corpus import load_text
from .errors import DataError
from .vocab import Vocabulary

IGNORE_INDEX = -100           # tag id at padding: use as the loss's ignore_index
UPOS_TAGS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM",
             "PART", "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X")


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


def build_word_vocab(sentences: Sequence[Sentence], min_count: int = 1, lower: bool = False) -> Vocabulary:
    """Word vocabulary with <pad>=0, <unk>=1; build it from the training sentences only."""
    return Vocabulary.build((w for s in sentences for w in s.words), specials=True, lower=lower, min_count=min_count)


def build_char_vocab(sentences: Sequence[Sentence], min_count: int = 1) -> Vocabulary:
    """Character vocabulary (case kept) with <pad>=0, <unk>=1."""
    return Vocabulary.build((c for s in sentences for w in s.words for c in w), specials=True, min_count=min_count)


def build_tag_vocab(sentences: Sequence[Sentence]) -> Vocabulary:
    """Tag vocabulary without specials (padding uses IGNORE_INDEX instead); unknown tags raise DataError."""
    return Vocabulary.build((t for s in sentences for t in s.upos), specials=False)


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


def pad_batch(sentences: Sequence[Sentence], word_vocab: Vocabulary, char_vocab: Vocabulary,
              tag_vocab: Vocabulary | None = None, *, max_word_len: int | None = None) -> Batch:
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
