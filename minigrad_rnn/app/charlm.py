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
The ``minigrad-rnn train`` and ``sample`` subcommands at the end of this file drive it.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np

import minigrad as mg
from minigrad import nn
from minigrad.functional import cross_entropy
from minigrad.nn.utils import clip_grad_norm_

from ..utils import detach_state, evaluating
from .corpus import TBPTTBatches, default_corpus_text, eval_batches, load_text, split_corpus
from .errors import CommandError, DataError
from .options import (
    CELLS, OPTIMIZERS, add_common_options, add_run_folder_options, describe_defaults, dropout_probability, make_optimizer, nonnegative_float,
    nonnegative_int, positive_float, positive_int, size,
)
from .runs import (
    EXIT_INTERRUPTED, FIELDS, GATES, PROG, Budget, MetricsFile, TrainingLoop, check_checkpoint_header, check_config,
    check_memory, check_weights, duration, load_checkpoint, plot_curves, prepare_out_dir, recurrent_parameters,
    resolve_config, resumed_config, say, text_digest, write_json,
)
from .vocab import Vocabulary
# Defaults of `train` for a named --data file: tuned for 10 minutes on tinyshakespeare (2 cores). Of the
# runs tried, H=384 with dropout 0.2 reached the lowest validation loss (1.437 nats/char, against 1.471
# for H=256 without dropout, which overfits, and 1.451 with dropout 0.15); see the README.
TRAIN_DEFAULTS = {
    "cell": "lstm", "hidden_size": 384, "num_layers": 1, "dropout": 0.2, "embedding_size": 64,
    "seq_len": 64, "batch_size": 32, "lr": 2e-3, "optimizer": "adam", "clip": 5.0,
    "steps": None, "minutes": 10.0, "dtype": "float32", "seed": 0,
    "eval_every": 200, "sample_every": 400, "sample_length": 200,
}
# Without --data (the built-in corpus): a run of about two minutes, of a smaller model that learns faster.
BUILTIN_DEFAULTS = {**TRAIN_DEFAULTS, "hidden_size": 256, "dropout": 0.0, "minutes": 2.0, "eval_every": 100,
                    "sample_every": 200}
# What a resumed run may change: only how long and how verbosely it goes on.
RUN_OPTIONS = ("steps", "minutes", "eval_every", "sample_every", "sample_length")

# what each config field of a checkpoint must be (runs.FIELDS), as if typed on the command line
CONFIG_FIELDS = {
    "cell": ((lambda v: v in CELLS), f"one of {', '.join(sorted(CELLS))}"), "hidden_size": "size",
    "num_layers": "size", "dropout": "probability", "embedding_size": "size", "seq_len": "size", "batch_size": "size",
    "lr": "positive", "optimizer": ((lambda v: v in OPTIMIZERS), f"one of {', '.join(sorted(OPTIMIZERS))}"),
    "clip": "nonnegative", "steps": "count", "minutes": "minutes", "dtype": "dtype", "seed": "nonnegative_int",
    "eval_every": "positive_int", "sample_every": "nonnegative_int", "sample_length": "positive_int",
    "data": "path", "data_sha256": "digest",
}
CHECKPOINT_KIND = "minigrad-rnn char-lm"
CHECKPOINT_VERSION = 1
EVAL_STREAMS = 64  # evaluation runs no backward pass, so it can afford many parallel streams


def bits(nats: float) -> float:
    """Nats per character -> bits per character."""
    return nats / math.log(2)


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
        between_layers = dropout if num_layers > 1 else 0.0  # one layer: only the read-out's (no PyTorch warning)
        self.rnn = CELLS[cell](embedding_size, hidden_size, num_layers, dropout=between_layers, dtype=dtype, rng=rng)
        self.drop = nn.Dropout(dropout, rng=rng)
        self.head = nn.Linear(hidden_size, vocab_size, dtype=dtype, rng=rng)

    def forward(self, ids, state=None):
        out, state = self.rnn(self.embed(ids), state)
        return self.head(self.drop(out)), state


def build_model(config: dict, vocab_size: int, rng) -> CharLM:
    """The model a run's config describes."""
    return CharLM(vocab_size, config["cell"], config["hidden_size"], config["num_layers"], config["dropout"],
                  config["embedding_size"], np.dtype(config["dtype"]), rng)


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
            yield vocab.items[i]
            logits, state = model(np.array([[i]]), state)


def default_prime(vocab: Vocabulary) -> str:
    """A newline if the text has any (a natural start), else its first character."""
    return "\n" if "\n" in vocab.items else vocab.items[0]


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

    ``config`` holds the hyper-parameters (see ``TRAIN_DEFAULTS``); ``text``
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
    if missing:
        raise DataError(f"{where} is damaged: it lacks {', '.join(missing)}")
    config = check_config(checkpoint["config"], CONFIG_FIELDS, where)
    check_weights(checkpoint["model"], where, config["dtype"])
    if not FIELDS["nonnegative_int"][0](checkpoint["step"]):
        raise DataError(f"{where} is damaged: its step is {checkpoint['step']!r}; expected an integer >= 0")
    fields = {"elapsed time": (checkpoint.get("elapsed", 0.0), "nonnegative")}
    best = checkpoint.get("best", {"step": None, "val_loss": None})  # absent in checkpoints before it was kept
    if not isinstance(best, dict) or set(best) != {"step", "val_loss"} or (best["step"] is None) != (
            best["val_loss"] is None):
        raise DataError(f"{where} is damaged: its best is {best!r}; expected {{'step': ..., 'val_loss': ...}}")
    if best["step"] is not None:
        fields.update({"best step": (best["step"], "nonnegative_int"), "best validation loss": (best["val_loss"],
                                                                                               "positive")})
    for what, (value, kind) in fields.items():
        valid, expected = FIELDS[kind]
        if not valid(value):
            raise DataError(f"{where} is damaged: its {what} is {value!r}; expected {expected}")
    if best["step"] is not None and best["step"] > checkpoint["step"]:
        raise DataError(f"{where} is damaged: its best step {best['step']} is after its step {checkpoint['step']}")
    checkpoint["best"] = best
    return checkpoint


def load_model(checkpoint: dict) -> tuple[CharLM, Vocabulary]:
    """The model and vocabulary of a checkpoint, ready for sampling."""
    vocab = Vocabulary.from_list(checkpoint["vocab"])
    model = build_model(checkpoint["config"], len(vocab), np.random.default_rng(0))
    model.load_state_dict(checkpoint["model"])
    return model.eval(), vocab


def load_trained(path) -> tuple[CharLM, Vocabulary, Path]:
    """The model, vocabulary and checkpoint file of a train output folder or checkpoint file
    (CommandError if it is not one)."""
    checkpoint, file = load_checkpoint(path, check_checkpoint)
    try:
        return (*load_model(checkpoint), file)
    except (KeyError, TypeError, ValueError, DataError) as e:
        raise CommandError(f"{file} is damaged: {e}") from None

# --------------------------------------------------------------------------- the subcommands
def cmd_train(args) -> int:
    """Train (or resume) a character language model."""
    if args.resume:
        checkpoint, file = load_checkpoint(args.resume, check_checkpoint)
        out = file.parent  # --resume DIR or DIR/checkpoint.safetensors: the run continues in its folder
        config = _resumed_config(args, checkpoint["config"], out)
    else:
        checkpoint = None
        config, _ = resolve_config(args, BUILTIN_DEFAULTS if args.data is None else TRAIN_DEFAULTS)
        config["data"] = None if args.data is None else str(Path(args.data).resolve())
        out = Path(args.out or f"runs/charlm-{time.strftime('%Y%m%d-%H%M%S')}")

    source = config["data"] or "the built-in corpus (Python standard library source)"
    text = load_text(config["data"]) if config["data"] else default_corpus_text()
    digest = text_digest(text)
    if checkpoint is not None and digest != config["data_sha256"]:
        raise CommandError(f"cannot resume: {source} changed since the checkpoint was written")
    config["data_sha256"] = digest
    _check_memory(config, len(set(text)))
    try:
        vocab = None if checkpoint is None else Vocabulary.from_list(checkpoint["vocab"])
    except (DataError, KeyError, TypeError, ValueError) as e:  # the checkpoint's, not the data file's
        raise CommandError(f"the checkpoint in {out} is damaged: its vocabulary: {e}") from None
    try:
        trainer = CharLMTrainer(config, text, vocab)
        if checkpoint is not None:
            trainer.load_state_dict(checkpoint)
    except DataError as e:
        raise CommandError(f"{source}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:  # a checkpoint of the right kind but wrong contents
        raise CommandError(f"the checkpoint in {out} is damaged or does not match its config: {e}") from None

    prepare_out_dir(out, fresh=checkpoint is None)
    write_json(out / "config.json", config)
    metrics = MetricsFile(out / "metrics.csv", ["step", "train_loss", "val_loss", "chars_per_sec", "elapsed_sec"],
                          keep_until_step=None if checkpoint is None else trainer.step)
    n = trainer.model.num_parameters()
    say(f"{'resuming' if checkpoint else 'training'} a {config['num_layers']}-layer {config['cell'].upper()} "
        f"(hidden {config['hidden_size']}, {n:,} parameters) on {source}: {len(trainer.train_ids):,} training "
        f"characters, vocabulary {len(trainer.vocab)}; output in {out}")
    started = time.monotonic()
    loop = TrainingLoop(Budget(config["steps"], config["minutes"]), config["eval_every"], "train",
                        step=trainer.step, elapsed=0.0 if checkpoint is None else float(checkpoint["elapsed"]),
                        total=config["steps"], parameters=trainer.model.parameters())
    last_valid = float("nan")
    # the best validation so far, kept in best.safetensors (char-rnn keeps its best checkpoints too)
    best = {"step": None, "val_loss": None} if checkpoint is None else dict(checkpoint["best"])

    def report(final: bool):
        """Validate (unless interrupted), log a row, save a checkpoint (and the best one if it is)."""
        nonlocal last_valid
        validate = not (final and loop.interrupted)
        if validate:
            last_valid = trainer.evaluate("valid")
        train_loss, rate = loop.window_loss(), loop.window_rate(trainer.chars_per_step)
        metrics.append(step=trainer.step, train_loss=train_loss, val_loss=last_valid if validate else None,
                       chars_per_sec=rate, elapsed_sec=loop.elapsed)
        if validate and (best["val_loss"] is None or last_valid < best["val_loss"]):
            best.update(step=trainer.step, val_loss=last_valid)
            mg.save({**trainer.state_dict(), "elapsed": loop.elapsed, "best": best}, out / "best.safetensors")
        mg.save({**trainer.state_dict(), "elapsed": loop.elapsed, "best": best}, out / "checkpoint.safetensors")
        line = [f"step {trainer.step:>6}"]
        if train_loss is not None:
            line.append(f"train {train_loss:.4f}")
        if validate:
            line.append(f"valid {last_valid:.4f} nats ({bits(last_valid):.3f} bpc)")
        if rate:
            line.append(f"{rate:,.0f} chars/s")
        say(" | ".join(line + [duration(loop.elapsed)]))

    def show_sample(step: int):  # before the step's checkpoint, which saves the sampler's state after it
        if config["sample_every"] and step % config["sample_every"] == 0:
            say(f"--- sample at step {step} ---\n{trainer.sample(config['sample_length'])}\n---")

    if trainer.step == 0:
        report(final=False)  # the starting point of the curve (about ln(vocabulary size))
    interrupted = loop.run(trainer.train_step, report, after_step=show_sample, postfix=lambda loss, seconds: {
        "loss": f"{loss:.3f}", "bpc": f"{bits(loss):.3f}", "cps": f"{trainer.chars_per_step / seconds:,.0f}"})
    rows = metrics.read()
    curves = {label: ([int(r["step"]) for r in rows if r[column]], [float(r[column]) for r in rows if r[column]])
              for label, column in (("train", "train_loss"), ("validation", "val_loss"))}
    plotted = plot_curves(out / "loss.png", curves, "step", "loss (nats per character)",
                          f"char-{config['cell']} on {Path(config['data'] or 'the Python stdlib').name}")
    if interrupted:
        say(f"interrupted at step {trainer.step}; checkpoint saved. Continue with: {PROG} train --resume {out}")
        return EXIT_INTERRUPTED

    if math.isnan(last_valid):  # resumed at its end: nothing was validated in this session
        last_valid = trainer.evaluate("valid")
    test = trainer.evaluate("test")
    say(f"finished at step {trainer.step} after {duration(loop.elapsed)} of training "
        f"({duration(time.monotonic() - started)} in this session, validation included)")
    say(f"validation loss: {last_valid:.4f} nats/char ({bits(last_valid):.3f} bits/char) at the end")
    say(f"test loss:       {test:.4f} nats/char ({bits(test):.3f} bits/char) at the end")
    results = {"step": trainer.step, "train_seconds": round(loop.elapsed, 1), "val_loss": last_valid,
               "val_bpc": bits(last_valid), "test_loss": test, "test_bpc": bits(test)}
    if best["step"] is not None and best["step"] != trainer.step:  # the best came earlier: test it too
        best_checkpoint, _ = load_checkpoint(out / "best.safetensors", check_checkpoint)
        trainer.model.load_state_dict(best_checkpoint["model"])
        results.update(best_step=best["step"], best_val_loss=best["val_loss"], best_test_loss=trainer.evaluate("test"))
        say(f"best:            validation {best['val_loss']:.4f} at step {best['step']}, test "
            f"{results['best_test_loss']:.4f} nats/char (best.safetensors; the sample below is from it)")
    else:
        results.update(best_step=trainer.step, best_val_loss=last_valid, best_test_loss=test)
        say("the last validation is the best (best.safetensors holds it too)")
    write_json(out / "results.json", results)
    say(f"sample:\n{trainer.sample(config['sample_length'] * 2)}")
    say(f"files in {out}: config.json, checkpoint.safetensors, best.safetensors, metrics.csv, results.json"
        + (", loss.png" if plotted else " (pip install matplotlib for loss.png)"))
    return 0


def _check_memory(config: dict, vocab_size: int) -> None:
    """Refuse sizes this machine cannot hold before building the model (see ``runs.check_memory``)."""
    E, H = config["embedding_size"], config["hidden_size"]
    parameters = vocab_size * E + recurrent_parameters(config["cell"], E, H, config["num_layers"]) + (H + 1) * vocab_size
    steps = config["batch_size"] * config["seq_len"]
    activations = steps * (3 * (GATES[config["cell"]] + 2) * H * config["num_layers"] + 2 * vocab_size)
    check_memory(parameters, activations, config["dtype"], f"the {config['cell'].upper()} of hidden size {H}")


def _resumed_config(args, saved: dict, out: Path) -> dict:
    """The saved config with the run options given now; other options (and --data) must not change."""
    if args.data is not None and str(Path(args.data).resolve()) != saved["data"]:
        used = saved["data"] or "the built-in corpus"
        raise CommandError(f"--data cannot change when resuming (the run in {out} uses {used})")
    return resumed_config(args, saved, out, TRAIN_DEFAULTS, RUN_OPTIONS)


def cmd_sample(args) -> int:
    """Stream characters from a trained model to stdout."""
    model, vocab, _ = load_trained(args.checkpoint)
    prime = default_prime(vocab) if args.prime is None else args.prime
    if not prime:
        raise CommandError("--prime must not be empty")
    try:
        vocab.encode(prime)
    except DataError as e:
        raise CommandError(f"--prime has {e} (the model knows {len(vocab)} characters)") from None
    if args.top_k is not None and args.top_k > len(vocab):
        args.top_k = None
    rng = np.random.default_rng(args.seed)
    sys.stdout.write(prime)
    for char in generate(model, vocab, prime, args.length, args.temperature, args.top_k, rng):
        sys.stdout.write(char)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    return 0


def add_commands(commands) -> None:
    """Register ``train`` and ``sample`` on the command's subparsers."""
    p = commands.add_parser("train", help="train a character-level language model")
    p.add_argument("--data", metavar="PATH", help="UTF-8 text file (without it: the Python standard library's source)")
    add_common_options(p)
    p.add_argument("--num-layers", type=size, help="stacked recurrent layers")
    p.add_argument("--dropout", type=dropout_probability, help="dropout between layers and before the read-out")
    p.add_argument("--seq-len", type=size, help="characters per truncated-BPTT segment")
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), help="the optimizer")
    p.add_argument("--clip", type=nonnegative_float, help="clip the global gradient norm (0: off)")
    p.add_argument("--steps", type=positive_int, help="total training steps; without it, until --minutes end")
    p.add_argument("--minutes", type=positive_float, help="training time of this session")
    p.add_argument("--eval-every", type=positive_int, help="validate and checkpoint every N steps")
    p.add_argument("--sample-every", type=nonnegative_int, help="show a sample every N steps (0: never)")
    p.add_argument("--sample-length", type=positive_int, help="characters per sample shown while training")
    add_run_folder_options(p, "without it: runs/charlm-DATE-TIME")
    describe_defaults(p, BUILTIN_DEFAULTS, TRAIN_DEFAULTS, "with --data")
    p.set_defaults(handler=cmd_train)

    p = commands.add_parser("sample", help="generate text from a trained model")
    p.add_argument("--checkpoint", metavar="DIR", required=True,
                   help="a train output folder (its last checkpoint), or a checkpoint file such as DIR/best.safetensors")
    p.add_argument("--prime", metavar="TEXT", help="text to start from (without it: a newline)")
    p.add_argument("--length", type=nonnegative_int, default=500, help="characters to generate")
    p.add_argument("--temperature", type=positive_float, default=1.0, help="below 1: safer, above 1: wilder")
    p.add_argument("--top-k", type=positive_int, help="sample among the k likeliest characters only")
    p.add_argument("--seed", type=nonnegative_int, help="random seed (without it: a fresh one)")
    describe_defaults(p, {})
    p.set_defaults(handler=cmd_sample)
