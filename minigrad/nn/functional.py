"""``minigrad.nn.functional``: PyTorch's place for ``minigrad.functional``, re-exported."""
from ..functional import cross_entropy, dropout, embedding, log_softmax, logsumexp, mse_loss, softmax
from ..ops import relu, sigmoid, tanh

__all__ = ["cross_entropy", "dropout", "embedding", "log_softmax", "logsumexp", "mse_loss", "softmax",
           "relu", "sigmoid", "tanh"]
