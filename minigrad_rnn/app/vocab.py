"""Strings <-> ids: the one vocabulary class of the command (characters, words and tags)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np

from .errors import DataError

PAD, UNK = "<pad>", "<unk>"   # ids 0 and 1 in vocabularies with specials


class Vocabulary:
    """Strings <-> ids: id i is ``items[i]``.

    ``specials=True``: items[0] is PAD ("<pad>", id 0) and items[1] is UNK ("<unk>", id 1),
    and unknown strings map to 1; without, unknown strings raise DataError naming them.
    ``lower=True``: strings are lowercased before lookup.  ``characters=True``: every item
    is one character (the language model's vocabulary), and a text encodes in one
    vectorised lookup.  Build with :meth:`from_text` / :meth:`from_list` (characters) or
    :meth:`build` (counted tokens); :meth:`to_dict` / :meth:`from_dict` for checkpoints.

    Raises DataError if ``items`` is empty, has duplicates, lacks the specials it
    promises, or (``characters``) has an entry that is not a single character.
    """

    def __init__(self, items: Iterable[str], *, specials: bool = False, lower: bool = False,
                 characters: bool = False):
        self.items, self.specials, self.lower, self.characters = list(items), specials, lower, characters
        if not self.items:
            raise DataError("vocabulary is empty")
        if not all(isinstance(s, str) for s in self.items):
            raise DataError("vocabulary entries must be strings")
        if characters and not all(len(c) == 1 for c in self.items):
            raise DataError("vocabulary entries must be single characters")
        if specials and self.items[:2] != [PAD, UNK]:
            raise DataError(f"a vocabulary with specials must start with {PAD!r}, {UNK!r}")
        self._index = {s: i for i, s in enumerate(self.items)}
        if len(self._index) != len(self.items):
            raise DataError("vocabulary has duplicate entries")
        if characters:  # ids by code point, for a searchsorted lookup of a whole text
            codes = np.array([ord(c) for c in self.items], dtype=np.uint32)
            self._order = np.argsort(codes)
            self._sorted = codes[self._order]

    @classmethod
    def from_text(cls, text: str) -> Vocabulary:
        """The sorted unique characters of ``text``."""
        return cls(sorted(set(text)), characters=True)

    @classmethod
    def from_list(cls, chars: list[str]) -> Vocabulary:
        """A character vocabulary from :meth:`to_list` (as a char-LM checkpoint stores it)."""
        return cls(chars, characters=True)

    @classmethod
    def build(cls, tokens: Iterable[str], *, specials: bool, lower: bool = False, min_count: int = 1) -> Vocabulary:
        """The tokens seen at least ``min_count`` times, most frequent first (ties by string)."""
        counts = Counter(t.lower() if lower else t for t in tokens)
        kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        head = [PAD, UNK] if specials else []
        return cls(head + [t for t in kept if t not in head], specials=specials, lower=lower)

    def to_list(self) -> list[str]:
        """The items in id order (JSON-friendly)."""
        return list(self.items)

    def to_dict(self) -> dict:
        """JSON-friendly form: {"items": [...], "specials": bool, "lower": bool}."""
        return {"items": list(self.items), "specials": self.specials, "lower": self.lower}

    @classmethod
    def from_dict(cls, d: dict) -> Vocabulary:
        """The vocabulary :meth:`to_dict` wrote."""
        return cls(d["items"], specials=d["specials"], lower=d["lower"])

    def __len__(self) -> int:
        return len(self.items)

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        """int64 ids of shape (len(tokens),); a str is encoded character by character.

        Raises DataError naming (up to 10 of) the strings not in the vocabulary, unless it has specials.
        """
        if self.characters and isinstance(tokens, str):
            return self._encode_text(tokens)
        tokens = [t.lower() for t in tokens] if self.lower else list(tokens)
        if self.specials:
            return np.array([self._index.get(t, 1) for t in tokens], dtype=np.int64)
        unknown = sorted(set(tokens) - self._index.keys())
        if unknown:
            self._refuse(unknown)
        return np.array([self._index[t] for t in tokens], dtype=np.int64)

    def _encode_text(self, text: str) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        pos = np.searchsorted(self._sorted, codes).clip(max=len(self) - 1)
        unknown = np.unique(codes[self._sorted[pos] != codes])
        if unknown.size:
            self._refuse([chr(c) for c in unknown])
        return self._order[pos].astype(np.int64)

    def _refuse(self, unknown: list[str]):
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        what = "characters not" if self.characters else "not"
        raise DataError(f"{what} in the vocabulary: {', '.join(map(repr, unknown[:10]))}{more}")

    def decode(self, ids: Iterable[int] | np.ndarray) -> list[str]:
        """The strings for a sequence of ids. Raises DataError for an id out of range."""
        # an explicit check: a negative id (e.g. IGNORE_INDEX) would otherwise index from the end
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise DataError(f"ids must be in [0, {len(self)}), got {ids.min()}..{ids.max()}")
        return [self.items[i] for i in ids.tolist()]

    def decode_text(self, ids: Iterable[int] | np.ndarray) -> str:
        """The decoded strings joined into one text (a character vocabulary's inverse of ``encode``)."""
        return "".join(self.decode(ids))
