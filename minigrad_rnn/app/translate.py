"""A translation task where attention visibly matters: writing a digit string backwards.

The source is a string of 1 to ``max_len`` random digits, the target the same digits in reverse
order (Sutskever, Vinyals & Le 2014 reversed their sources for the same reason: the first output
depends on the last input).  The task is synthetic and deterministic, generated on the fly, and
its difficulty grows with the length: an encoder-decoder that squeezes the source into one fixed
vector (Cho et al. 2014) loses accuracy on long strings, one with attention (Bahdanau et al. 2015)
looks up each digit it needs, and its alignment matrix is the anti-diagonal.

``minigrad-rnn experiment translate`` trains the model with and without attention and reports
exact-match accuracy on a held-out set against the input length (Bahdanau et al.'s Figure 2) and
the alignments of a few examples (their Figure 3).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import minigrad as mg
from minigrad.functional import cross_entropy
from minigrad.nn.utils import clip_grad_norm_

from ..seq2seq import Seq2Seq
from .errors import CommandError, DataError
from .options import (
    add_common_options, add_run_folder_options, describe_defaults, make_optimizer, positive_float, positive_int, size,
)
from .runs import (
    EXIT_INTERRUPTED, FIELDS, Budget, MetricsFile, TrainingLoop, TrainingState, check_run_checkpoint, duration,
    new_or_resumed, plot_curves, prepare_out_dir, restore, say, write_json,
)

DIGITS, PAD, BOS, EOS = 10, 10, 11, 12
VOCAB = DIGITS + 3
TRANSLATE_DEFAULTS = {"max_len": 30, "hidden_size": 64, "embedding_size": 32, "batch_size": 64, "lr": 3e-3,
                      "minutes": 3.0, "steps": None, "eval_every": 200, "target_accuracy": 0.995,
                      "test_per_length": 30, "beam_width": 1, "seed": 0, "dtype": "float32",
                      "attention": ["additive", "none"]}
# what each config field of a checkpoint must be (runs.FIELDS), as if typed on the command line
CONFIG_FIELDS = {
    "max_len": "size", "hidden_size": "size", "embedding_size": "size", "batch_size": "size", "lr": "positive",
    "minutes": "minutes", "steps": "count", "eval_every": "positive_int", "target_accuracy": "fraction",
    "test_per_length": "positive_int", "beam_width": "positive_int", "seed": "nonnegative_int", "dtype": "dtype",
    "attention": ((lambda v: isinstance(v, list) and v and all(k in ("additive", "general", "none") for k in v)),
                  "a list of additive, general, none"),
}
CHECKPOINT_KIND, CHECKPOINT_VERSION = "minigrad-rnn translate", 1
MAX_LEN = 200  # longer strings make the test set and the decoder's loop needlessly slow
ATTENTION_KINDS = ("additive", "general", "none")  # "dot" needs the decoder as wide as the bidirectional encoder


class ReversalTask:
    """Batches of (source, lengths, decoder input, decoder target), all (time, batch) int ids, padded with PAD."""

    def __init__(self, max_len: int):
        if not 1 <= max_len <= MAX_LEN:
            raise CommandError(f"--max-len must be in [1, {MAX_LEN}]; got {max_len}")
        self.max_len = max_len

    @staticmethod
    def encode(strings: list) -> tuple:
        """``(source (S, B), lengths (B,), target_in (S + 1, B), target_out (S + 1, B))`` for digit arrays."""
        lengths = np.array([len(s) for s in strings])
        S, B = int(lengths.max()), len(strings)
        source = np.full((S, B), PAD)
        target_in, target_out = np.full((S + 1, B), PAD), np.full((S + 1, B), PAD)
        for b, digits in enumerate(strings):
            n = len(digits)
            source[:n, b] = digits
            target_in[0, b], target_in[1:n + 1, b] = BOS, digits[::-1]
            target_out[:n, b], target_out[n, b] = digits[::-1], EOS
        return source, lengths, target_in, target_out

    def batch(self, rng, batch_size: int) -> tuple:
        """``batch_size`` random strings of 1 to max_len digits, as :meth:`encode` gives them."""
        return self.encode([rng.integers(0, DIGITS, n) for n in rng.integers(1, self.max_len + 1, batch_size)])

    def test_set(self, seed: int, per_length: int) -> dict:
        """``{length: digit strings}``, ``per_length`` of each length 1..max_len, from their own generator."""
        rng = np.random.default_rng([seed, 1])
        return {n: [rng.integers(0, DIGITS, n) for _ in range(per_length)] for n in range(1, self.max_len + 1)}


def exact_match(model: Seq2Seq, strings: list, beam_width: int = 1) -> float:
    """The fraction of ``strings`` the model writes backwards exactly (greedy, or beam search if width > 1)."""
    source, lengths, _, _ = ReversalTask.encode(strings)
    max_len = int(lengths.max()) + 5
    if beam_width == 1:
        outputs, _ = model.greedy(source, lengths, BOS, EOS, max_len)
    else:
        outputs = [model.beam_search(source[:n, b:b + 1], int(n), BOS, EOS, max_len, beam_width)[0]
                   for b, n in enumerate(lengths)]
    return float(np.mean([out == list(s[::-1]) for out, s in zip(outputs, strings)]))


class TranslateRun(TrainingState):
    """One model (attention kind, or "none") trained on the reversal task, with its held-out set."""

    def __init__(self, config: dict, attention: str):
        self.config, self.attention = config, attention
        self.task = ReversalTask(config["max_len"])
        self.rng = np.random.default_rng(config["seed"])
        self.model = Seq2Seq(VOCAB, VOCAB, config["embedding_size"], config["hidden_size"],
                             None if attention == "none" else attention, dtype=np.dtype(config["dtype"]),
                             rng=np.random.default_rng(config["seed"]))
        self.optimizer = make_optimizer("adam", self.model.parameters(), config["lr"])
        self.test = self.task.test_set(config["seed"], config["test_per_length"])
        self.step = 0

    def train_step(self) -> float:
        """One Adam update on a fresh batch (teacher forcing, gradient norm clipped to 1); returns its loss."""
        source, lengths, target_in, target_out = self.task.batch(self.rng, self.config["batch_size"])
        loss = cross_entropy(self.model(source, lengths, target_in), target_out, ignore_index=PAD)
        self.optimizer.zero_grad()
        loss.backward()
        clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.step += 1
        return float(loss.item())

    def accuracy(self, beam_width: int = 1) -> dict:
        """Exact match per input length on the held-out set."""
        return {n: exact_match(self.model, strings, beam_width) for n, strings in self.test.items()}


def _mean(by_length: dict) -> float:
    return float(np.mean(list(by_length.values())))


def alignment_figure(path: Path, model: Seq2Seq, strings: list, attention: str = "") -> bool:
    """The attention weights of a few examples as heatmaps, one panel each, with a colour bar
    (Bahdanau et al.'s Figure 3); False without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    source, lengths, _, _ = ReversalTask.encode(strings)
    outputs, weights = model.greedy(source, lengths, BOS, EOS, int(lengths.max()) + 5)
    fig = Figure(figsize=(4 * len(strings) + 1, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(f"Where the {attention + ' ' if attention else ''}attention looks: each output digit's weights "
                 "over the source digits (the anti-diagonal: reversed)")
    axes, image = fig.subplots(1, len(strings), squeeze=False)[0], None
    for k, (ax, digits, out, w) in enumerate(zip(axes, strings, outputs, weights)):
        if w is None:  # the end token came first: nothing to align
            ax.text(0.5, 0.5, "no output", ha="center", va="center", transform=ax.transAxes)
        else:
            image = ax.imshow(w[:, :len(digits)], cmap="gray_r", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(digits)), [str(d) for d in digits], fontsize=7)
        ax.set_yticks(range(len(out)), [str(d) for d in out], fontsize=7)
        ax.set(xlabel="source digit", ylabel="output digit", title=f"({'abc'[k] if k < 3 else k + 1}) {len(digits)} digits")
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.8).set_label("attention weight")
    fig.savefig(path, dpi=100)
    return True


def cmd_translate(args) -> int:
    """Train the reversal task with and without attention; accuracy against length, and alignments.
    The models train one after the other; ``--resume`` continues the one under way, then the rest."""
    config, out, checkpoint = new_or_resumed(args, TRANSLATE_DEFAULTS, _check_checkpoint,
                                             lambda c: f"runs/translate-L{c['max_len']}")
    task = ReversalTask(config["max_len"])
    prepare_out_dir(out, fresh=checkpoint is None)
    write_json(out / "config.json", config)
    say(f"reversal task: digit strings of 1 to {task.max_len} digits; each model trains until "
        f"{config['target_accuracy']:.1%} of the held-out strings come out exactly, or for "
        f"{Budget(config['steps'], config['minutes'])}; output in {out}")
    finished = {} if checkpoint is None else {k: dict(v, by_length=dict(v["by_length"]))
                                              for k, v in checkpoint["results"].items()}
    metrics = MetricsFile(out / "metrics.csv", ["attention", "step", "train_loss", "accuracy", "elapsed_sec"],
                          keep_until_step=None if checkpoint is None else checkpoint["step"], model="attention",
                          finished=set(finished))
    results, curves, interrupted = dict(finished), {}, False
    for attention in config["attention"]:
        if attention in finished:
            by_length = finished[attention]["by_length"]
            curves[f"attention: {attention}"] = (list(by_length), [100 * v for v in by_length.values()])
            continue
        run, accuracy = TranslateRun(config, attention), 0.0
        resumed = checkpoint is not None and checkpoint["current"] == attention
        if resumed:
            restore(run, checkpoint, out)
        loop = TrainingLoop(Budget(config["steps"], config["minutes"]), config["eval_every"], attention, step=run.step,
                            elapsed=float(checkpoint["elapsed"]) if resumed else 0.0, total=config["steps"],
                            parameters=run.model.parameters())

        def report(final: bool):
            """The held-out exact match, a metrics row, a checkpoint and a progress line."""
            nonlocal accuracy
            accuracy = _mean(run.accuracy())
            metrics.append(attention=attention, step=run.step, train_loss=loop.window_loss(), accuracy=accuracy,
                           elapsed_sec=loop.elapsed)
            mg.save({"kind": CHECKPOINT_KIND, "version": CHECKPOINT_VERSION, "config": config, "current": attention,
                     "results": {k: dict(v, by_length=[[n, a] for n, a in v["by_length"].items()])
                                 for k, v in finished.items()},
                     **run.state_dict(), "elapsed": loop.elapsed}, out / "checkpoint.safetensors")
            say(f"{attention:>9} | step {run.step:>5} | train {loop.window_loss():.4f} | held-out exact match "
                f"{accuracy:.2%} | {duration(loop.elapsed)}")

        interrupted = loop.run(run.train_step, report, until=lambda: accuracy >= config["target_accuracy"])
        by_length = run.accuracy(config["beam_width"])
        results[attention] = {"steps": run.step, "seconds": round(loop.elapsed, 1),
                              "exact_match": _mean(by_length), "by_length": by_length}
        curves[f"attention: {attention}"] = (list(by_length), [100 * v for v in by_length.values()])
        say(f"{attention:>9}: {_mean(by_length):.2%} exact match after {run.step} steps "
            f"({duration(loop.elapsed)}){_buckets(by_length, task.max_len)}")
        if attention != "none" and alignment_figure(out / f"alignment-{attention}.png", run.model,
                                                     [run.test[n][0] for n in _examples(task.max_len)], attention):
            say(f"wrote {out / f'alignment-{attention}.png'}")
        if interrupted:
            break
        finished[attention] = results[attention]
    write_json(out / "results.json", results)
    if plot_curves(out / "accuracy.png", curves, "input length (digits)", "held-out exact match (%)",
                   f"writing digit strings backwards ({'greedy' if config['beam_width'] == 1 else 'beam search'})"):
        say(f"wrote {out / 'accuracy.png'}")
    rows = metrics.read()
    plot_curves(out / "loss.png", {f"attention: {a}": ([int(r["step"]) for r in rows if r["attention"] == a],
                                                       [float(r["train_loss"]) for r in rows if r["attention"] == a])
                                   for a in results}, "step", "train loss (nats per digit)", "reversal task training")
    return EXIT_INTERRUPTED if interrupted else 0


def _check_checkpoint(checkpoint, where: str) -> dict:
    """A translate checkpoint whose fields are all sound (else one DataError naming ``where``)."""
    check_run_checkpoint(checkpoint, where, CHECKPOINT_KIND, CHECKPOINT_VERSION, "translate", CONFIG_FIELDS,
                         ("config", "current", "results", "model", "optimizer", "rng", "step", "elapsed"))
    kinds = checkpoint["config"]["attention"]
    results = checkpoint["results"]
    if checkpoint["current"] not in kinds or not isinstance(results, dict) or not set(results) <= set(kinds) \
            or checkpoint["current"] in results:
        raise DataError(f"{where} is damaged: its models {checkpoint['current']!r} and {sorted(results)!r} are not "
                        f"among {kinds}")
    for name, result in results.items():
        fine = isinstance(result, dict) and set(result) == {"steps", "seconds", "exact_match", "by_length"} and all(
            isinstance(pair, list) and len(pair) == 2 and FIELDS["positive_int"][0](pair[0])
            and isinstance(pair[1], float) and 0 <= pair[1] <= 1 for pair in result["by_length"])
        if not fine:
            raise DataError(f"{where} is damaged: the result of {name!r} is malformed")
    return checkpoint


def _buckets(by_length: dict, max_len: int) -> str:
    """The exact match on strings of up to 10 digits and on the 10 longest, where those differ."""
    short, long = min(10, max_len), max(1, max_len - 9)
    if max_len <= 10:
        return ""
    parts = [(1, short), (long, max_len)]
    return "; " + ", ".join(f"lengths {a}-{b}: {_mean({n: v for n, v in by_length.items() if a <= n <= b}):.1%}"
                            for a, b in parts)


def _examples(max_len: int) -> list:
    return sorted({max(1, max_len // 3), max(1, (2 * max_len) // 3), max_len})


def attention_list(text: str) -> list:
    """``--attention additive,none``: a comma-separated list of kinds."""
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    if not kinds or any(k not in ATTENTION_KINDS for k in kinds):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(ATTENTION_KINDS)}; "
                                         f"got {text!r}")
    return kinds


def add_command(tasks) -> None:
    """Register ``experiment translate`` on the experiment's subparsers (a task module of its own)."""
    p = tasks.add_parser("translate", help="an encoder-decoder writes digit strings backwards, with and without "
                                           "attention (Bahdanau et al. 2015)")
    add_common_options(p, cell=False)
    p.add_argument("--max-len", type=size, help="the longest digit string")
    p.add_argument("--embedding-size", type=size, help="token embedding size")
    p.add_argument("--attention", type=attention_list,
                   help=f"the models to train, a comma-separated list of {', '.join(ATTENTION_KINDS)}")
    p.add_argument("--beam-width", type=positive_int, help="beam search for the final test (1: greedy)")
    p.add_argument("--steps", type=positive_int, help="training steps per model; without it, until --minutes end")
    p.add_argument("--minutes", type=positive_float, help="training time per model")
    p.add_argument("--eval-every", type=positive_int, help="test every N steps")
    add_run_folder_options(p, "without it: runs/translate-LN", "from the model under way, then the rest")
    describe_defaults(p, TRANSLATE_DEFAULTS)
    p.set_defaults(handler=cmd_translate)
