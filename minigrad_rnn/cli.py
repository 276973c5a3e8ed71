"""The ``minigrad-rnn`` command.

    minigrad-rnn train [--data FILE] [--cell lstm] [--minutes 2] ...   train a character language model
    minigrad-rnn sample --checkpoint DIR [--prime TEXT] ...             stream text from one
    minigrad-rnn tag train|eval|predict ...                             part-of-speech tagging
    minigrad-rnn experiment adding|copy [--cell lstm] [--seq-len T]     long-range memory tasks
    minigrad-rnn gradflow [--task adding] [--seq-len 200]               |dL/dh_t| against t, per cell

Every problem the user can fix (bad data, bad options, a damaged checkpoint,
an unwritable folder) ends with one line "minigrad-rnn: error: ..." on
stderr and a non-zero exit status, never a traceback; checkpoints are written
atomically, so an earlier one is never damaged.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

import minigrad as mg
from minigrad.serialization import CheckpointError

from . import charlm, experiments, tagger
from .data import DataError, default_corpus_text, load_text, read_conllu, split_sentences

PROG = "minigrad-rnn"
EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130

# Defaults of `train` for a named --data file: tuned for 10 minutes on tinyshakespeare (2 cores).
TRAIN_DEFAULTS = {
    "cell": "lstm", "hidden_size": 256, "num_layers": 1, "dropout": 0.0, "embedding_size": 64,
    "seq_len": 64, "batch_size": 32, "lr": 2e-3, "optimizer": "adam", "clip": 5.0,
    "steps": None, "minutes": 10.0, "dtype": "float32", "seed": 0,
    "eval_every": 200, "sample_every": 400, "sample_length": 200,
}
# Without --data (the built-in corpus): a run of about two minutes.
BUILTIN_DEFAULTS = {**TRAIN_DEFAULTS, "minutes": 2.0, "eval_every": 100, "sample_every": 200}
# What a resumed run may change: only how long and how verbosely it goes on.
RUN_OPTIONS = ("steps", "minutes", "eval_every", "sample_every", "sample_length")

# Defaults of `tag train`: about 2.5 minutes on 90% of the EWT development file.
TAG_DEFAULTS = {
    "word_size": 100, "char_size": 32, "char_filters": 128, "hidden_size": 128, "dropout": 0.5,
    "word_dropout": 0.25, "batch_size": 32, "lr": 3e-3, "clip": 5.0, "epochs": 30, "minutes": None,
    "valid_fraction": 0.1, "seed": 0, "dtype": "float32",
}

# Defaults of `experiment`: the LSTM solves the adding problem at T = 100 in about 3 minutes here.
EXPERIMENT_DEFAULTS = {
    "cell": "lstm", "seq_len": 100, "hidden_size": 128, "batch_size": 50, "lr": 3e-3, "optimizer": "adam",
    "clip": 1.0, "steps": None, "minutes": 10.0, "eval_every": 100, "test_size": 1000, "seed": 0,
    "dtype": "float32", "forget_bias": 1.0,
}

# float64: at T = 200 a vanishing gradient underflows float32 to exactly zero
GRADFLOW_DEFAULTS = {"task": "adding", "seq_len": 200, "hidden_size": 64, "batch_size": 50, "lr": 3e-3,
                     "steps": 1000, "seed": 0, "dtype": "float64", "forget_bias": 1.0}


class CommandError(Exception):
    """A problem the user can fix; reported as one line with exit status 1."""


class UsageError(Exception):
    """Bad command-line arguments; reported as one line with exit status 2."""


# --------------------------------------------------------------------------- argument types
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
nonnegative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: v > 0, "a positive number")
nonnegative_float = _number(float, lambda v: v >= 0, "a number >= 0")
dropout_probability = _number(float, lambda v: 0 <= v < 1, "a probability in [0, 1)")
finite_float = _number(float, lambda v: True, "a number")
open_fraction = _number(float, lambda v: 0 < v < 1, "a fraction in (0, 1)")


def cell_list(text):
    """argparse type: "rnn,lstm" -> ["rnn", "lstm"]; ArgumentTypeError names the known cells."""
    cells = text.split(",")
    unknown = [c for c in cells if c not in charlm.CELLS]
    if unknown or not text:
        raise argparse.ArgumentTypeError(f"expected cells among {', '.join(sorted(charlm.CELLS))} "
                                         f"separated by commas, got {text!r}")
    return cells


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage dump) and never exit the process."""

    def error(self, message):
        raise UsageError(message)


# --------------------------------------------------------------------------- files of a run
def write_json(path: Path, obj) -> None:
    """Write JSON atomically (a temporary file, then a rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def prepare_out_dir(out: Path, fresh: bool = True) -> Path:
    """Create the output folder; a fresh run refuses a folder that already holds a checkpoint."""
    if fresh and (out / "checkpoint.npz").exists():
        raise CommandError(f"{out} already holds a run (checkpoint.npz); continue it with --resume {out} "
                           "or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise CommandError(f"cannot write to output folder {out}: {e.strerror or e}") from None
    return out


class MetricsFile:
    """A CSV file with a header, appended one row at a time (and flushed, so it survives a crash)."""

    def __init__(self, path: Path, columns: list[str], keep_until_step: int | None = None):
        self.path, self.columns = path, columns
        rows = []
        if keep_until_step is not None and path.exists():  # resuming: drop rows after the checkpoint
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= keep_until_step]
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)

    def append(self, **row):
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow({k: _fmt(v) for k, v in row.items()})

    def read(self) -> list[dict]:
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))


def _fmt(value):
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else value


def plot_curves(path: Path, series: dict, xlabel: str, ylabel: str, title: str, log_y: bool = False) -> bool:
    """Save a line plot of ``{label: (xs, ys)}`` or ``{label: (xs, ys, style)}`` (matplotlib keyword
    arguments) as PNG; False if matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    fig = Figure(figsize=(7, 4.5), tight_layout=True)  # no pyplot: no global state, no display needed
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, (xs, ys, *style) in series.items():
        ax.plot(xs, ys, label=label, **{"marker": "." if len(xs) < 30 else None, **(style[0] if style else {})})
    if log_y:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=100)
    return True


def load_checkpoint(path: str | Path, check) -> tuple[dict, Path]:
    """Load ``DIR/checkpoint.npz`` (or a checkpoint file) and check its kind with ``check``."""
    path = Path(path)
    file = path / "checkpoint.npz" if path.is_dir() else path
    try:
        checkpoint = mg.load(file)
    except FileNotFoundError:
        raise CommandError(f"no checkpoint found at {file}") from None
    except IsADirectoryError:
        raise CommandError(f"{file} is a directory, not a checkpoint") from None
    return check(checkpoint, str(file)), file


class StopOnInterrupt:
    """The first Ctrl-C asks the loop to stop after the current step (so the state saved is
    consistent); a second one interrupts at once."""

    def __enter__(self):
        self.requested = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc_info):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def progress_bar(total, initial, desc):
    """A tqdm bar on stderr, shown only on a terminal (logs stay clean)."""
    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, disable=None,
                file=sys.stderr)


def say(text: str = "") -> None:
    """Print a line to stdout without breaking a progress bar."""
    tqdm.write(text, file=sys.stdout)
    sys.stdout.flush()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


def _resolve(args, defaults: dict, count: str = "steps") -> tuple[dict, dict]:
    """(config, given): the defaults overridden by the options given on the command line.

    Of the two budgets, ``count`` (steps or epochs) and minutes, giving only one drops the other's default.
    """
    given = {k: v for k, v in vars(args).items() if k in defaults and v is not None}
    config = {**defaults, **given}
    if count in given and "minutes" not in given:
        config["minutes"] = None
    if "minutes" in given and count not in given:
        config[count] = None
    return config, given


class Budget:
    """Stop after ``steps`` steps in all or ``minutes`` of this session, whichever comes first."""

    def __init__(self, steps: int | None, minutes: float | None):
        self.steps = steps
        self.deadline = None if minutes is None else time.monotonic() + 60 * minutes

    def done(self, step: int) -> bool:
        return (self.steps is not None and step >= self.steps) or \
            (self.deadline is not None and time.monotonic() >= self.deadline)


# --------------------------------------------------------------------------- train
def cmd_train(args) -> int:
    """Train (or resume) a character language model."""
    if args.resume:
        checkpoint, _ = load_checkpoint(args.resume, charlm.check_checkpoint)
        out = Path(args.resume)
        config, given = _resumed_config(args, checkpoint["config"], out)
    else:
        checkpoint = None
        config, given = _resolve(args, BUILTIN_DEFAULTS if args.data is None else TRAIN_DEFAULTS)
        config["data"] = None if args.data is None else str(Path(args.data).resolve())
        out = Path(args.out or f"runs/charlm-{time.strftime('%Y%m%d-%H%M%S')}")

    source = config["data"] or "the built-in corpus (Python standard library source)"
    text = load_text(config["data"]) if config["data"] else default_corpus_text()
    digest = charlm.text_digest(text)
    if checkpoint is not None and digest != config["data_sha256"]:
        raise CommandError(f"cannot resume: {source} changed since the checkpoint was written")
    config["data_sha256"] = digest
    try:
        vocab = None if checkpoint is None else charlm.Vocabulary.from_list(checkpoint["vocab"])
        trainer = charlm.CharLMTrainer(config, text, vocab)
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
    elapsed = 0.0 if checkpoint is None else float(checkpoint["elapsed"])

    n = trainer.model.num_parameters()
    say(f"{'resuming' if checkpoint else 'training'} a {config['num_layers']}-layer {config['cell'].upper()} "
        f"(hidden {config['hidden_size']}, {n:,} parameters) on {source}: {len(trainer.train_ids):,} training "
        f"characters, vocabulary {len(trainer.vocab)}; output in {out}")
    started = time.monotonic()
    interrupted, elapsed, last_valid = _train_loop(trainer, config, out, metrics, elapsed)
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
    say(f"finished at step {trainer.step} after {_duration(elapsed)} of training "
        f"({_duration(time.monotonic() - started)} in this session, validation included)")
    say(f"validation loss: {last_valid:.4f} nats/char ({charlm.bits(last_valid):.3f} bits/char)")
    say(f"test loss:       {test:.4f} nats/char ({charlm.bits(test):.3f} bits/char)")
    write_json(out / "results.json", {"step": trainer.step, "train_seconds": round(elapsed, 1),
                                      "val_loss": last_valid, "val_bpc": charlm.bits(last_valid),
                                      "test_loss": test, "test_bpc": charlm.bits(test)})
    say(f"sample:\n{trainer.sample(config['sample_length'] * 2)}")
    say(f"files in {out}: config.json, checkpoint.npz, metrics.csv, results.json"
        + (", loss.png" if plotted else " (pip install matplotlib for loss.png)"))
    return 0


def _resumed_config(args, saved: dict, out: Path) -> tuple[dict, dict]:
    """The saved config with the run options given now; other options must not change."""
    _, given = _resolve(args, TRAIN_DEFAULTS)
    for key, value in given.items():
        if key not in RUN_OPTIONS and value != saved[key]:
            raise CommandError(f"--{key.replace('_', '-')} cannot change when resuming "
                               f"(the run in {out} has {saved[key]})")
    if args.data is not None and str(Path(args.data).resolve()) != saved["data"]:
        used = saved["data"] or "the built-in corpus"
        raise CommandError(f"--data cannot change when resuming (the run in {out} uses {used})")
    if args.out is not None and Path(args.out).resolve() != out.resolve():
        raise CommandError("--out cannot differ from --resume: a resumed run continues in its own folder")
    config = dict(saved)
    config.update((k, given[k]) for k in RUN_OPTIONS if k in given)
    if "steps" in given and "minutes" not in given:
        config["minutes"] = None
    if "minutes" in given and "steps" not in given:
        config["steps"] = None
    return config, given


def _train_loop(trainer, config, out: Path, metrics: MetricsFile, elapsed: float):
    """Train until the budget is spent or Ctrl-C; validate, log and checkpoint every eval_every steps.

    Returns (interrupted, total training seconds, last validation loss).
    """
    budget = Budget(config["steps"], config["minutes"])
    window_loss, window_steps, window_time = 0.0, 0, 0.0
    last_valid, last_row = float("nan"), trainer.step

    def checkpoint(validate: bool):
        nonlocal window_loss, window_steps, window_time, last_valid, last_row
        if validate:
            last_valid = trainer.evaluate("valid")
        rate = window_steps * trainer.chars_per_step / window_time if window_time else None
        metrics.append(step=trainer.step, train_loss=window_loss / window_steps if window_steps else None,
                       val_loss=last_valid if validate else None, chars_per_sec=rate, elapsed_sec=elapsed)
        mg.save({**trainer.state_dict(), "elapsed": elapsed}, out / "checkpoint.npz")
        line = [f"step {trainer.step:>6}"]
        if window_steps:
            line.append(f"train {window_loss / window_steps:.4f}")
        if validate:
            line.append(f"valid {last_valid:.4f} nats ({charlm.bits(last_valid):.3f} bpc)")
        if rate:
            line.append(f"{rate:,.0f} chars/s")
        say(" | ".join(line + [_duration(elapsed)]))
        window_loss, window_steps, window_time, last_row = 0.0, 0, 0.0, trainer.step

    if trainer.step == 0:
        checkpoint(validate=True)  # the starting point of the curve (about ln(vocabulary size))
    with StopOnInterrupt() as stop, progress_bar(config["steps"], trainer.step, "train") as bar:
        while not budget.done(trainer.step) and not stop.requested:
            start = time.perf_counter()
            loss = trainer.train_step()
            seconds = time.perf_counter() - start
            elapsed += seconds
            window_loss, window_steps, window_time = window_loss + loss, window_steps + 1, window_time + seconds
            bar.update()
            bar.set_postfix(loss=f"{loss:.3f}", bpc=f"{charlm.bits(loss):.3f}",
                            cps=f"{trainer.chars_per_step / seconds:,.0f}", refresh=False)
            if not math.isfinite(loss):
                raise CommandError(f"the loss diverged to {loss} at step {trainer.step}; "
                                   "try a smaller --lr or --clip (the last checkpoint is intact)")
            if config["sample_every"] and trainer.step % config["sample_every"] == 0:  # before the checkpoint,
                say(f"--- sample at step {trainer.step} ---\n{trainer.sample(config['sample_length'])}\n---")
            if trainer.step % config["eval_every"] == 0:  # which saves the sampler's state after it
                checkpoint(validate=True)
        interrupted = stop.requested
    if trainer.step != last_row:
        checkpoint(validate=not interrupted)
    return interrupted, elapsed, last_valid


# --------------------------------------------------------------------------- sample
def cmd_sample(args) -> int:
    """Stream characters from a trained model to stdout."""
    checkpoint, file = load_checkpoint(args.checkpoint, charlm.check_checkpoint)
    try:
        model, vocab = charlm.load_model(checkpoint)
    except (KeyError, TypeError, ValueError, DataError) as e:
        raise CommandError(f"{file} is damaged: {e}") from None
    prime = charlm.default_prime(vocab) if args.prime is None else args.prime
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
    for char in charlm.generate(model, vocab, prime, args.length, args.temperature, args.top_k, rng):
        sys.stdout.write(char)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    return 0


# --------------------------------------------------------------------------- tag
def _read_sentences(path) -> list:
    try:
        return read_conllu(path)
    except DataError as e:
        raise CommandError(str(e)) from None


def cmd_tag_train(args) -> int:
    """Train a part-of-speech tagger on part of a CoNLL-U file; report accuracy on the rest."""
    config, _ = _resolve(args, TAG_DEFAULTS, count="epochs")
    sentences = _read_sentences(args.data)
    config["data"] = str(Path(args.data).resolve())
    config["data_sha256"] = charlm.text_digest(load_text(args.data))
    try:
        train, valid = split_sentences(sentences, config["valid_fraction"], config["seed"])
    except DataError as e:
        raise CommandError(f"{args.data}: {e}") from None
    out = prepare_out_dir(Path(args.out), fresh=True)
    write_json(out / "config.json", config)
    run = tagger.TaggerTrainer(config, train)
    n_words = sum(len(s.words) for s in train)
    say(f"training a tagger ({run.model.num_parameters():,} parameters) on {len(train)} sentences "
        f"({n_words:,} words) of {args.data}; validating on {len(valid)}; output in {out}")
    metrics = MetricsFile(out / "metrics.csv", ["epoch", "train_loss", "valid_accuracy", "elapsed_sec"])
    budget = Budget(config["epochs"], config["minutes"])
    elapsed, epoch, scores = 0.0, 0, None
    with StopOnInterrupt() as stop, progress_bar(config["epochs"], 0, "tag train") as bar:
        while not budget.done(epoch) and not stop.requested:
            start = time.perf_counter()
            loss = run.train_epoch(lambda: stop.requested or budget.done(epoch))
            elapsed += time.perf_counter() - start
            epoch += 1
            scores = tagger.score(run.model, run.vocabs, valid)
            metrics.append(epoch=epoch, train_loss=loss, valid_accuracy=scores.accuracy, elapsed_sec=elapsed)
            mg.save(run.state_dict(), out / "checkpoint.npz")
            bar.update()
            say(f"epoch {epoch:>3} | train loss {loss:.4f} | validation accuracy {100 * scores.accuracy:.2f}% | "
                f"{_duration(elapsed)}")
    if scores is None:  # stopped before the first epoch ended
        mg.save(run.state_dict(), out / "checkpoint.npz")
        scores = tagger.score(run.model, run.vocabs, valid)
    _print_scores(scores, f"{len(valid)} validation sentences")
    if stop.requested:
        say(f"interrupted after {epoch} epochs; the model so far is saved in {out}")
        return EXIT_INTERRUPTED
    return 0


def _load_tagger(model_dir):
    checkpoint, file = load_checkpoint(model_dir, tagger.check_checkpoint)
    try:
        model, vocabs = tagger.load_tagger(checkpoint)
    except (KeyError, TypeError, ValueError, DataError) as e:
        raise CommandError(f"{file} is damaged: {e}") from None
    return checkpoint, model, vocabs


def cmd_tag_eval(args) -> int:
    """Accuracy, per-tag precision/recall and confusions of a tagger on a CoNLL-U file."""
    checkpoint, model, vocabs = _load_tagger(args.model)
    sentences = _read_sentences(args.data)
    what = f"{len(sentences)} sentences of {args.data}"
    if args.split != "all":
        config = checkpoint["config"]
        if charlm.text_digest(load_text(args.data)) != config["data_sha256"]:
            raise CommandError(f"--split {args.split} needs the file the tagger was trained on ({config['data']})")
        train, valid = split_sentences(sentences, config["valid_fraction"], config["seed"])
        sentences = valid if args.split == "valid" else train
        what = f"the {len(sentences)} {args.split} sentences of {args.data}"
    _print_scores(tagger.score(model, vocabs, sentences), what)
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
    for line in sys.stdin:
        words = line.split()
        if words:
            (tags,) = tagger.predict(model, vocabs, [words])
            line = " ".join(f"{w}/{t}" for w, t in zip(words, tags))
        else:
            line = ""
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    return 0


# --------------------------------------------------------------------------- experiments
def cmd_experiment(args) -> int:
    """Train one cell on the adding or copy task and compare its test loss with the baseline."""
    config, _ = _resolve(args, EXPERIMENT_DEFAULTS)
    config["task"] = args.task
    _check_seq_len(args.task, config["seq_len"])
    out = prepare_out_dir(Path(args.out or f"runs/{args.task}-{config['cell']}-T{config['seq_len']}"), fresh=False)
    run = experiments.TaskRun(config)
    task = run.task
    write_json(out / "config.json", config)
    say(f"{task.name} task, T = {config['seq_len']}, {config['cell'].upper()} with {config['hidden_size']} hidden "
        f"units; baseline {task.metric} {task.baseline:.4f}; output in {out}")
    metrics = MetricsFile(out / "metrics.csv", ["step", "train_loss", "test_loss", "baseline", "elapsed_sec"])
    budget = Budget(config["steps"], config["minutes"])
    elapsed, window, test = 0.0, [], run.test_loss()
    metrics.append(step=0, train_loss=None, test_loss=test, baseline=task.baseline, elapsed_sec=0.0)
    with StopOnInterrupt() as stop, progress_bar(config["steps"], 0, task.name) as bar:
        while not budget.done(run.step) and not stop.requested:
            start = time.perf_counter()
            window.append(run.train_step())
            elapsed += time.perf_counter() - start
            bar.update()
            bar.set_postfix(loss=f"{window[-1]:.4f}", refresh=False)
            if run.step % config["eval_every"] == 0:
                test = run.test_loss()
                metrics.append(step=run.step, train_loss=float(np.mean(window)), test_loss=test,
                               baseline=task.baseline, elapsed_sec=elapsed)
                say(f"step {run.step:>6} | train {np.mean(window):.4f} | test {test:.4f} "
                    f"(baseline {task.baseline:.4f}) | {_duration(elapsed)}")
                window = []
    if window:
        test = run.test_loss()
        metrics.append(step=run.step, train_loss=float(np.mean(window)), test_loss=test, baseline=task.baseline,
                       elapsed_sec=elapsed)
    rows = metrics.read()
    plot_curves(out / "loss.png", {
        f"{config['cell']} test": ([int(r["step"]) for r in rows], [float(r["test_loss"]) for r in rows]),
        "baseline": ([int(rows[0]["step"]), int(rows[-1]["step"])], [task.baseline] * 2),
    }, "step", f"test {task.metric}", f"{task.name} task, T = {config['seq_len']}", log_y=True)
    say(f"{config['cell'].upper()} on the {task.name} task (T = {config['seq_len']}) after {run.step} steps "
        f"({_duration(elapsed)}): test {task.metric} {test:.4f} = {test / task.baseline:.3f} x the baseline "
        f"{task.baseline:.4f} of {task.baseline_strategy}")
    write_json(out / "results.json", {"task": task.name, "cell": config["cell"], "seq_len": config["seq_len"],
                                      "steps": run.step, "train_seconds": round(elapsed, 1), "test_loss": test,
                                      "baseline": task.baseline})
    return EXIT_INTERRUPTED if stop.requested else 0


def _check_seq_len(task: str, seq_len: int):
    shortest = experiments.TASKS[task].min_seq_len
    if seq_len < shortest:
        raise CommandError(f"the {task} task needs --seq-len >= {shortest}, got {seq_len}")


def cmd_gradflow(args) -> int:
    """|dL/dh_t| against t for RNN, LSTM and GRU, at initialization and after some training."""
    config, _ = _resolve(args, GRADFLOW_DEFAULTS)
    config["cells"] = args.cells or ["rnn", "lstm", "gru"]
    _check_seq_len(config["task"], config["seq_len"])
    out = prepare_out_dir(Path(args.out or f"runs/gradflow-{config['task']}-T{config['seq_len']}"), fresh=False)
    write_json(out / "config.json", config)
    rows, series = [], {}
    colors = {"rnn": "tab:red", "lstm": "tab:blue", "gru": "tab:green"}
    say(f"gradient of the loss with respect to each hidden state h_t, {config['task']} task, T = {config['seq_len']}")
    with StopOnInterrupt() as stop:
        for cell in config["cells"]:
            norms = experiments.gradient_flow(dict(config, cell=cell), should_stop=lambda: stop.requested)
            for phase, values in norms.items():
                rows += [(cell, phase, t, v) for t, v in enumerate(values)]
                style = {"color": colors[cell], "linestyle": "--" if phase == "initialization" else "-"}
                series[f"{cell} ({phase})"] = (np.arange(len(values)), np.where(values > 0, values, np.nan), style)
                ratio = values[0] / values[-1] if values[-1] > 0 else float("nan")
                say(f"{cell.upper():>4} {phase:<13} |dL/dh_0| / |dL/dh_T| = {ratio:.3g} "
                    f"(|dL/dh_0| = {values[0]:.3g}, |dL/dh_T| = {values[-1]:.3g})")
            if stop.requested:
                break
    with (out / "gradflow.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["cell", "phase", "t", "grad_norm"])
        writer.writerows((c, p, t, f"{v:.6g}") for c, p, t, v in rows)
    plotted = plot_curves(out / "gradflow.png", series, "time step t", "|dL/dh_t|",
                          f"gradient flow, {config['task']} task, T = {config['seq_len']}", log_y=True)
    say(f"wrote {out / 'gradflow.csv'}" + (f" and {out / 'gradflow.png'}" if plotted else ""))
    return EXIT_INTERRUPTED if stop.requested else 0


# --------------------------------------------------------------------------- the parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand (defaults are None: the command resolves them)."""
    parser = _Parser(prog=PROG, description="Recurrent networks on minigrad: char-rnn, tagging, memory tasks.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {mg.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p, *, cell=True, dtype="float32"):
        if cell:
            p.add_argument("--cell", choices=sorted(charlm.CELLS), help="recurrent cell (default lstm)")
        p.add_argument("--hidden-size", type=positive_int, help="hidden units per layer")
        p.add_argument("--batch-size", type=positive_int, help="sequences per batch")
        p.add_argument("--lr", type=positive_float, help="learning rate")
        p.add_argument("--seed", type=nonnegative_int, help="random seed (default 0)")
        p.add_argument("--dtype", choices=["float32", "float64"], help=f"floating-point type (default {dtype})")

    p = commands.add_parser("train", help="train a character-level language model")
    p.add_argument("--data", metavar="PATH", help="UTF-8 text file (default: the Python standard library's source)")
    common(p)
    p.add_argument("--num-layers", type=positive_int, help="stacked recurrent layers (default 1)")
    p.add_argument("--dropout", type=dropout_probability, help="dropout between layers and before the read-out")
    p.add_argument("--seq-len", type=positive_int, help="characters per truncated-BPTT segment")
    p.add_argument("--optimizer", choices=sorted(charlm.OPTIMIZERS), help="default adam")
    p.add_argument("--clip", type=nonnegative_float, help="clip the global gradient norm (0: off; default 5)")
    p.add_argument("--steps", type=positive_int, help="total training steps")
    p.add_argument("--minutes", type=positive_float, help="training time of this session "
                   "(default 2 on the built-in corpus, 10 with --data)")
    p.add_argument("--eval-every", type=positive_int, help="validate and checkpoint every N steps")
    p.add_argument("--sample-every", type=nonnegative_int, help="show a sample every N steps (0: never)")
    p.add_argument("--sample-length", type=positive_int, help="characters per sample shown while training")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/charlm-DATE-TIME)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR exactly where it stopped")
    p.set_defaults(handler=cmd_train)

    p = commands.add_parser("sample", help="generate text from a trained model")
    p.add_argument("--checkpoint", metavar="DIR", required=True, help="a train output folder (or checkpoint.npz)")
    p.add_argument("--prime", metavar="TEXT", help="text to start from (default a newline)")
    p.add_argument("--length", type=nonnegative_int, default=500, help="characters to generate (default 500)")
    p.add_argument("--temperature", type=positive_float, default=1.0, help="below 1: safer, above 1: wilder")
    p.add_argument("--top-k", type=positive_int, help="sample among the k likeliest characters only")
    p.add_argument("--seed", type=nonnegative_int, help="random seed (default: fresh)")
    p.set_defaults(handler=cmd_sample)

    tag = commands.add_parser("tag", help="part-of-speech tagging (train, eval, predict)")
    tag_commands = tag.add_subparsers(dest="tag_command", required=True, metavar="ACTION")
    p = tag_commands.add_parser("train", help="train a BiLSTM tagger on a CoNLL-U file")
    p.add_argument("--data", metavar="FILE", required=True, help="CoNLL-U file")
    p.add_argument("--out", metavar="DIR", required=True, help="output folder")
    p.add_argument("--valid-fraction", type=open_fraction, help="sentences held out for validation (default 0.1)")
    common(p, cell=False)
    p.add_argument("--word-size", type=positive_int, help="word embedding size (default 100)")
    p.add_argument("--char-size", type=positive_int, help="character embedding size (default 32)")
    p.add_argument("--char-filters", type=positive_int, help="character CNN features per word (default 128)")
    p.add_argument("--dropout", type=dropout_probability, help="dropout (default 0.5)")
    p.add_argument("--word-dropout", type=nonnegative_float, help="alpha of word dropout alpha/(alpha+count)")
    p.add_argument("--clip", type=nonnegative_float, help="clip the global gradient norm (0: off; default 5)")
    p.add_argument("--epochs", type=positive_int, help="passes over the training sentences (default 30)")
    p.add_argument("--minutes", type=positive_float, help="stop after this much time")
    p.set_defaults(handler=cmd_tag_train)
    p = tag_commands.add_parser("eval", help="accuracy of a tagger on a CoNLL-U file")
    p.add_argument("--model", metavar="DIR", required=True, help="a tag train output folder")
    p.add_argument("--data", metavar="FILE", required=True, help="CoNLL-U file")
    p.add_argument("--split", choices=["all", "train", "valid"], default="all",
                   help="evaluate on the training or held-out part of the training file (default all)")
    p.set_defaults(handler=cmd_tag_eval)
    p = tag_commands.add_parser("predict", help="tag sentences from stdin, one per line")
    p.add_argument("--model", metavar="DIR", required=True, help="a tag train output folder")
    p.set_defaults(handler=cmd_tag_predict)

    p = commands.add_parser("experiment", help="the adding or copy-memory task")
    p.add_argument("task", choices=sorted(experiments.TASKS))
    common(p)
    p.add_argument("--seq-len", type=positive_int, help="T: the distance to remember (default 100)")
    p.add_argument("--optimizer", choices=sorted(charlm.OPTIMIZERS), help="default adam")
    p.add_argument("--clip", type=nonnegative_float, help="clip the global gradient norm (0: off; default 1)")
    p.add_argument("--steps", type=positive_int, help="training steps")
    p.add_argument("--minutes", type=positive_float, help="training time (default 10)")
    p.add_argument("--eval-every", type=positive_int, help="test every N steps (default 100)")
    p.add_argument("--test-size", type=positive_int, help="test sequences (default 1000)")
    p.add_argument("--forget-bias", type=finite_float, help="initial LSTM forget-gate bias (default 1, as Keras)")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/TASK-CELL-TT)")
    p.set_defaults(handler=cmd_experiment)

    p = commands.add_parser("gradflow", help="|dL/dh_t| against t for RNN, LSTM and GRU")
    p.add_argument("--task", choices=sorted(experiments.TASKS), help="default adding")
    p.add_argument("--cells", type=cell_list, help="comma-separated cells (default rnn,lstm,gru)")
    common(p, cell=False, dtype="float64")
    p.add_argument("--seq-len", type=positive_int, help="T (default 200)")
    p.add_argument("--steps", type=nonnegative_int, help="training steps before the second measurement (default 1000)")
    p.add_argument("--forget-bias", type=finite_float, help="initial LSTM forget-gate bias (default 1, as Keras)")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/gradflow-TASK-TT)")
    p.set_defaults(handler=cmd_gradflow)
    return parser


def main(argv=None) -> int:
    """Run ``minigrad-rnn`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        mg.retain_freed_memory()  # reuse each step's memory instead of faulting it in again
        with threadpool_limits(limits=_blas_threads(), user_api="blas"):
            return args.handler(args)
    except SystemExit as e:  # --help and --version
        return e.code if isinstance(e.code, int) else 0
    except UsageError as e:
        return _fail(str(e), EXIT_USAGE)
    except (CommandError, DataError, CheckpointError) as e:
        return _fail(str(e))
    except BrokenPipeError:  # e.g. `minigrad-rnn sample ... | head`: the reader is gone, stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except OSError as e:
        return _fail(f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e))
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)


def _blas_threads():
    """One BLAS thread unless the user chose a number: a training step's matmuls are small, so
    threads gain little on their own and lose many-fold when another process shares the cores
    (measured on 2 cores: 1,500 chars/s with OpenBLAS's 2 threads, 12,000 with one)."""
    if any(os.environ.get(name) for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")):
        return None  # threadpoolctl: leave the user's setting alone
    return 1


def _fail(message: str, status: int = EXIT_ERROR) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status
