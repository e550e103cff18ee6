"""backprop: fully connected networks trained with backpropagation on CPU (NumPy, Numba) or CUDA (CuPy)."""

from . import activations, diagnostics, init, losses, optimizers, reference
from .backends import available_backends, get_backend, to_numpy
from .diagnostics import Diagnosis, DiagnosticWarning
from .gradcheck import GradcheckError, GradcheckReport, gradcheck
from .network import Network
from .optimizers import SGD, Adam, AdamW, Momentum, Nesterov, RMSProp
from .training import (Callback, CosineDecay, EarlyStopping, ExponentialDecay, History,
                       InverseTimeDecay, ReduceLROnPlateau, StepDecay)


load = Network.load

__version__ = "0.1.0"
__all__ = [
    "Network", "load", "to_numpy", "get_backend", "available_backends",
    "gradcheck", "GradcheckReport", "GradcheckError",
    "activations", "diagnostics", "init", "losses", "optimizers", "reference",
    "Diagnosis", "DiagnosticWarning",
    "SGD", "Momentum", "Nesterov", "RMSProp", "Adam", "AdamW",
    "History", "Callback", "EarlyStopping",
    "StepDecay", "ExponentialDecay", "InverseTimeDecay", "CosineDecay", "ReduceLROnPlateau",
]
