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

The ``minigrad-rnn tag`` subcommands at the end of this file drive it.
"""
from __future__ import annotations

import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np

import minigrad as mg
from minigrad import nn, optim
from minigrad.functional import cross_entropy
from minigrad.nn.utils import clip_grad_norm_

from ..layers import LSTM
from ..utils import evaluating
from .conllu import (
    IGNORE_INDEX, Sentence, build_char_vocab, build_tag_vocab, build_word_vocab, pad_batch, read_conllu,
    split_sentences,
)
from .corpus import load_text
from .errors import CommandError, DataError, UsageError
from .options import (
    add_common_options, add_run_folder_options, describe_defaults, dropout_probability, nonnegative_float, open_fraction, positive_float,
    positive_int, size,
)
from .runs import (
    EXIT_INTERRUPTED, Budget, MetricsFile, TrainingLoop, check_checkpoint_header, check_config, check_run_checkpoint,
    check_weights, duration, load_checkpoint, plot_curves, prepare_out_dir, resolve_config, restore, resumed_config,
    say, text_digest, write_json,
)
from .vocab import Vocabulary

# Defaults of `tag train`: about 2.5 minutes on 90% of the EWT development file.
TAG_DEFAULTS = {
    "word_size": 100, "char_size": 32, "char_filters": 128, "hidden_size": 128, "dropout": 0.5,
    "word_dropout": 0.25, "batch_size": 32, "lr": 3e-3, "clip": 5.0, "epochs": 30, "minutes": None,
    "valid_fraction": 0.1, "seed": 0, "dtype": "float32",
}

# what each config field of a checkpoint must be (runs.FIELDS), as if typed on the command line
CONFIG_FIELDS = {
    "word_size": "size", "char_size": "size", "char_filters": "size", "hidden_size": "size", "dropout": "probability",
    "word_dropout": "nonnegative", "batch_size": "size", "lr": "positive", "clip": "nonnegative", "epochs": "count",
    "minutes": "minutes", "valid_fraction": "fraction", "seed": "nonnegative_int", "dtype": "dtype", "data": "path",
    "data_sha256": "digest",
}
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

    ``forward(batch, word_ids=None)`` takes a :class:`conllu.Batch` and returns logits (T, B, num_tags);
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

    def __init__(self, words: Vocabulary, chars: Vocabulary, tags: Vocabulary):
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
        return cls(*(Vocabulary.from_dict(d[k]) for k in ("words", "chars", "tags")))

    def batch(self, sentences, with_tags: bool = True):
        """Pad sentences into a :class:`conllu.Batch`; tags must be known when ``with_tags``."""
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
        # where training is: epochs done, and inside the epoch under way its batch order, the next
        # batch and the loss so far (so that a run stopped mid-epoch resumes there)
        self.epochs, self.order, self.position, self.epoch_loss = 0, None, 0, [0.0, 0]

    def train_epoch(self, should_stop=lambda: False) -> float:
        """One pass over the training batches in a random order, or the rest of one a stopped run
        began; returns its mean loss (nats per word)."""
        if self.order is None:
            self.order, self.position, self.epoch_loss = self.rng.permutation(len(self.batches)), 0, [0.0, 0]
        while self.position < len(self.order):
            if should_stop():
                break
            batch = self.batches[self.order[self.position]]
            dropped = self.rng.random(batch.word_ids.shape) >= self.keep[batch.word_ids]
            word_ids = np.where(dropped, UNK_ID, batch.word_ids)
            loss = cross_entropy(self.model(batch, word_ids), batch.tag_ids, ignore_index=IGNORE_INDEX)
            self.optimizer.zero_grad()
            loss.backward()
            if self.config["clip"] > 0:
                clip_grad_norm_(self.model.parameters(), self.config["clip"])
            self.optimizer.step()
            n = int(batch.lengths.sum())
            self.epoch_loss = [self.epoch_loss[0] + float(loss.item()) * n, self.epoch_loss[1] + n]
            self.position += 1
        total, words = self.epoch_loss
        if self.position == len(self.order):
            self.epochs, self.order = self.epochs + 1, None
        return total / max(words, 1)

    def state_dict(self) -> dict:
        """The tagger, and everything needed to continue training exactly, for ``minigrad.save``."""
        return {"kind": CHECKPOINT_KIND, "version": CHECKPOINT_VERSION, "config": dict(self.config),
                "vocab": self.vocabs.to_dict(), "model": dict(self.model.state_dict()),
                "optimizer": self.optimizer.state_dict(), "rng": self.rng.bit_generator.state, "step": self.epochs,
                "order": self.order, "position": self.position, "epoch_loss": list(self.epoch_loss)}

    def load_state_dict(self, checkpoint: dict):
        """Restore a position saved by :meth:`state_dict` (KeyError, TypeError or ValueError if damaged)."""
        order = checkpoint["order"]
        if order is not None and (not isinstance(order, np.ndarray) or sorted(order.tolist()) != list(
                range(len(self.batches))) or not 0 <= checkpoint["position"] < len(order)):
            raise ValueError("its batch order is not a permutation of this data's batches")
        total, words = checkpoint["epoch_loss"]
        if not (isinstance(words, int) and words >= 0 and isinstance(total, float) and math.isfinite(total)):
            raise ValueError(f"its epoch loss is {checkpoint['epoch_loss']!r}")
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.rng.bit_generator.state = checkpoint["rng"]
        self.epochs, self.order, self.position = checkpoint["step"], order, int(checkpoint["position"])
        self.epoch_loss = [total, words]


def check_checkpoint(checkpoint, where: str) -> dict:
    """The checkpoint dict if it is a tagger checkpoint this version reads, else DataError."""
    check_checkpoint_header(checkpoint, where, CHECKPOINT_KIND, CHECKPOINT_VERSION, "tagger")
    missing = [k for k in ("config", "vocab", "model") if k not in checkpoint]
    if missing:
        raise DataError(f"{where} is damaged: it lacks {', '.join(missing)}")
    config = check_config(checkpoint["config"], CONFIG_FIELDS, where)
    check_weights(checkpoint["model"], where, config["dtype"])
    return checkpoint


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

# --------------------------------------------------------------------------- the subcommands
def _read_sentences(path) -> list:
    try:
        return read_conllu(path)
    except DataError as e:
        raise CommandError(str(e)) from None


def cmd_tag_train(args) -> int:
    """Train a part-of-speech tagger on part of a CoNLL-U file and report accuracy on the rest;
    ``--resume`` continues a run where it stopped."""
    checkpoint = None
    if args.resume:
        checkpoint, file = load_checkpoint(args.resume, _check_resumable)
        out = file.parent
        if args.data is not None and str(Path(args.data).resolve()) != checkpoint["config"]["data"]:
            raise CommandError(f"--data cannot change when resuming (the run in {out} uses {checkpoint['config']['data']})")
        config = resumed_config(args, checkpoint["config"], out, TAG_DEFAULTS, ("epochs", "minutes"), "epochs")
    elif args.data is None or args.out is None:
        raise UsageError("tag train needs --data and --out (or --resume DIR)")
    else:
        config, _ = resolve_config(args, TAG_DEFAULTS, count="epochs")
        config["data"], out = str(Path(args.data).resolve()), Path(args.out)
    sentences = _read_sentences(config["data"])
    digest = text_digest(load_text(config["data"]))
    if checkpoint is not None and digest != config["data_sha256"]:
        raise CommandError(f"cannot resume: {config['data']} changed since the checkpoint was written")
    config["data_sha256"] = digest
    try:
        train, valid = split_sentences(sentences, config["valid_fraction"], config["seed"])
    except DataError as e:
        raise CommandError(f"{config['data']}: {e}") from None
    run = TaggerTrainer(config, train)
    if checkpoint is not None:
        restore(run, checkpoint, out)
    prepare_out_dir(out, fresh=checkpoint is None)
    write_json(out / "config.json", config)
    n_words = sum(len(s.words) for s in train)
    say(f"{'resuming' if checkpoint else 'training'} a tagger ({run.model.num_parameters():,} parameters) on "
        f"{len(train)} sentences ({n_words:,} words) of {config['data']}; validating on {len(valid)}; output in {out}")
    metrics = MetricsFile(out / "metrics.csv", ["epoch", "train_loss", "valid_accuracy", "elapsed_sec"],
                          keep_until_step=None if checkpoint is None else run.epochs)
    loop = TrainingLoop(Budget(config["epochs"], config["minutes"]), 1, "tag train", step=run.epochs,
                        elapsed=0.0 if checkpoint is None else float(checkpoint["elapsed"]), total=config["epochs"],
                        unit="epoch", parameters=run.model.parameters())
    scores = None

    def save():
        mg.save({**run.state_dict(), "elapsed": loop.elapsed}, out / "checkpoint.safetensors")

    def report(final: bool):
        """After each epoch: validation accuracy, a metrics row, a checkpoint."""
        nonlocal scores
        scores = score(run.model, run.vocabs, valid)
        loss = loop.window_loss()
        metrics.append(epoch=loop.step, train_loss=loss, valid_accuracy=scores.accuracy, elapsed_sec=loop.elapsed)
        save()
        say(f"epoch {loop.step:>3} | train loss {loss:.4f} | validation accuracy {100 * scores.accuracy:.2f}% | "
            f"{duration(loop.elapsed)}")

    interrupted = loop.run(lambda: run.train_epoch(loop.should_stop), report)
    if scores is None:  # stopped before the first epoch ended
        save()
        scores = score(run.model, run.vocabs, valid)
    _print_scores(scores, f"{len(valid)} validation sentences")
    rows = metrics.read()
    plot_curves(out / "loss.png", {"train loss": ([int(r["epoch"]) for r in rows], [float(r["train_loss"])
                                                                                   for r in rows])},
                "epoch", "loss (nats per word)", "tagger training")
    write_json(out / "results.json", {"epochs": run.epochs, "train_seconds": round(loop.elapsed, 1),
                                      "valid_accuracy": scores.accuracy, "valid_sentences": len(valid)})
    if interrupted:
        say(f"interrupted after {loop.step} epochs; the model so far is saved in {out}: --resume {out} continues it")
        return EXIT_INTERRUPTED
    return 0


def _check_resumable(checkpoint, where: str) -> dict:
    """A tagger checkpoint that holds what resuming needs (older ones hold only the model)."""
    check_checkpoint(checkpoint, where)
    return check_run_checkpoint(checkpoint, where, CHECKPOINT_KIND, CHECKPOINT_VERSION, "tagger", CONFIG_FIELDS,
                                ("config", "model", "optimizer", "rng", "step", "elapsed", "order", "position",
                                 "epoch_loss"))


def _load_tagger(model_dir):
    checkpoint, file = load_checkpoint(model_dir, check_checkpoint)
    try:
        model, vocabs = load_tagger(checkpoint)
    except (KeyError, TypeError, ValueError, DataError) as e:
        raise CommandError(f"{file} is damaged: {e}") from None
    return checkpoint, model, vocabs


def cmd_tag_eval(args) -> int:
    """Accuracy, per-tag precision/recall and confusions of a tagger on a CoNLL-U file."""
    checkpoint, model, vocabs = _load_tagger(args.model)
    sentences = _read_sentences(args.data)
    config = checkpoint["config"]
    trained_on = text_digest(load_text(args.data)) == config["data_sha256"]
    split = ("valid" if trained_on else "all") if args.split == "auto" else args.split
    what = f"{len(sentences)} sentences of {args.data}"
    if split != "all" or trained_on:
        if not trained_on:
            raise CommandError(f"--split {split} needs the file the tagger was trained on ({config['data']})")
        train, valid = split_sentences(sentences, config["valid_fraction"], config["seed"])
        if split == "all":  # most of them trained the tagger: say so, beside the figure they inflate
            what += (f", of which {len(train)} ({len(train) / len(sentences):.0%}) are its training sentences "
                     "(--split valid: the held-out ones only)")
        else:
            sentences = valid if split == "valid" else train
            what = f"the {len(sentences)} {'held-out' if split == 'valid' else 'training'} sentences of {args.data}"
    _print_scores(score(model, vocabs, sentences), what)
    return 0


def _print_scores(scores, what: str) -> None:
    known, n_known = scores.accuracy_on(True)
    unknown, n_unknown = scores.accuracy_on(False)
    say(f"UPOS accuracy on {what}: {100 * scores.accuracy:.2f}% of {len(scores.gold):,} words "
        f"(seen in training: {100 * known:.2f}% of {n_known:,}; unseen: {100 * unknown:.2f}% of {n_unknown:,})")
    say(f"{'tag':<6} {'precision':>9} {'recall':>7} {'count':>6}")
    for tag, precision, recall, count in scores.per_tag():
        say(f"{tag:<6} {_percent(precision, 8)} {_percent(recall, 6)} {count:>6}")
    confusions = scores.confusions()
    if confusions:
        say("most frequent confusions (gold -> predicted: count): "
            + ", ".join(f"{g} -> {p}: {n}" for g, p, n in confusions))


def _percent(x: float, width: int) -> str:
    """A right-aligned percentage; "-" for NaN (a tag never predicted has no precision)."""
    return f"{'-':>{width + 1}}" if math.isnan(x) else f"{100 * x:>{width}.1f}%"


def cmd_tag_predict(args) -> int:
    """Tag whitespace-tokenized sentences from stdin, one per line, as word/TAG pairs."""
    _, model, vocabs = _load_tagger(args.model)
    for number, raw in enumerate(sys.stdin.buffer, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CommandError(f"stdin line {number} is not valid UTF-8 (byte {e.start})") from None
        words = line.split()
        if words:
            (tags,) = predict(model, vocabs, [words])
            line = " ".join(f"{w}/{t}" for w, t in zip(words, tags))
        else:
            line = ""
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    return 0


def add_commands(commands) -> None:
    """Register ``tag train``, ``tag eval`` and ``tag predict`` on the command's subparsers."""
    tag = commands.add_parser("tag", help="part-of-speech tagging (train, eval, predict)")
    tag_commands = tag.add_subparsers(dest="tag_command", required=True, metavar="ACTION")
    p = tag_commands.add_parser("train", help="train a BiLSTM tagger on a CoNLL-U file")
    p.add_argument("--data", metavar="FILE", help="CoNLL-U file (needed unless --resume)")
    add_run_folder_options(p, "needed unless --resume")
    p.add_argument("--valid-fraction", type=open_fraction, help="sentences held out for validation")
    add_common_options(p, cell=False)
    p.add_argument("--word-size", type=size, help="word embedding size")
    p.add_argument("--char-size", type=size, help="character embedding size")
    p.add_argument("--char-filters", type=size, help="character CNN features per word")
    p.add_argument("--dropout", type=dropout_probability, help="dropout")
    p.add_argument("--word-dropout", type=nonnegative_float, help="alpha of word dropout alpha/(alpha+count)")
    p.add_argument("--clip", type=nonnegative_float, help="clip the global gradient norm (0: off)")
    p.add_argument("--epochs", type=positive_int, help="passes over the training sentences")
    p.add_argument("--minutes", type=positive_float, help="stop after this much time (without it: no limit)")
    describe_defaults(p, TAG_DEFAULTS)
    p.set_defaults(handler=cmd_tag_train)
    p = tag_commands.add_parser("eval", help="accuracy of a tagger on a CoNLL-U file")
    p.add_argument("--model", metavar="DIR", required=True, help="a tag train output folder")
    p.add_argument("--data", metavar="FILE", required=True, help="CoNLL-U file")
    p.add_argument("--split", choices=["auto", "all", "train", "valid"], default="auto",
                   help="which sentences: auto takes the held-out part of the file the tagger was trained on, "
                        "and all of any other file; all, train or valid")
    describe_defaults(p, {})
    p.set_defaults(handler=cmd_tag_eval)
    p = tag_commands.add_parser("predict", help="tag sentences from stdin, one per line")
    p.add_argument("--model", metavar="DIR", required=True, help="a tag train output folder")
    p.set_defaults(handler=cmd_tag_predict)
