"""alexnet: train, evaluate and deploy AlexNet image classifiers.

>>> import alexnet
>>> model = alexnet.create_model("alexnet2012", num_classes=10)
>>> alexnet.load_weights(model, "run/checkpoints/best.pt")
>>> alexnet.load("run/checkpoints/best.pt").predict("cat.jpg", topk=3)

The names below are imported on first use, so ``import alexnet`` (and ``alexnet --help``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import ArgumentError, UserError, WeightsError

# public name -> the module that defines it
_LAZY = {
    "AlexNet": "model",
    "AlexNet2012": "model",
    "create_model": "model",
    "list_models": "model",
    "Predictor": "predict",
    "OnnxPredictor": "predict",
    "load": "predict",
    "load_weights": "weights",
    "model_from_file": "weights",
    "Preprocess": "preprocess",
}

__all__ = [
    "AlexNet",
    "AlexNet2012",
    "ArgumentError",
    "OnnxPredictor",
    "Predictor",
    "Preprocess",
    "UserError",
    "WeightsError",
    "create_model",
    "list_models",
    "load",
    "load_weights",
    "model_from_file",
]

if TYPE_CHECKING:
    from .model import AlexNet, AlexNet2012, create_model, list_models
    from .predict import OnnxPredictor, Predictor, load
    from .preprocess import Preprocess
    from .weights import load_weights, model_from_file


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    if name == "__version__":
        from importlib.metadata import version

        return version("alexnet")
    raise AttributeError(f"module 'alexnet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY, "__version__"])
