"""The old name of :mod:`minigrad_rnn.testing` (``check_cell`` and the recurrent strategies), which
runs cells through ``minigrad_rnn`` and so lives there, above the core."""
from minigrad_rnn.testing import *  # noqa: F401,F403
from minigrad_rnn.testing import __all__, _check_against_torch  # noqa: F401
