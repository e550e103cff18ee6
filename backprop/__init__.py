"""backprop: fully connected networks trained with backpropagation on CPU (NumPy, Numba) or CUDA (CuPy)."""

from . import activations, distributed, init, losses, optimizers, reference
from .backends import available_backends, get_backend, to_numpy
from .network import Network
from .optimizers import SGD, Adam, AdamW, Momentum, Nesterov, RMSProp
from .training import (Callback, CosineDecay, EarlyStopping, ExponentialDecay, History,
                       InverseTimeDecay, StepDecay)


load = Network.load

__version__ = "0.1.0"
__all__ = [
    "Network", "load", "to_numpy", "get_backend", "available_backends",
    "activations", "distributed", "init", "losses", "optimizers", "reference",
    "SGD", "Momentum", "Nesterov", "RMSProp", "Adam", "AdamW",
    "History", "Callback", "EarlyStopping",
    "StepDecay", "ExponentialDecay", "InverseTimeDecay", "CosineDecay",
]
