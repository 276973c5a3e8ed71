"""Layers, losses and initializers with PyTorch's names and defaults.

    import minigrad.nn as nn
    model = nn.Sequential(nn.Linear(1, 32, rng=rng), nn.Tanh(), nn.Linear(32, 1, rng=rng))

``nn.init`` holds in-place initializers, ``nn.utils`` gradient clipping, and
``nn.functional`` re-exports ``minigrad.functional``.
"""
from . import functional, init, utils
from .layers import (
    CrossEntropyLoss, Dropout, Embedding, LayerNorm, Linear, MSELoss, ReLU, Sequential, Sigmoid, Tanh,
)
from .module import Module, ModuleList, Parameter

__all__ = [
    "Module", "ModuleList", "Parameter", "Linear", "Embedding", "Dropout", "LayerNorm", "Sequential",
    "Tanh", "Sigmoid", "ReLU", "CrossEntropyLoss", "MSELoss", "functional", "init", "utils",
]
