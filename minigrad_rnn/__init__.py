"""RNN, LSTM and GRU layers on minigrad, and the minigrad-rnn command."""
