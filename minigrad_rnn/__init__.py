"""RNN, LSTM and GRU layers on minigrad: cells, the one sequence driver, layers, attention and an
encoder-decoder (the command is in ``app``)."""
from .cells import GRUCell, LSTMCell, RecurrentCell, RNNCell
from .layers import GRU, LSTM, RNN, Recurrent, run_cell
from .utils import detach_state
from .attention import AdditiveAttention, MultiplicativeAttention
from .seq2seq import AttentiveDecoderCell, Seq2Seq

__all__ = [
    "RNN", "LSTM", "GRU", "Recurrent", "run_cell",
    "RNNCell", "LSTMCell", "GRUCell", "RecurrentCell", "detach_state",
    "AdditiveAttention", "MultiplicativeAttention", "AttentiveDecoderCell", "Seq2Seq",
]
