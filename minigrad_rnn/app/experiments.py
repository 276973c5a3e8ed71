"""Long-range memory tasks: why LSTMs exist.

* The adding problem (Hochreiter & Schmidhuber 1997), in the form of Arjovsky,
  Shah & Bengio (2016): each of T steps gives a pair (value ~ U[0, 1], marker);
  two markers are 1, one in each half of the sequence, and the target is the
  sum of the two marked values.  Always guessing 1 gives MSE 1/6 = 0.167.
* The copy-memory task (Arjovsky et al. 2016): 10 symbols from 8 categories,
  T - 1 blanks, a delimiter and 10 more blanks; the model must output blanks
  for T + 10 steps, then the 10 symbols.  Guessing blanks and then uniformly
  among the 8 symbols gives cross-entropy 10 log 8 / (T + 20).
* Gradient flow: the norm of dL/dh_t against t, for the hidden states the
  layer actually fed forward (kept with ``retain_grad``), before and after
  training each cell until it solves the task, shows the plain RNN's vanishing
  gradients (Bengio et al. 1994) that the LSTM and GRU avoid; the LSTM's
  dL/dc_t shows how: its cell state carries the gradient back (Hochreiter &
  Schmidhuber 1997's constant error carousel).

The ``minigrad-rnn experiment`` and ``gradflow`` subcommands at the end of this file drive these.
"""
from __future__ import annotations

import csv
import math

import numpy as np

import minigrad as mg
from minigrad import nn
from minigrad.functional import cross_entropy, mse_loss
from minigrad.nn.utils import clip_grad_norm_

from . import translate
from .errors import CommandError, DataError
from .options import (
    CELLS, OPTIMIZERS, add_common_options, add_run_folder_options, cell_list, describe_defaults, finite_float, make_optimizer,
    nonnegative_float, nonnegative_int, positive_float, positive_int, size,
)
from .runs import (
    EXIT_INTERRUPTED, GATES, Budget, MetricsFile, TrainingLoop, TrainingState, check_memory, check_run_checkpoint,
    duration, new_or_resumed, plot_curves, prepare_out_dir, recurrent_parameters, restore, say, write_json,
)

# Defaults of `experiment`: the LSTM solves the adding problem at T = 100 in about 3 minutes here.
EXPERIMENT_DEFAULTS = {
    "cell": "lstm", "seq_len": 100, "hidden_size": 128, "batch_size": 50, "lr": 3e-3, "optimizer": "adam",
    "clip": 1.0, "steps": None, "minutes": 10.0, "eval_every": 100, "test_size": 1000, "seed": 0,
    "dtype": "float32", "forget_bias": 1.0,
}

# what each config field of a checkpoint must be (runs.FIELDS), as if typed on the command line
EXPERIMENT_FIELDS = {
    "task": ((lambda v: v in ("adding", "copy")), "adding or copy"),
    "cell": ((lambda v: v in CELLS), f"one of {', '.join(sorted(CELLS))}"), "seq_len": "size", "hidden_size": "size",
    "batch_size": "size", "lr": "positive", "optimizer": ((lambda v: v in OPTIMIZERS), "one of "
                                                          + ", ".join(sorted(OPTIMIZERS))),
    "clip": "nonnegative", "steps": "count", "minutes": "minutes", "eval_every": "positive_int",
    "test_size": "size", "seed": "nonnegative_int", "dtype": "dtype", "forget_bias": "finite",
}
EXPERIMENT_KIND, EXPERIMENT_VERSION = "minigrad-rnn experiment", 1
GRADFLOW_FIELDS = {
    "task": EXPERIMENT_FIELDS["task"], "cells": ((lambda v: isinstance(v, list) and v and all(c in CELLS for c in v)),
                                                 "a list of " + ", ".join(sorted(CELLS))),
    "seq_len": "size", "hidden_size": "size", "batch_size": "size", "lr": "positive", "steps": "count",
    "minutes": "minutes", "eval_every": "positive_int", "solved_below": "positive", "test_size": "size",
    "seed": "nonnegative_int", "dtype": "dtype", "forget_bias": "finite",
}
GRADFLOW_KIND, GRADFLOW_VERSION = "minigrad-rnn gradflow", 1

# float64: a vanishing gradient underflows float32 to exactly zero.  Each cell trains until it solves the
# task (test loss below `solved_below` x the baseline) or its `minutes` end: the LSTM solves the adding
# problem at T = 100 in about a minute here, the tanh RNN never does, so the default run takes about 5.
GRADFLOW_DEFAULTS = {"task": "adding", "cells": ["rnn", "lstm", "gru"], "seq_len": 100, "hidden_size": 64,
                     "batch_size": 50, "lr": 3e-3,
                     "steps": None, "minutes": 2.0, "eval_every": 100, "solved_below": 0.05, "test_size": 500,
                     "seed": 0, "dtype": "float64", "forget_bias": 1.0}

COPY_SYMBOLS, COPY_LENGTH = 8, 10  # categories 1..8 to remember, 10 of them
BLANK, DELIMITER = 0, 9


class AddingProblem:
    """Batches of the adding problem: inputs (T, B, 2), targets (B, 1)."""

    name = "adding"
    min_seq_len = 2
    input_size, output_size = 2, 1
    baseline = 1 / 6  # MSE of always answering 1: Var(u1 + u2) = 2/12
    baseline_strategy = "always answering 1"
    metric = "MSE"

    def __init__(self, seq_len: int):
        if seq_len < self.min_seq_len:
            raise ValueError(f"the adding problem needs seq_len >= 2, got {seq_len}")
        self.seq_len = seq_len

    def batch(self, rng, batch_size: int, dtype=np.float32):
        """x (T, B, 2): a value in [0, 1) and a 0/1 marker per step, one marker in each half;
        y (B, 1): the sum of the two marked values (Hochreiter & Schmidhuber 1997, experiment 4)."""
        T, half = self.seq_len, self.seq_len // 2
        values = rng.random((T, batch_size))
        first = rng.integers(0, half, batch_size)
        second = rng.integers(half, T, batch_size)
        markers = np.zeros((T, batch_size))
        markers[first, np.arange(batch_size)] = 1
        markers[second, np.arange(batch_size)] = 1
        x = np.stack([values, markers], axis=-1).astype(dtype)
        y = (values * markers).sum(axis=0)[:, None].astype(dtype)
        return x, y

    def loss(self, outputs, targets):
        """MSE of the prediction made after the last step."""
        return mse_loss(outputs[-1], targets)


class CopyMemory:
    """Batches of the copy-memory task: one-hot inputs (T + 20, B, 10), target ids (T + 20, B)."""

    name = "copy"
    min_seq_len = 1
    input_size = output_size = COPY_SYMBOLS + 2
    metric = "cross-entropy"
    baseline_strategy = "blanks, then uniform guesses"

    def __init__(self, seq_len: int):
        if seq_len < self.min_seq_len:
            raise ValueError(f"the copy task needs seq_len >= 1, got {seq_len}")
        self.seq_len = seq_len
        self.baseline = COPY_LENGTH * math.log(COPY_SYMBOLS) / (seq_len + 2 * COPY_LENGTH)

    def batch(self, rng, batch_size: int, dtype=np.float32):
        """x (T + 20, B, 10) one-hot: 10 symbols from 1..8, blanks, the delimiter at step T + 9;
        targets (T + 20, B) int ids: blanks, then the 10 symbols over the last 10 steps
        (the copying memory problem of Arjovsky et al. 2016)."""
        T, n = self.seq_len, COPY_LENGTH
        symbols = rng.integers(1, COPY_SYMBOLS + 1, (n, batch_size))
        ids = np.full((T + 2 * n, batch_size), BLANK)
        ids[:n] = symbols
        ids[n + T - 1] = DELIMITER
        targets = np.full((T + 2 * n, batch_size), BLANK)
        targets[T + n:] = symbols
        return np.eye(self.input_size, dtype=dtype)[ids], targets

    def loss(self, outputs, targets):
        """Mean cross-entropy over every step (in nats)."""
        return cross_entropy(outputs, targets)


TASKS = {"adding": AddingProblem, "copy": CopyMemory}


class SequenceModel(nn.Module):
    """One RNN/LSTM/GRU layer and a linear read-out at every step: (T, B, in) -> (T, B, out).

    ``forget_bias`` (LSTM only) starts the forget gates' bias there instead of
    PyTorch's small random values: 1 is Keras's default (Gers et al. 2000;
    Jozefowicz et al. 2015), so the cell starts out remembering.
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int, output_size: int, dtype=np.float32, rng=None,
                 forget_bias: float | None = None):
        super().__init__()
        self.rnn = CELLS[cell](input_size, hidden_size, dtype=dtype, rng=rng)
        self.head = nn.Linear(hidden_size, output_size, dtype=dtype, rng=rng)
        if cell == "lstm" and forget_bias is not None:
            forget = slice(hidden_size, 2 * hidden_size)  # gate order i, f, g, o
            with mg.no_grad():
                self.rnn.bias_ih_l0[forget] = forget_bias
                self.rnn.bias_hh_l0[forget] = 0.0

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out)


class TaskRun(TrainingState):
    """Training one cell on a task, with a fixed test set drawn from its own seed.

    ``config``: task, cell, seq_len, hidden_size, batch_size, lr, optimizer,
    clip, seed, test_size, dtype and optionally forget_bias (see SequenceModel).
    """

    def __init__(self, config: dict):
        self.config = config
        self.task = TASKS[config["task"]](config["seq_len"])
        self.dtype = np.dtype(config["dtype"])
        self.rng = np.random.default_rng(config["seed"])
        self.model = SequenceModel(config["cell"], self.task.input_size, config["hidden_size"],
                                   self.task.output_size, self.dtype, self.rng, config.get("forget_bias"))
        self.optimizer = make_optimizer(config["optimizer"], self.model.parameters(), config["lr"])
        test_rng = np.random.default_rng([config["seed"], 1])
        sizes = [min(500, config["test_size"] - s) for s in range(0, config["test_size"], 500)]
        self.test_batches = [self.task.batch(test_rng, n, self.dtype) for n in sizes]
        self.step = 0

    def train_step(self) -> float:
        """One update on a fresh batch; returns its loss."""
        x, y = self.task.batch(self.rng, self.config["batch_size"], self.dtype)
        loss = self.task.loss(self.model(x), y)
        self.optimizer.zero_grad()
        loss.backward()
        if self.config["clip"] > 0:
            clip_grad_norm_(self.model.parameters(), self.config["clip"])
        self.optimizer.step()
        self.step += 1
        return float(loss.item())

    def state_dict(self) -> dict:
        """Everything needed to continue exactly (model, optimizer, generator, step), for ``minigrad.save``."""
        return {"kind": EXPERIMENT_KIND, "version": EXPERIMENT_VERSION, "config": dict(self.config),
                **super().state_dict()}

    def test_loss(self) -> float:
        """The task's loss on the fixed test set."""
        total, count = 0.0, 0
        with mg.no_grad():
            for x, y in self.test_batches:
                total += float(self.task.loss(self.model(x), y).item()) * x.shape[1]
                count += x.shape[1]
        return total / count


def hidden_state_gradients(model: SequenceModel, task, x, y) -> dict:
    """``{"h": |dL/dh_t|}`` for t = 0 (the initial state) .. T, for one batch; an LSTM also gives
    ``"c"``: |dL/dc_t|, the cotangent of its cell state (the "constant error carousel").

    The layer returns the states its recurrence produced (``return_states``); ``retain_grad`` on
    them keeps the total derivative of the loss with respect to each state, through the read-out
    and through the later steps.
    """
    rnn, B = model.rnn, x.shape[1]
    lstm = isinstance(rnn, CELLS["lstm"])
    h0, c0 = (mg.Tensor(np.zeros((1, B, rnn.hidden_size), dtype=x.dtype), requires_grad=True) for _ in range(2))
    out, _, (states,) = rnn(x, (h0, c0) if lstm else h0, return_states=True)
    series = {"h": [h0, *(state[0] if lstm else state for state in states)]}
    if lstm:
        series["c"] = [c0, *(state[1] for state in states)]
    for tensors in series.values():
        for t in tensors:
            t.retain_grad()
    task.loss(model.head(out), y).backward()
    return {name: np.array([np.linalg.norm(np.asarray(t.grad)) if t.grad is not None else 0.0 for t in tensors])
            for name, tensors in series.items()}


def gradient_flow(config: dict, resume: dict | None = None, metrics: MetricsFile | None = None, save=None) -> dict:
    """State gradients of ``config["cell"]`` at initialization and after training on ``config["task"]``.

    Training runs until the test loss is below ``solved_below`` x the task's baseline, or the budget
    (``steps``, ``minutes``) ends, or Ctrl-C.  Returns ``{"initialization": norms, "trained": norms,
    "training": {steps, seconds, test_loss, baseline, solved}}``, each ``norms`` as
    :func:`hidden_state_gradients` gives them; after Ctrl-C only ``{"initialization": ...,
    "interrupted": True}``.  At every report a row goes to ``metrics`` and ``save(state)`` gets what
    ``resume`` takes to continue: the training run's state, the initialization's norms, the seconds.
    """
    run = TaskRun({**config, "optimizer": "adam", "clip": 1.0})
    x, y = run.task.batch(np.random.default_rng([config["seed"], 2]), 100, run.dtype)
    if resume is None:
        result = {"initialization": hidden_state_gradients(run.model, run.task, x, y)}
    else:
        run.load_state_dict(resume)
        result = {"initialization": dict(resume["initialization"])}
    test = run.test_loss()
    loop = TrainingLoop(Budget(config["steps"], config["minutes"]), config["eval_every"], config["cell"],
                        step=run.step, elapsed=0.0 if resume is None else float(resume["elapsed"]),
                        total=config["steps"], parameters=run.model.parameters())

    def solved() -> bool:
        return test < config["solved_below"] * run.task.baseline

    def report(final: bool):
        nonlocal test
        test = run.test_loss()
        if metrics is not None:
            metrics.append(cell=config["cell"], step=run.step, train_loss=loop.window_loss(), test_loss=test,
                           elapsed_sec=loop.elapsed)
        if save is not None:
            save({**run.state_dict(), "initialization": result["initialization"], "elapsed": loop.elapsed})

    if not solved() and loop.run(run.train_step, report, until=solved):
        return {**result, "interrupted": True}
    run.model.zero_grad()
    result["trained"] = hidden_state_gradients(run.model, run.task, x, y)
    result["training"] = {"steps": run.step, "seconds": round(loop.elapsed, 1), "test_loss": test,
                          "baseline": run.task.baseline, "solved": solved()}
    return result

# --------------------------------------------------------------------------- the subcommands
def cmd_experiment(args) -> int:
    """Train one cell on the adding or copy task and compare its test loss with the baseline
    (the translate task is a module of its own: :func:`translate.cmd_translate`); ``--resume`` continues one."""
    config, out, checkpoint = new_or_resumed(args, EXPERIMENT_DEFAULTS, _check_experiment_checkpoint,
                                             lambda c: f"runs/{args.task}-{c['cell']}-T{c['seq_len']}")
    if checkpoint is None:
        config["task"] = args.task
    elif config["task"] != args.task:
        raise CommandError(f"the run in {out} is of the {config['task']} task, not of {args.task}")
    _check_seq_len(args.task, config["seq_len"])
    task_class, H = TASKS[args.task], config["hidden_size"]
    check_memory(recurrent_parameters(config["cell"], task_class.input_size, H) + (H + 1) * task_class.output_size,
                 config["batch_size"] * config["seq_len"] * 3 * (GATES[config["cell"]] + 2) * H, config["dtype"],
                 f"the {config['cell'].upper()} of hidden size {H}")
    run = TaskRun(config)
    if checkpoint is not None:
        restore(run, checkpoint, out)
    prepare_out_dir(out, fresh=checkpoint is None)
    task = run.task
    write_json(out / "config.json", config)
    say(f"{'resuming' if checkpoint else 'training'}: {task.name} task, T = {config['seq_len']}, "
        f"{config['cell'].upper()} with {config['hidden_size']} hidden units; baseline {task.metric} "
        f"{task.baseline:.4f}; output in {out}")
    metrics = MetricsFile(out / "metrics.csv", ["step", "train_loss", "test_loss", "baseline", "elapsed_sec"],
                          keep_until_step=None if checkpoint is None else run.step)
    loop = TrainingLoop(Budget(config["steps"], config["minutes"]), config["eval_every"], task.name, step=run.step,
                        elapsed=0.0 if checkpoint is None else float(checkpoint["elapsed"]), total=config["steps"],
                        parameters=run.model.parameters())
    test = run.test_loss()
    if checkpoint is None:
        metrics.append(step=0, train_loss=None, test_loss=test, baseline=task.baseline, elapsed_sec=0.0)

    def report(final: bool):
        """The test loss, a metrics row and (except at the end) a progress line."""
        nonlocal test
        test, train = run.test_loss(), loop.window_loss()
        metrics.append(step=run.step, train_loss=train, test_loss=test, baseline=task.baseline,
                       elapsed_sec=loop.elapsed)
        mg.save({**run.state_dict(), "elapsed": loop.elapsed}, out / "checkpoint.safetensors")
        if not final:
            say(f"step {run.step:>6} | train {train:.4f} | test {test:.4f} "
                f"(baseline {task.baseline:.4f}) | {duration(loop.elapsed)}")

    interrupted = loop.run(run.train_step, report)
    rows = metrics.read()
    plot_curves(out / "loss.png", {
        f"{config['cell']} test": ([int(r["step"]) for r in rows], [float(r["test_loss"]) for r in rows]),
        "baseline": ([int(rows[0]["step"]), int(rows[-1]["step"])], [task.baseline] * 2),
    }, "step", f"test {task.metric}", f"{task.name} task, T = {config['seq_len']}", log_y=True)
    say(f"{config['cell'].upper()} on the {task.name} task (T = {config['seq_len']}) after {run.step} steps "
        f"({duration(loop.elapsed)}): test {task.metric} {test:.4f} = {test / task.baseline:.3f} x the baseline "
        f"{task.baseline:.4f} of {task.baseline_strategy}")
    write_json(out / "results.json", {"task": task.name, "cell": config["cell"], "seq_len": config["seq_len"],
                                      "steps": run.step, "train_seconds": round(loop.elapsed, 1), "test_loss": test,
                                      "baseline": task.baseline})
    return EXIT_INTERRUPTED if interrupted else 0


def _check_seq_len(task: str, seq_len: int):
    shortest = TASKS[task].min_seq_len
    if seq_len < shortest:
        raise CommandError(f"the {task} task needs --seq-len >= {shortest}, got {seq_len}")


def _check_experiment_checkpoint(checkpoint, where: str) -> dict:
    return check_run_checkpoint(checkpoint, where, EXPERIMENT_KIND, EXPERIMENT_VERSION, "experiment",
                                EXPERIMENT_FIELDS)


def cmd_gradflow(args) -> int:
    """|dL/dh_t| (and the LSTM's |dL/dc_t|) against t for each cell, at initialization and after training
    until it solves the task or its budget ends.  The cells train one after the other; ``--resume``
    continues the one under way, then the rest."""
    config, out, checkpoint = new_or_resumed(args, GRADFLOW_DEFAULTS, _check_gradflow_checkpoint,
                                             lambda c: f"runs/gradflow-{c['task']}-T{c['seq_len']}")
    _check_seq_len(config["task"], config["seq_len"])
    prepare_out_dir(out, fresh=checkpoint is None)
    write_json(out / "config.json", config)
    task, budget = TASKS[config["task"]](config["seq_len"]), Budget(config["steps"], config["minutes"])
    say(f"gradient of the loss with respect to each state, {task.name} task, T = {config['seq_len']}; each cell "
        f"trains until its test {task.metric} is below {config['solved_below']:g} x the baseline "
        f"{task.baseline:.4f}, or for {budget}")
    flows = {} if checkpoint is None else {cell: _flow_arrays(flow) for cell, flow in checkpoint["flows"].items()}
    metrics = MetricsFile(out / "metrics.csv", ["cell", "step", "train_loss", "test_loss", "elapsed_sec"],
                          keep_until_step=None if checkpoint is None else checkpoint["step"], model="cell",
                          finished=set(flows))
    rows, series, results, interrupted = [], {}, {}, False
    colors = {"rnn": "tab:red", "lstm": "tab:blue", "gru": "tab:green"}
    for cell in config["cells"]:
        def save(state, cell=cell):
            mg.save({**state, "kind": GRADFLOW_KIND, "version": GRADFLOW_VERSION, "config": config, "current": cell,
                     "flows": {c: _flow_lists(f) for c, f in flows.items()}}, out / "checkpoint.safetensors")

        if cell not in flows:
            resume = checkpoint if checkpoint is not None and checkpoint["current"] == cell else None
            try:
                flow = gradient_flow(dict(config, cell=cell), resume, metrics, save)
            except (KeyError, TypeError, ValueError) as e:  # a resumed state that does not fit its config
                raise CommandError(f"the checkpoint in {out} is damaged or does not match its config: {e}") from None
        else:
            flow = flows[cell]
        results[cell] = {"training": flow.get("training"), "ratios": {}}
        if flow.get("training"):
            t = flow["training"]
            verdict = "solved" if t["solved"] else f"not solved within {budget}"
            say(f"{cell.upper():>4} trained {t['steps']:,} steps ({duration(t['seconds'])}): {verdict}, test "
                f"{task.metric} {t['test_loss']:.4f} = {t['test_loss'] / task.baseline:.3f} x the baseline")
        for phase in ("initialization", "trained"):
            for state, values in flow.get(phase, {}).items():
                rows += [(cell, phase, state, t, v) for t, v in enumerate(values)]
                ratio = values[0] / values[-1] if values[-1] > 0 else float("nan")
                results[cell]["ratios"][f"{state} {phase}"] = ratio
                style = {"color": colors[cell], "linewidth": 1 if phase == "initialization" else 2,
                         "linestyle": ":" if state == "c" else "--" if phase == "initialization" else "-"}
                series[f"{cell} |dL/d{state}_t| ({phase})"] = (
                    np.arange(len(values)), np.where(values > 0, values, np.nan), style)
                say(f"{cell.upper():>4} {phase:<14} |dL/d{state}_0| / |dL/d{state}_T| = {ratio:.3g} "
                    f"(|dL/d{state}_0| = {values[0]:.3g}, |dL/d{state}_T| = {values[-1]:.3g})")
        if flow.get("interrupted"):
            interrupted = True
            break
        flows[cell] = flow
    with (out / "gradflow.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["cell", "phase", "state", "t", "grad_norm"])
        writer.writerows((c, p, s, t, f"{v:.6g}") for c, p, s, t, v in rows)
    write_json(out / "results.json", results)
    plotted = plot_curves(out / "gradflow.png", series, "time step t", "gradient norm",
                          f"gradient flow, {task.name} task, T = {config['seq_len']}", log_y=True, legend_outside=True)
    trained = metrics.read()
    plot_curves(out / "loss.png", {cell: ([int(r["step"]) for r in trained if r["cell"] == cell],
                                          [float(r["test_loss"]) for r in trained if r["cell"] == cell])
                                   for cell in results}, "step", f"test {task.metric}",
                f"{task.name} task, T = {config['seq_len']}", log_y=True)
    say(f"wrote {out / 'gradflow.csv'}, {out / 'results.json'}" + (f" and {out / 'gradflow.png'}" if plotted else ""))
    return EXIT_INTERRUPTED if interrupted else 0


def _flow_lists(flow: dict) -> dict:
    """A finished cell's result for a checkpoint (its norms as arrays, its training as numbers)."""
    return {"initialization": dict(flow["initialization"]), "trained": dict(flow["trained"]),
            "training": dict(flow["training"])}


def _flow_arrays(flow: dict) -> dict:
    return {phase: dict(flow[phase]) for phase in ("initialization", "trained", "training")}


def _check_gradflow_checkpoint(checkpoint, where: str) -> dict:
    """A gradflow checkpoint whose fields are all sound (else one DataError naming ``where``)."""
    check_run_checkpoint(checkpoint, where, GRADFLOW_KIND, GRADFLOW_VERSION, "gradflow", GRADFLOW_FIELDS,
                         ("config", "current", "flows", "initialization", "model", "optimizer", "rng", "step",
                          "elapsed"))
    cells, flows = checkpoint["config"]["cells"], checkpoint["flows"]
    if checkpoint["current"] not in cells or not isinstance(flows, dict) or not set(flows) <= set(cells) \
            or checkpoint["current"] in flows:
        raise DataError(f"{where} is damaged: its cells {checkpoint['current']!r} and {sorted(flows)!r} are not "
                        f"among {cells}")
    for norms in [checkpoint["initialization"]] + [f.get(p) for f in flows.values() if isinstance(f, dict)
                                                  for p in ("initialization", "trained")]:
        if not isinstance(norms, dict) or not norms or not all(
                k in ("h", "c") and isinstance(v, np.ndarray) and v.ndim == 1 and np.isfinite(v).all()
                for k, v in norms.items()):
            raise DataError(f"{where} is damaged: a cell's gradient norms are malformed")
    for flow in flows.values():
        if not isinstance(flow.get("training"), dict):
            raise DataError(f"{where} is damaged: a finished cell lacks its training")
    return checkpoint


def add_commands(commands) -> None:
    """Register ``experiment adding``, ``experiment copy``, ``experiment translate`` and ``gradflow``."""
    p = commands.add_parser("experiment", help="the adding or copy-memory task, or translate (attention)")
    tasks = p.add_subparsers(dest="task", required=True, metavar="TASK")
    for name, task in sorted(TASKS.items()):
        sp = tasks.add_parser(name, help=f"the {name} problem (baseline: {task.baseline_strategy})")
        add_common_options(sp)
        sp.add_argument("--seq-len", type=size, help="T: the distance to remember")
        sp.add_argument("--optimizer", choices=sorted(OPTIMIZERS), help="the optimizer")
        sp.add_argument("--clip", type=nonnegative_float, help="clip the global gradient norm (0: off)")
        sp.add_argument("--steps", type=positive_int, help="training steps; without it, until --minutes end")
        sp.add_argument("--minutes", type=positive_float, help="training time")
        sp.add_argument("--eval-every", type=positive_int, help="test every N steps")
        sp.add_argument("--test-size", type=size, help="test sequences")
        sp.add_argument("--forget-bias", type=finite_float, help="initial LSTM forget-gate bias (1 as Keras)")
        add_run_folder_options(sp, f"without it: runs/{name}-CELL-TT")
        describe_defaults(sp, EXPERIMENT_DEFAULTS)
        sp.set_defaults(handler=cmd_experiment)
    translate.add_command(tasks)

    p = commands.add_parser("gradflow", help="|dL/dh_t| (and the LSTM's |dL/dc_t|) against t, before and after training")
    p.add_argument("--task", choices=sorted(TASKS), help="the task")
    p.add_argument("--cells", type=cell_list, help="comma-separated cells")
    add_common_options(p, cell=False)
    p.add_argument("--seq-len", type=size, help="T")
    p.add_argument("--steps", type=nonnegative_int, help="at most this many training steps per cell")
    p.add_argument("--minutes", type=positive_float, help="at most this much training per cell")
    p.add_argument("--forget-bias", type=finite_float, help="initial LSTM forget-gate bias (1 as Keras)")
    add_run_folder_options(p, "without it: runs/gradflow-TASK-TT", "from the cell under way, then the rest")
    describe_defaults(p, GRADFLOW_DEFAULTS)
    p.set_defaults(handler=cmd_gradflow)
