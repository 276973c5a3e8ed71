"""What every ``minigrad-rnn`` run shares: its output folder and files, checkpoints, the budget,
Ctrl-C, progress, and the one training loop that the char-LM, the tagger and the experiments use.
"""
from __future__ import annotations

import atexit
import contextlib
import csv
import hashlib
import io
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

try:
    import fcntl
except ImportError:  # not POSIX: runs are not locked
    fcntl = None

import minigrad as mg

from .errors import CommandError, DataError

PROG = "minigrad-rnn"
EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


def text_digest(text: str) -> str:
    """SHA-256 of the text, so a resumed run can tell that its data changed."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- files of a run
def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` all at once: a temporary file beside it, fsync, then a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, obj) -> None:
    """Write JSON atomically; NaN and infinities become null (strict JSON has neither)."""
    write_atomically(path, json.dumps(_finite_or_null(obj), indent=2, allow_nan=False) + "\n")


def _finite_or_null(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_null(v) for v in obj]
    return obj


_LOCKS: dict = {}  # output folder -> the open lock file this process holds on it (released at exit)


def _lock(out: Path) -> None:
    """Hold ``out/.lock`` until :func:`release_locks` (at the latest, at exit), so a second run on the
    same folder refuses.  The lock is the kernel's (flock): a killed run's lock file blocks nobody."""
    key = out.resolve()
    if fcntl is None or key in _LOCKS:
        return
    f = (out / ".lock").open("a")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise CommandError(f"another minigrad-rnn run is writing to {out}; wait for it or choose another --out") \
            from None
    if not _LOCKS:
        atexit.register(release_locks)
    _LOCKS[key] = f


def release_locks() -> None:
    """Remove the lock files this process holds, then let go of them (the command's last act, Ctrl-C too)."""
    while _LOCKS:
        folder, f = _LOCKS.popitem()
        with contextlib.suppress(OSError):
            (folder / ".lock").unlink()
        f.close()


def prepare_out_dir(out: Path, fresh: bool = True, resumable: bool = True, replaces=()) -> Path:
    """Create the output folder and lock it for this run (CommandError if another running minigrad-rnn
    holds it).  A fresh run refuses a folder that holds anything but the files named in ``replaces``
    (a command's own outputs it may write again): an earlier run, or the user's files."""
    if fresh and out.is_dir():
        held = sorted(entry.name for entry in os.scandir(out) if entry.name != ".lock" and entry.name not in replaces)
        if "checkpoint.safetensors" in held:
            hint = f"continue it with --resume {out} or choose another --out" if resumable else "choose another --out"
            raise CommandError(f"{out} already holds a run (checkpoint.safetensors); {hint}")
        if held:
            listed = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
            raise CommandError(f"{out} is not empty (it holds {listed}); a new run writes into a new or empty "
                               "folder: choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        _lock(out)
    except OSError as e:
        raise CommandError(f"cannot write to output folder {out}: {e.strerror or e}") from None
    return out


class MetricsFile:
    """A CSV file with a header, appended one row at a time (and flushed, so it survives a crash).
    Its "step" (or "epoch") column counts the steps; ``model`` names the column that tells the models
    of a run that trains several apart (translate's attention, gradflow's cell)."""

    def __init__(self, path: Path, columns: list[str], keep_until_step: int | None = None,
                 model: str | None = None, finished=()):
        """A resumed run keeps the rows up to ``keep_until_step`` of the model under way, and all
        rows of the ``finished`` models (by ``model`` column); a new run starts the file afresh."""
        self.path, self.columns = path, columns
        self.count = "epoch" if "epoch" in columns else "step"
        rows = []
        if keep_until_step is not None and path.exists():  # resuming: drop rows after the checkpoint
            rows = [r for r in self.read() if (model is not None and r[model] in finished)
                    or int(r[self.count]) <= keep_until_step and (model is None or r[model] not in finished)]
        text = io.StringIO()
        writer = csv.DictWriter(text, columns)
        writer.writeheader()
        writer.writerows(rows)
        write_atomically(path, text.getvalue())  # a kill here leaves the old history whole

    def append(self, **row):
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow({k: _fmt(v) for k, v in row.items()})

    def read(self) -> list[dict]:
        """The rows, checked: the header is this file's and every step a whole number (else CommandError)."""
        with self.path.open(newline="", encoding="utf-8", errors="replace") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
        if reader.fieldnames != self.columns or any(not (r.get(self.count) or "").isdigit() for r in rows):
            raise CommandError(f"{self.path} is damaged (expected the columns {', '.join(self.columns)} and a "
                               f"whole-number {self.count} on every row); move it away to start a new history")
        return rows


def _fmt(value):
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else value


def plot_curves(path: Path, series: dict, xlabel: str, ylabel: str, title: str, log_y: bool = False,
                legend_outside: bool = False) -> bool:
    """Save a line plot of ``{label: (xs, ys)}`` or ``{label: (xs, ys, style)}`` (matplotlib keyword
    arguments) as PNG, the legend beside the axes if ``legend_outside`` (where it would cover lines);
    False if matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    fig = Figure(figsize=(9.5 if legend_outside else 7, 4.5), tight_layout=True)  # no pyplot: no global state
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, (xs, ys, *style) in series.items():
        ax.plot(xs, ys, label=label, **{"marker": "." if len(xs) < 30 else None, **(style[0] if style else {})})
    if log_y:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(**({"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": 8} if legend_outside else {}))
    fig.savefig(path, dpi=100)
    return True


# --------------------------------------------------------------------------- what a checkpoint may hold
def _integer(low, high=None):
    def check(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high)
    return check, f"an integer >= {low}" + ("" if high is None else f" and <= {high}")


def _finite_number(test, expected):
    def check(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and test(v)
    return check, expected


def _optional(field):
    check, expected = field
    return (lambda v: v is None or check(v)), f"{expected} or null"


def _one_of(*choices):
    return (lambda v: isinstance(v, str) and v in choices), f"one of {', '.join(choices)}"


MAX_SIZE = 1 << 20  # as the command line's size options
FIELDS = {  # every config field a checkpoint may hold, checked as if typed on the command line
    "size": _integer(1, MAX_SIZE),
    "count": _optional(_integer(1)),
    "nonnegative_int": _integer(0),
    "positive_int": _integer(1),
    "minutes": _optional(_finite_number(lambda v: v > 0, "a positive number")),
    "positive": _finite_number(lambda v: v > 0, "a positive number"),
    "nonnegative": _finite_number(lambda v: v >= 0, "a number >= 0"),
    "probability": _finite_number(lambda v: 0 <= v < 1, "a probability in [0, 1)"),
    "fraction": _finite_number(lambda v: 0 < v < 1, "a fraction in (0, 1)"),
    "finite": _finite_number(lambda v: True, "a number"),
    "dtype": _one_of("float32", "float64"),
    "path": ((lambda v: v is None or isinstance(v, str)), "a path or null"),
    "digest": ((lambda v: isinstance(v, str) and len(v) == 64), "a SHA-256 hex digest"),
}


def check_config(config, schema: dict, where: str) -> dict:
    """``config`` if it has every field of ``schema`` ({name: kind of FIELDS, or a check pair}) and each
    is valid; else one DataError naming ``where``, the field, its value and what was expected."""
    if not isinstance(config, dict):
        raise DataError(f"{where} is damaged: its config is a {type(config).__name__}, not a table")
    for name, kind in schema.items():
        if name not in config:
            raise DataError(f"{where} is damaged: its config lacks {name!r}")
        check, expected = FIELDS[kind] if isinstance(kind, str) else kind
        if not check(config[name]):
            raise DataError(f"{where} is damaged: config field {name!r} is {config[name]!r}; expected {expected}")
    return config


def check_weights(weights, where: str, dtype) -> dict:
    """``weights`` if it maps names to finite arrays of ``dtype`` (the model's); else one DataError."""
    if not isinstance(weights, dict):
        raise DataError(f"{where} is damaged: its weights are a {type(weights).__name__}, not a table")
    for name, value in weights.items():
        if not isinstance(value, np.ndarray) or value.dtype != np.dtype(dtype):
            got = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
            raise DataError(f"{where} is damaged: weight {name!r} is {got}; expected an array of {np.dtype(dtype)}")
        if not np.isfinite(value).all():
            raise DataError(f"{where} is damaged: weight {name!r} holds NaN or Inf")
    return weights


GATES = {"rnn": 1, "lstm": 4, "gru": 3}  # weight blocks per recurrent layer (PyTorch's gate_size / H)


def recurrent_parameters(cell: str, input_size: int, hidden_size: int, num_layers: int = 1) -> int:
    """How many parameters ``num_layers`` stacked layers of ``cell`` hold (PyTorch's layout, with biases)."""
    G, H = GATES[cell], hidden_size
    return sum(G * H * ((input_size if layer == 0 else H) + H + 2) for layer in range(num_layers))


def check_memory(parameters: int, activations: int, dtype, what: str) -> None:
    """Refuse, before allocating anything, a model whose estimated memory exceeds this machine's.

    The estimate: 4 copies of the parameters (weights, gradients, two Adam moments) and the
    ``activations`` values one training step keeps, at ``dtype``'s size.  Raises CommandError.
    """
    needed = (4 * parameters + activations) * np.dtype(dtype).itemsize
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # no sysconf: no estimate
        return
    if needed > available:
        raise CommandError(f"{what} would need about {needed / 1e9:,.1f} GB ({parameters:,} parameters); this "
                           f"machine has {available / 1e9:.1f} GB: choose smaller sizes")


def load_checkpoint(path: str | Path, check) -> tuple[dict, Path]:
    """Load ``DIR/checkpoint.safetensors`` (or a checkpoint file) and check its kind with ``check``."""
    path = Path(path)
    file = path / "checkpoint.safetensors" if path.is_dir() else path
    try:
        checkpoint = mg.load(file)
    except FileNotFoundError:
        raise CommandError(f"no checkpoint found at {file}") from None
    except IsADirectoryError:
        raise CommandError(f"{file} is a directory, not a checkpoint") from None
    return check(checkpoint, str(file)), file


class TrainingState:
    """What a run that trains ``self.model`` with ``self.optimizer`` on draws from ``self.rng``, ``self.step``
    steps in, needs to continue exactly: its part of a checkpoint."""

    def state_dict(self) -> dict:
        return {"model": dict(self.model.state_dict()), "optimizer": self.optimizer.state_dict(),
                "rng": self.rng.bit_generator.state, "step": self.step}

    def load_state_dict(self, checkpoint: dict):
        """Restore what :meth:`state_dict` saved (KeyError, TypeError or ValueError if damaged)."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.rng.bit_generator.state = checkpoint["rng"]
        self.step = checkpoint["step"]


def restore(run, checkpoint: dict, out: Path) -> None:
    """``run.load_state_dict(checkpoint)``, a damaged or mismatched checkpoint one CommandError."""
    try:
        run.load_state_dict(checkpoint)
    except (KeyError, TypeError, ValueError) as e:
        raise CommandError(f"the checkpoint in {out} is damaged or does not match its config: {e}") from None


def check_run_checkpoint(checkpoint, where: str, kind: str, version: int, description: str, config_fields: dict,
                         keys=("config", "model", "optimizer", "rng", "step", "elapsed")) -> dict:
    """``checkpoint`` if it is a complete checkpoint of this ``kind`` and ``version`` whose config,
    weights (``model``), step and elapsed time are sound; else one DataError naming ``where``."""
    check_checkpoint_header(checkpoint, where, kind, version, description)
    missing = [k for k in keys if k not in checkpoint]
    if missing:
        raise DataError(f"{where} is damaged: it lacks {', '.join(missing)}")
    config = check_config(checkpoint["config"], config_fields, where)
    if "model" in keys:
        check_weights(checkpoint["model"], where, config["dtype"])
    for what, key, kind_ in (("step", "step", "nonnegative_int"), ("elapsed time", "elapsed", "nonnegative")):
        valid, expected = FIELDS[kind_]
        if key in keys and not valid(checkpoint[key]):
            raise DataError(f"{where} is damaged: its {what} is {checkpoint[key]!r}; expected {expected}")
    return checkpoint


def resumed_config(args, saved: dict, out: Path, defaults: dict, run_options=("steps", "minutes", "eval_every"),
                   count: str = "steps") -> dict:
    """The config of a resumed run: the saved one, with the ``run_options`` given now (how long and
    how often it goes on); any other option given must equal the saved value (CommandError)."""
    _, given = resolve_config(args, defaults, count)
    for key, value in given.items():
        if key not in run_options and value != saved.get(key):
            raise CommandError(f"--{key.replace('_', '-')} cannot change when resuming "
                               f"(the run in {out} has {saved.get(key)})")
    if getattr(args, "out", None) is not None and Path(args.out).resolve() != out.resolve():
        raise CommandError("--out cannot differ from --resume: a resumed run continues in its own folder")
    config = dict(saved)
    config.update((k, given[k]) for k in run_options if k in given)
    if count in given and "minutes" not in given:
        config["minutes"] = None
    if "minutes" in given and count not in given:
        config[count] = None
    return config


def new_or_resumed(args, defaults: dict, check, default_out) -> tuple[dict, Path, dict | None]:
    """(config, output folder, checkpoint) of a run: resumed from ``args.resume`` (a folder or its
    checkpoint file, checked by ``check``), or new from the options, in ``args.out`` or
    ``default_out(config)``; the checkpoint is None for a new run."""
    if args.resume:
        checkpoint, file = load_checkpoint(args.resume, check)
        return resumed_config(args, checkpoint["config"], file.parent, defaults), file.parent, checkpoint
    config, _ = resolve_config(args, defaults)
    return config, Path(args.out or default_out(config)), None


def check_checkpoint_header(checkpoint, where: str, kind: str, version: int, description: str) -> dict:
    """``checkpoint`` if it is a dict of this ``kind`` and ``version`` (as ``minigrad.load`` gave it),
    else a one-line DataError naming ``where`` (the file) and what it holds instead."""
    if not isinstance(checkpoint, dict) or checkpoint.get("kind") != kind:
        raise DataError(f"{where} is not a minigrad-rnn {description} checkpoint")
    if checkpoint.get("version") != version:
        raise DataError(f"{where} has checkpoint version {checkpoint.get('version')!r}; "
                        f"this minigrad-rnn reads version {version}")
    return checkpoint


# --------------------------------------------------------------------------- the loop
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


def progress_bar(total, initial, desc, unit="step"):
    """A tqdm bar on stderr, shown only on a terminal (logs stay clean)."""
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, disable=None,
                file=sys.stderr)


def say(text: str = "") -> None:
    """Print a line to stdout without breaking a progress bar."""
    tqdm.write(text, file=sys.stdout)
    sys.stdout.flush()


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


def resolve_config(args, defaults: dict, count: str = "steps") -> tuple[dict, dict]:
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
        self.steps, self.minutes = steps, minutes
        self.deadline = None if minutes is None else time.monotonic() + 60 * minutes

    def __str__(self) -> str:
        """E.g. "2 minutes" or "20 steps or 2 minutes"."""
        parts = ([] if self.steps is None else [f"{self.steps} steps"]) + (
            [] if self.minutes is None else [f"{self.minutes:g} minutes"])
        return " or ".join(parts) or "no limit"

    def done(self, step: int) -> bool:
        return (self.steps is not None and step >= self.steps) or \
            (self.deadline is not None and time.monotonic() >= self.deadline)


class TrainingLoop:
    """The training loop of every subcommand: budget, Ctrl-C, progress bar, reports, divergence check.

    ``run(train_step, report)`` calls ``train_step()`` (one step, or one epoch, returning its
    mean loss) until the budget is spent, ``until()`` holds after a report (e.g. the task is
    solved), or Ctrl-C is pressed (the step under way finishes,
    so what is saved is consistent; a second Ctrl-C interrupts at once).  Every ``every``
    steps, and once more at the end if steps ran since, it calls ``report(final)``, which
    validates, logs and checkpoints as the task needs; ``window_loss()`` and
    ``window_rate()`` describe the steps since the last report.  A non-finite loss ends the
    run with a CommandError before anything is reported, so no diverged state is saved.

    Before each report the ``parameters`` (Tensors) are checked too: weights that an update made
    NaN or Inf end the run with a CommandError before anything is saved.

    Attributes: ``step`` (steps done in all, resumed ones included), ``elapsed`` (training
    seconds in all, reports excluded) and, after ``run``, ``interrupted``.
    """

    def __init__(self, budget: Budget, every: int, desc: str, *, step: int = 0, elapsed: float = 0.0,
                 total: int | None = None, unit: str = "step", parameters=()):
        self.budget, self.every, self.desc, self.total, self.unit = budget, every, desc, total, unit
        self.parameters = list(parameters)
        self.step, self.elapsed, self.interrupted = step, elapsed, False
        self._stop = None
        self._reset_window()

    def _reset_window(self):
        self.window_steps, self.window_sum, self.window_seconds = 0, 0.0, 0.0

    def window_loss(self) -> float | None:
        """The mean loss of the steps since the last report (None if there were none)."""
        return self.window_sum / self.window_steps if self.window_steps else None

    def window_rate(self, per_step: float = 1.0) -> float | None:
        """``per_step`` units (e.g. characters) per second over the steps since the last report."""
        return self.window_steps * per_step / self.window_seconds if self.window_seconds else None

    def should_stop(self) -> bool:
        """Whether the budget is spent or Ctrl-C was pressed (for a step that can stop part-way)."""
        return self.budget.done(self.step) or (self._stop is not None and self._stop.requested)

    def run(self, train_step, report, after_step=None, postfix=None, until=None) -> bool:
        """Train; returns whether Ctrl-C ended the run.

        ``after_step(step)`` runs after every step (e.g. to show a sample); ``postfix(loss,
        seconds)`` gives the progress bar's figures for a step (default: the loss); ``until()``,
        asked after each report, ends the run early when it returns True.
        """
        last_report = self.step
        with StopOnInterrupt() as self._stop, progress_bar(self.total, self.step, self.desc, self.unit) as bar:
            while not self.should_stop():
                start = time.perf_counter()
                loss = train_step()
                seconds = time.perf_counter() - start
                self.step += 1
                self.elapsed += seconds
                self.window_steps, self.window_sum = self.window_steps + 1, self.window_sum + loss
                self.window_seconds += seconds
                bar.update()
                bar.set_postfix(postfix(loss, seconds) if postfix else {"loss": f"{loss:.4f}"}, refresh=False)
                if not math.isfinite(loss):
                    raise CommandError(f"the loss diverged to {loss} at {self.unit} {self.step}; "
                                       "try a smaller --lr or --clip (the last checkpoint is intact)")
                if after_step is not None:
                    after_step(self.step)
                if self.step % self.every == 0:
                    self._check_weights()
                    report(final=False)
                    self._reset_window()
                    last_report = self.step
                    if until is not None and until():
                        break
            self.interrupted = self._stop.requested
        if self.step != last_report:
            self._check_weights()
            report(final=True)
            self._reset_window()
        self._stop = None
        return self.interrupted

    def _check_weights(self):
        if not all(np.isfinite(p.data).all() for p in self.parameters):
            raise CommandError(f"the weights diverged to NaN or Inf at {self.unit} {self.step}; "
                               "try a smaller --lr or --clip (the last checkpoint is intact)")
