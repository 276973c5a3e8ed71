"""The ``minigrad-rnn`` command, apart from the library it drives.

``cli`` (the parser and entry point), ``runs`` (output folders, checkpoints, the budget and
the one training loop), ``options`` (option types), ``errors``; the data: ``corpus`` (text
for the language model), ``conllu`` (part-of-speech sentences), ``vocab`` (strings <-> ids);
and one module per task, each registering its subcommands: ``charlm`` (``train``,
``sample``), ``tagger`` (``tag``), ``experiments`` (``experiment``, ``gradflow``).
"""

import sys

APP_PACKAGES = ("tqdm", "threadpoolctl")  # the "app" extra of pyproject.toml


def main(argv=None) -> int:
    """The ``minigrad-rnn`` entry point: :func:`cli.main`, or one line naming the extra to install."""
    try:
        from .cli import main as run
    except ModuleNotFoundError as error:
        if error.name not in APP_PACKAGES:
            raise
        print(f"minigrad-rnn: error: the command needs {error.name}: pip install 'minigrad[app]'", file=sys.stderr)
        return 1
    return run(argv)
