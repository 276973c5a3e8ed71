"""Every subcommand's --help states the defaults the command uses, read from the same tables."""
import argparse
import re

import pytest

from minigrad_rnn.app import charlm, experiments, tagger, translate
from minigrad_rnn.app.cli import build_parser
from minigrad_rnn.app.options import show_default


def _subcommands(parser, path=()):
    """(path, parser) of every subcommand, nested ones included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subcommands(sub, path + (name,))
    if path:
        yield path, parser


def _help_defaults(parser) -> dict:
    """{option dest: (default, alternative)} as the formatted --help shows them, option by option."""
    entries, lines = [], parser.format_help().splitlines()
    for line in lines[next(k for k, line in enumerate(lines) if line == "options:") + 1:]:
        if line.startswith("  -"):
            entries.append(line)
        elif entries and line.startswith("   "):
            entries[-1] += " " + line.strip()
    flags = {flag: a.dest for a in parser._actions for flag in a.option_strings}
    shown = {}
    for entry in entries:
        match = re.search(r"\(default ([^;)]*)(?:; ([^)]*))?\)$", " ".join(entry.split()))
        if match:
            shown[flags[entry.split()[0].rstrip(",")]] = match.groups()
    return shown


SUBCOMMANDS = dict(_subcommands(build_parser()))
# the tables each command resolves its config from (what the code uses), and the alternative of train
USES = {("train",): (charlm.BUILTIN_DEFAULTS, charlm.TRAIN_DEFAULTS), ("experiment", "adding"):
        (experiments.EXPERIMENT_DEFAULTS, None), ("experiment", "copy"): (experiments.EXPERIMENT_DEFAULTS, None),
        ("experiment", "translate"): (translate.TRANSLATE_DEFAULTS, None),
        ("gradflow",): (experiments.GRADFLOW_DEFAULTS, None), ("tag", "train"): (tagger.TAG_DEFAULTS, None)}


@pytest.mark.parametrize("path", sorted(SUBCOMMANDS), ids=" ".join)
def test_every_default_in_the_help_is_the_one_the_command_uses(path):
    parser = SUBCOMMANDS[path]
    table, alternative = USES.get(path, ({}, None))
    shown = _help_defaults(parser)
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        value = table.get(action.dest, action.default)
        if value is None:
            assert action.dest not in shown, (path, action.dest, shown.get(action.dest))
            assert "default" not in (action.help or ""), (path, action.dest, action.help)
            continue
        assert action.dest in shown, (path, action.dest, parser.format_help())
        assert shown[action.dest][0] == show_default(value), (path, action.dest)
        if alternative is not None and alternative.get(action.dest, value) != value:
            assert shown[action.dest][1] == f"{show_default(alternative[action.dest])} with --data", (path, action.dest)
    # and the help lists no option the command does not read: `experiment adding` showed translate's
    if table:
        assert {a.dest for a in parser._actions} - {"help", "out", "resume", "data"} <= set(table), path


def test_experiment_tasks_take_only_their_own_options(capsys):
    from minigrad_rnn.app.cli import main
    assert main(["experiment", "adding", "--max-len", "5"]) == 2
    assert "unrecognized arguments: --max-len 5" in capsys.readouterr().err
    assert main(["experiment", "translate", "--cell", "gru"]) == 2
    assert "unrecognized arguments: --cell gru" in capsys.readouterr().err
