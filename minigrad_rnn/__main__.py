"""``python -m minigrad_rnn``: the same as the ``minigrad-rnn`` command."""
import sys

from .app import main

sys.exit(main())
