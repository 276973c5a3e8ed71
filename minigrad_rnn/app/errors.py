"""The exceptions of the ``minigrad-rnn`` command: each one becomes one line "minigrad-rnn: error: ..."."""


class DataError(ValueError):
    """Bad or unsuitable input data; the message is one line meant for the user."""


class CommandError(Exception):
    """A problem the user can fix; reported as one line with exit status 1."""


class UsageError(Exception):
    """Bad command-line arguments; reported as one line with exit status 2."""
