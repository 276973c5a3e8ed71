"""RNN, LSTM and GRU layers on minigrad: cells, the one sequence driver, layers (the command is in ``app``)."""
from .cells import GRUCell, LSTMCell, RecurrentCell, RNNCell
from .layers import GRU, LSTM, RNN, Recurrent, run_cell
from .utils import detach_state

__all__ = [
    "RNN", "LSTM", "GRU", "Recurrent", "run_cell",
    "RNNCell", "LSTMCell", "GRUCell", "RecurrentCell", "detach_state",
]
