"""Part-of-speech tagging with a bidirectional LSTM over word and character features.

Each word is represented by its (lowercased) word embedding and by features
of its characters: character embeddings, a width-3 convolution and a max over
positions (a character CNN, dos Santos & Zadrozny 2014), which sees suffixes,
capitals, digits and hyphens, so unseen words still get sensible tags.  A
bidirectional LSTM reads the sentence and a linear layer gives each word's
tag scores (Plank, Søgaard & Goldberg 2016 use the same design with a
character BiLSTM).  Word dropout (replacing a training word by <unk> with
probability alpha / (alpha + count), Kiperwasser & Goldberg 2016) teaches the
model to rely on the characters when a word is rare.

The ``minigrad-rnn tag`` commands (``cli.py``) drive it.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

import minigrad as mg
from minigrad import nn, optim
from minigrad.functional import cross_entropy
from minigrad.nn.utils import clip_grad_norm_

from .data import (
    IGNORE_INDEX, Sentence, TokenVocab, build_char_vocab, build_tag_vocab, build_word_vocab,
    check_checkpoint_header,
    pad_batch,
)
from .layers import LSTM
from .utils import evaluating

CHECKPOINT_KIND = "minigrad-rnn tagger"
CHECKPOINT_VERSION = 1
MAX_WORD_LEN = 20  # longer words keep their first 20 characters
UNK_ID = 1


class CharCNN(nn.Module):
    """Word features from characters: embed, convolve (width 3), max-pool over the word's positions.

    ``forward(char_ids (N, W), char_lengths (N,))`` -> (N, filters).
    """

    def __init__(self, num_chars: int, char_size: int, filters: int, dtype=np.float32, rng=None):
        super().__init__()
        self.embed = nn.Embedding(num_chars, char_size, padding_idx=0, dtype=dtype, rng=rng)
        self.conv = nn.Linear(3 * char_size, filters, dtype=dtype, rng=rng)

    def forward(self, char_ids, char_lengths):
        e = self.embed(char_ids)  # (N, W, C); padding embeds to zeros, which also marks the word's ends
        pad = mg.zeros(e.shape[0], 1, e.shape[2], dtype=e.dtype)
        padded = mg.concatenate([pad, e, pad], axis=1)
        windows = mg.concatenate([padded[:, :-2], padded[:, 1:-1], padded[:, 2:]], axis=2)  # (N, W, 3C)
        h = mg.tanh(self.conv(windows))
        inside = (np.arange(char_ids.shape[1]) < np.asarray(char_lengths)[:, None])[..., None]
        return mg.max(mg.where(inside, h, -1.0), axis=1)  # -1 is tanh's floor, so padding never wins


class Tagger(nn.Module):
    """Word embedding + character CNN -> BiLSTM -> linear tag scores.

    ``forward(batch, word_ids=None)`` takes a :class:`data.Batch` and returns logits (T, B, num_tags);
    ``word_ids`` (T, B), if given, replaces the batch's (word dropout during training).
    """

    def __init__(self, num_words: int, num_chars: int, num_tags: int, word_size: int = 100, char_size: int = 32,
                 char_filters: int = 64, hidden_size: int = 128, dropout: float = 0.3, dtype=np.float32, rng=None):
        super().__init__()
        self.words = nn.Embedding(num_words, word_size, padding_idx=0, dtype=dtype, rng=rng)
        self.chars = CharCNN(num_chars, char_size, char_filters, dtype, rng)
        self.drop = nn.Dropout(dropout, rng=rng)
        self.lstm = LSTM(word_size + char_filters, hidden_size, bidirectional=True, dtype=dtype, rng=rng)
        self.head = nn.Linear(2 * hidden_size, num_tags, dtype=dtype, rng=rng)

    def forward(self, batch, word_ids=None):
        T, B, W = batch.char_ids.shape
        words = self.words(batch.word_ids if word_ids is None else word_ids)
        chars = self.chars(batch.char_ids.reshape(T * B, W), batch.char_lengths.reshape(T * B))
        x = self.drop(mg.concatenate([words, chars.reshape(T, B, -1)], axis=2))
        out, _ = self.lstm(x, lengths=batch.lengths)
        return self.head(self.drop(out))


class Vocabularies:
    """The word, character and tag vocabularies of a tagger."""

    def __init__(self, words: TokenVocab, chars: TokenVocab, tags: TokenVocab):
        self.words, self.chars, self.tags = words, chars, tags

    @classmethod
    def build(cls, sentences) -> "Vocabularies":
        """From the training sentences only (lowercased words, case-sensitive characters)."""
        return cls(build_word_vocab(sentences, lower=True), build_char_vocab(sentences), build_tag_vocab(sentences))

    def to_dict(self) -> dict:
        """JSON-ready form for a checkpoint; :meth:`from_dict` reads it back."""
        return {"words": self.words.to_dict(), "chars": self.chars.to_dict(), "tags": self.tags.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "Vocabularies":
        """The vocabularies :meth:`to_dict` wrote."""
        return cls(*(TokenVocab.from_dict(d[k]) for k in ("words", "chars", "tags")))

    def batch(self, sentences, with_tags: bool = True):
        """Pad sentences into a :class:`data.Batch`; tags must be known when ``with_tags``."""
        return pad_batch(sentences, self.words, self.chars, self.tags if with_tags else None,
                         max_word_len=MAX_WORD_LEN)


def build_model(config: dict, vocabs: Vocabularies, rng) -> Tagger:
    """The tagger a config describes."""
    return Tagger(len(vocabs.words), len(vocabs.chars), len(vocabs.tags), config["word_size"], config["char_size"],
                  config["char_filters"], config["hidden_size"], config["dropout"], np.dtype(config["dtype"]), rng)


def length_batches(sentences, batch_size: int) -> list[list[int]]:
    """Indices of sentences grouped into batches of similar length (little padding)."""
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i].words))
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


class TaggerTrainer:
    """Training a tagger on ``sentences`` with the hyper-parameters in ``config``.

    ``config``: word_size, char_size, char_filters, hidden_size, dropout,
    word_dropout, batch_size, lr, clip, seed, dtype.  Raises DataError (from
    the vocabularies) for sentences without words.
    """

    def __init__(self, config: dict, sentences):
        self.config = config
        self.sentences = list(sentences)
        self.vocabs = Vocabularies.build(self.sentences)
        self.rng = np.random.default_rng(config["seed"])
        self.model = build_model(config, self.vocabs, self.rng)
        self.optimizer = optim.Adam(self.model.parameters(), lr=config["lr"])
        self.batches = [self.vocabs.batch([self.sentences[i] for i in b])
                        for b in length_batches(self.sentences, config["batch_size"])]
        # word dropout: rare words are often replaced by <unk> in training, frequent ones rarely
        counts = Counter(w.lower() for s in self.sentences for w in s.words)
        alpha = config["word_dropout"]
        self.keep = np.ones(len(self.vocabs.words))
        for word, i in zip(self.vocabs.words.items[2:], range(2, len(self.vocabs.words))):
            self.keep[i] = counts[word] / (alpha + counts[word])

    def train_epoch(self, should_stop=lambda: False) -> float:
        """One pass over the training batches in a random order; returns the mean loss (nats per word)."""
        total, words = 0.0, 0
        for k in self.rng.permutation(len(self.batches)):
            if should_stop():
                break
            batch = self.batches[k]
            dropped = self.rng.random(batch.word_ids.shape) >= self.keep[batch.word_ids]
            word_ids = np.where(dropped, UNK_ID, batch.word_ids)
            loss = cross_entropy(self.model(batch, word_ids), batch.tag_ids, ignore_index=IGNORE_INDEX)
            self.optimizer.zero_grad()
            loss.backward()
            if self.config["clip"] > 0:
                clip_grad_norm_(self.model.parameters(), self.config["clip"])
            self.optimizer.step()
            n = int(batch.lengths.sum())
            total += float(loss.item()) * n
            words += n
        return total / max(words, 1)

    def state_dict(self) -> dict:
        """The trained tagger, for ``minigrad.save``."""
        return {"kind": CHECKPOINT_KIND, "version": CHECKPOINT_VERSION, "config": dict(self.config),
                "vocab": self.vocabs.to_dict(), "model": dict(self.model.state_dict())}


def check_checkpoint(checkpoint, where: str) -> dict:
    """The checkpoint dict if it is a tagger checkpoint this version reads, else DataError."""
    return check_checkpoint_header(checkpoint, where, CHECKPOINT_KIND, CHECKPOINT_VERSION, "tagger")


def load_tagger(checkpoint: dict) -> tuple[Tagger, Vocabularies]:
    """The model (in eval mode) and vocabularies of a tagger checkpoint."""
    vocabs = Vocabularies.from_dict(checkpoint["vocab"])
    model = build_model(checkpoint["config"], vocabs, np.random.default_rng(0))
    model.load_state_dict(checkpoint["model"])
    return model.eval(), vocabs


def predict(model: Tagger, vocabs: Vocabularies, sentences, batch_size: int = 64) -> list[list[str]]:
    """The predicted tags of each sentence (a list of words or a Sentence), in order."""
    sentences = [s if isinstance(s, Sentence) else Sentence(list(s), []) for s in sentences]
    tags: list = [None] * len(sentences)
    with evaluating(model):
        for b in length_batches(sentences, batch_size):
            batch = vocabs.batch([sentences[i] for i in b], with_tags=False)
            best = np.argmax(model(batch).data, axis=-1)  # (T, B)
            for j, i in enumerate(b):
                tags[i] = vocabs.tags.decode(best[:batch.lengths[j], j])
    return tags


class Scores:
    """UPOS accuracy, per-tag precision and recall, and confusions of predicted against gold tags.

    ``known`` marks words in the training vocabulary, to report accuracy on unseen words apart.
    """

    def __init__(self, gold: list[str], predicted: list[str], known: list[bool]):
        self.gold, self.predicted = np.array(gold), np.array(predicted)
        self.known = np.array(known, dtype=bool)
        self.correct = self.gold == self.predicted

    @property
    def accuracy(self) -> float:
        """Fraction of words tagged correctly, in [0, 1]."""
        return float(self.correct.mean())

    def accuracy_on(self, known: bool) -> tuple[float, int]:
        """(accuracy, count) on words seen (known=True) or unseen in training."""
        part = self.known == known
        return (float(self.correct[part].mean()) if part.any() else float("nan")), int(part.sum())

    def per_tag(self) -> list[tuple[str, float, float, int]]:
        """(tag, precision, recall, gold count) for every tag seen in gold or predictions."""
        rows = []
        for tag in sorted(set(self.gold) | set(self.predicted)):
            hits = int(np.sum(self.correct & (self.gold == tag)))
            n_pred, n_gold = int(np.sum(self.predicted == tag)), int(np.sum(self.gold == tag))
            rows.append((tag, hits / n_pred if n_pred else float("nan"), hits / n_gold if n_gold else float("nan"),
                         n_gold))
        return rows

    def confusions(self, top: int = 10) -> list[tuple[str, str, int]]:
        """The most frequent (gold, predicted, count) errors."""
        counts = Counter(zip(self.gold[~self.correct], self.predicted[~self.correct]))
        return [(g, p, n) for (g, p), n in counts.most_common(top)]


def score(model: Tagger, vocabs: Vocabularies, sentences) -> Scores:
    """Tag the sentences and compare with their gold UPOS tags."""
    predicted = predict(model, vocabs, sentences)
    unk = vocabs.words
    known = [unk.encode([w])[0] != UNK_ID for s in sentences for w in s.words]
    return Scores([t for s in sentences for t in s.upos], [t for p in predicted for t in p], known)
