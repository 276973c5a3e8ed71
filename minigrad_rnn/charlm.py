"""Character-level language model: char-rnn (Karpathy 2015) on minigrad.

Characters are embedded, run through a stack of RNN, LSTM or GRU layers and
read out as logits over the vocabulary.  Training is truncated
backpropagation through time (Williams & Peng 1990): the text is cut into
``batch_size`` parallel streams, each batch continues every stream where the
previous batch stopped, and the hidden state is carried over but detached,
so gradients flow back at most ``seq_len`` characters.

:class:`CharLMTrainer` holds everything a run needs (model, optimizer, data
position, carried state, random generators) and can save and restore all of
it, so a resumed run repeats the losses of an uninterrupted one bit for bit.
The ``minigrad-rnn train`` and ``sample`` commands (``cli.py``) drive it.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np

import minigrad as mg
from minigrad import nn, optim
from minigrad.functional import cross_entropy
from minigrad.nn.utils import clip_grad_norm_

from .data import DataError, TBPTTBatches, Vocabulary, check_checkpoint_header, eval_batches, split_corpus
from .layers import GRU, LSTM, RNN
from .utils import detach_state, evaluating

CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
OPTIMIZERS = {"adam": optim.Adam, "rmsprop": optim.RMSprop, "adagrad": optim.Adagrad, "sgd": optim.SGD}
CHECKPOINT_KIND = "minigrad-rnn char-lm"
CHECKPOINT_VERSION = 1
EVAL_STREAMS = 64  # evaluation runs no backward pass, so it can afford many parallel streams


def bits(nats: float) -> float:
    """Nats per character -> bits per character."""
    return nats / math.log(2)


def text_digest(text: str) -> str:
    """SHA-256 of the text, so a resumed run can tell that its data changed."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class CharLM(nn.Module):
    """Embedding -> ``num_layers`` RNN/LSTM/GRU layers -> dropout -> linear logits.

    ``forward(ids, state)`` takes int ids of shape (time, batch) and the
    recurrent state (None for zeros) and returns logits (time, batch, vocab)
    and the new state.  ``dropout`` applies between layers and before the
    read-out, as in Zaremba et al. (2014).
    """

    def __init__(self, vocab_size: int, cell: str = "lstm", hidden_size: int = 256, num_layers: int = 1,
                 dropout: float = 0.0, embedding_size: int = 64, dtype=np.float32, rng=None):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embedding_size, dtype=dtype, rng=rng)
        self.rnn = CELLS[cell](embedding_size, hidden_size, num_layers, dropout=dropout, dtype=dtype, rng=rng)
        self.drop = nn.Dropout(dropout, rng=rng)
        self.head = nn.Linear(hidden_size, vocab_size, dtype=dtype, rng=rng)

    def forward(self, ids, state=None):
        out, state = self.rnn(self.embed(ids), state)
        return self.head(self.drop(out)), state


def build_model(config: dict, vocab_size: int, rng) -> CharLM:
    """The model a run's config describes."""
    return CharLM(vocab_size, config["cell"], config["hidden_size"], config["num_layers"], config["dropout"],
                  config["embedding_size"], np.dtype(config["dtype"]), rng)


def make_optimizer(name: str, params, lr: float):
    """One of OPTIMIZERS with the learning rate ``lr`` and PyTorch's other defaults."""
    return OPTIMIZERS[name](params, lr=lr)


def sample_next(logits: np.ndarray, temperature: float, top_k: int | None, rng) -> int:
    """Draw a character id from ``softmax(logits / temperature)``, keeping only the ``top_k`` best if given."""
    z = logits.astype(np.float64) / temperature
    if top_k is not None and top_k < len(z):
        z[z < np.partition(z, -top_k)[-top_k]] = -np.inf
    p = np.exp(z - z.max())
    return int(rng.choice(len(p), p=p / p.sum()))


def generate(model: CharLM, vocab: Vocabulary, prime: str, length: int, temperature: float = 1.0,
             top_k: int | None = None, rng=None):
    """Yield ``length`` characters sampled from the model after reading ``prime``.

    The prime (at least one character) sets the state; each sampled character
    is fed back in.  Runs in eval mode without recording; the model's mode is
    restored afterwards.  Raises DataError if ``prime`` is empty or has
    characters outside the vocabulary, ValueError for temperature <= 0.
    """
    if not prime:
        raise DataError("the prime text is empty")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    ids = vocab.encode(prime)
    rng = np.random.default_rng() if rng is None else rng
    with evaluating(model):
        logits, state = model(ids[:, None])
        for _ in range(length):
            i = sample_next(logits.data[-1, 0], temperature, top_k, rng)
            yield vocab.chars[i]
            logits, state = model(np.array([[i]]), state)


def default_prime(vocab: Vocabulary) -> str:
    """A newline if the text has any (a natural start), else its first character."""
    return "\n" if "\n" in vocab.chars else vocab.chars[0]


def evaluate(model: CharLM, ids: np.ndarray, seq_len: int, streams: int = EVAL_STREAMS) -> float:
    """Mean loss in nats per character over ``ids``, read as ``streams`` parallel streams (fewer if
    ``ids`` is short) with the state carried across batches, in eval mode."""
    batch_size = max(1, min(streams, len(ids) // 2))
    total, count, state = 0.0, 0, None
    with evaluating(model):
        for inputs, targets in eval_batches(ids, batch_size, seq_len):
            logits, state = model(inputs, state)
            total += float(cross_entropy(logits, targets, reduction="sum").item())
            count += targets.size
    return total / count


class CharLMTrainer:
    """A char-LM training run: data, model, optimizer and the exact position in all of them.

    ``config`` holds the hyper-parameters (see ``cli.TRAIN_DEFAULTS``); ``text``
    is the whole corpus.  The vocabulary is built from the whole text (or taken
    from ``vocab``, when resuming), split 90/5/5 into train/valid/test.

    Raises DataError if the text is too short for the batch layout or has
    characters outside a given vocabulary.
    """

    def __init__(self, config: dict, text: str, vocab: Vocabulary | None = None):
        self.config = config
        self.vocab = vocab or Vocabulary.from_text(text)
        ids = self.vocab.encode(text)
        batch_size, seq_len = config["batch_size"], config["seq_len"]
        # every split must hold at least one segment of seq_len characters and its targets
        self.train_ids, self.valid_ids, self.test_ids = split_corpus(ids, min_len=seq_len + 1)
        self.batches = TBPTTBatches(self.train_ids, batch_size, seq_len)
        self.rng = np.random.default_rng(config["seed"])  # initialization and dropout
        self.sample_rng = np.random.default_rng([config["seed"], 1])  # samples shown while training
        self.model = build_model(config, len(self.vocab), self.rng)
        self.optimizer = make_optimizer(config["optimizer"], self.model.parameters(), config["lr"])
        self.state = None  # the recurrent state carried from batch to batch
        self.step = 0

    @property
    def chars_per_step(self) -> int:
        """Characters in one training batch: batch_size * seq_len."""
        return self.config["batch_size"] * self.config["seq_len"]

    def train_step(self) -> float:
        """One truncated-BPTT update on the next batch; returns its mean loss in nats."""
        if self.batches.step == 0:  # a new pass over the text: start from a zero state
            self.state = None
        inputs, targets = next(self.batches)
        logits, state = self.model(inputs, self.state)
        loss = cross_entropy(logits, targets)
        self.optimizer.zero_grad()
        loss.backward()
        if self.config["clip"] > 0:
            clip_grad_norm_(self.model.parameters(), self.config["clip"])
        self.optimizer.step()
        self.state = detach_state(state)
        self.step += 1
        return float(loss.item())

    def evaluate(self, split: str) -> float:
        """Mean loss in nats per character on "valid" or "test"."""
        ids = {"valid": self.valid_ids, "test": self.test_ids}[split]
        return evaluate(self.model, ids, self.config["seq_len"])

    def sample(self, length: int, prime: str | None = None, temperature: float = 1.0) -> str:
        """A sample of the model, drawn with the run's own sampling generator."""
        prime = prime or default_prime(self.vocab)
        return prime + "".join(generate(self.model, self.vocab, prime, length, temperature, rng=self.sample_rng))

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        """Everything needed to continue exactly: written with ``minigrad.save``."""
        return {
            "kind": CHECKPOINT_KIND,
            "version": CHECKPOINT_VERSION,
            "config": dict(self.config),
            "vocab": self.vocab.to_list(),
            "step": self.step,
            "model": dict(self.model.state_dict()),
            "optimizer": self.optimizer.state_dict(),
            "data": self.batches.state_dict(),
            "state": _state_arrays(self.state),
            "rng": {"train": self.rng.bit_generator.state, "sample": self.sample_rng.bit_generator.state},
        }

    def load_state_dict(self, checkpoint: dict):
        """Restore a position saved by :meth:`state_dict` (from a run with the same config and text)."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.batches.load_state_dict(checkpoint["data"])
        self.state = _state_tensors(checkpoint["state"])
        # the generators are shared by reference (dropout layers hold self.rng), so set them in place
        self.rng.bit_generator.state = checkpoint["rng"]["train"]
        self.sample_rng.bit_generator.state = checkpoint["rng"]["sample"]
        self.step = int(checkpoint["step"])


def _state_arrays(state):
    """The recurrent state (a Tensor, a tuple of them, or None) as plain arrays for a checkpoint."""
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return [np.asarray(s) for s in state]
    return np.asarray(state)


def _state_tensors(saved):
    """Inverse of :func:`_state_arrays`."""
    if saved is None:
        return None
    if isinstance(saved, (tuple, list)):
        return tuple(mg.Tensor(s) for s in saved)
    return mg.Tensor(saved)


def check_checkpoint(checkpoint, where: str) -> dict:
    """The checkpoint dict if it is a complete char-LM checkpoint this version reads, else DataError."""
    check_checkpoint_header(checkpoint, where, CHECKPOINT_KIND, CHECKPOINT_VERSION, "character language model")
    missing = [k for k in ("config", "vocab", "step", "model", "optimizer", "data", "state", "rng")
               if k not in checkpoint]
    if missing or not isinstance(checkpoint["config"], dict):
        raise DataError(f"{where} is damaged: it lacks {', '.join(missing) or 'a config'}")
    return checkpoint


def load_model(checkpoint: dict) -> tuple[CharLM, Vocabulary]:
    """The model and vocabulary of a checkpoint, ready for sampling."""
    vocab = Vocabulary.from_list(checkpoint["vocab"])
    model = build_model(checkpoint["config"], len(vocab), np.random.default_rng(0))
    model.load_state_dict(checkpoint["model"])
    return model.eval(), vocab
