"""The ``minigrad-rnn`` command.

    minigrad-rnn train [--data FILE] [--cell lstm] [--minutes 2] ...   train a character language model
    minigrad-rnn sample --checkpoint DIR [--prime TEXT] ...             stream text from one
    minigrad-rnn inspect --checkpoint DIR --text FILE                   units that track quotes, brackets, ...
    minigrad-rnn tag train|eval|predict ...                             part-of-speech tagging
    minigrad-rnn experiment adding|copy [--cell lstm] [--seq-len T]     long-range memory tasks
    minigrad-rnn gradflow [--task adding] [--seq-len 200]               |dL/dh_t| against t, per cell

Every problem the user can fix (bad data, bad options, a damaged checkpoint,
an unwritable folder) ends with one line "minigrad-rnn: error: ..." on
stderr and a non-zero exit status, never a traceback; checkpoints are written
atomically, so an earlier one is never damaged.

This file is the parser and the entry point; each task module (``charlm``, ``tagger``,
``experiments``, ``inspection``) registers its own subcommands, and ``runs`` holds what their runs share.
"""
from __future__ import annotations

import os
import sys

import numpy as np
from threadpoolctl import threadpool_limits

import minigrad as mg
from minigrad.serialization import CheckpointError

from . import charlm, experiments, inspection, tagger
from .errors import CommandError, DataError, UsageError
from .options import Parser
from .runs import release_locks
from .runs import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, PROG


def build_parser() -> Parser:
    """The argument parser of every subcommand (defaults are None: the command resolves them)."""
    parser = Parser(prog=PROG, description="Recurrent networks on minigrad: char-rnn, tagging, memory tasks.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {mg.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for task in (charlm, inspection, tagger, experiments):
        task.add_commands(commands)
    return parser


def main(argv=None) -> int:
    """Run ``minigrad-rnn`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        mg.retain_freed_memory()  # reuse each step's memory instead of faulting it in again
        # NumPy's overflow warnings would print before the one line that the divergence checks
        # (loss and weights, every step) end a diverging run with.
        with threadpool_limits(limits=_blas_threads(), user_api="blas"), \
                np.errstate(over="ignore", invalid="ignore", divide="ignore"):
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
    finally:
        release_locks()


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
