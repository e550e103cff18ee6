"""backprop: fully connected networks trained with backpropagation on CPU (NumPy, Numba) or CUDA (CuPy)."""

from . import activations, diagnostics, distributed, init, losses, optimizers, reference
from .backends import available_backends, get_backend, to_numpy
from .diagnostics import Diagnosis, DiagnosticWarning
from .gradcheck import GradcheckError, GradcheckReport, gradcheck
from .network import Network
from .optimizers import SGD, Adam, AdamW, Momentum, Nesterov, RMSProp
from .training import (Callback, CosineDecay, EarlyStopping, ExponentialDecay, History,
                       InverseTimeDecay, ReduceLROnPlateau, StepDecay)


load = Network.load

#: names imported on first use, so that their optional dependencies stay optional
_LAZY = {"BackpropClassifier": "sklearn", "BackpropRegressor": "sklearn"}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__version__ = "0.1.0"
__all__ = [
    "Network", "load", "to_numpy", "get_backend", "available_backends",
    "gradcheck", "GradcheckReport", "GradcheckError",
    "activations", "diagnostics", "distributed", "init", "losses", "optimizers", "reference",
    "Diagnosis", "DiagnosticWarning",
    "SGD", "Momentum", "Nesterov", "RMSProp", "Adam", "AdamW",
    "History", "Callback", "EarlyStopping",
    "StepDecay", "ExponentialDecay", "InverseTimeDecay", "CosineDecay", "ReduceLROnPlateau",
]   # not the lazy names: `from backprop import *` must work without scikit-learn
