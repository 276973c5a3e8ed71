"""The ``minigrad-rnn`` command, apart from the library it drives.

``cli`` (the parser and entry point), ``runs`` (output folders, checkpoints, the budget and
the one training loop), ``options`` (option types), ``errors``; the data: ``corpus`` (text
for the language model), ``conllu`` (part-of-speech sentences), ``vocab`` (strings <-> ids);
and one module per task, each registering its subcommands: ``charlm`` (``train``,
``sample``), ``tagger`` (``tag``), ``experiments`` (``experiment``, ``gradflow``).
"""
