"""alexnet: train, evaluate and deploy AlexNet image classifiers.

>>> import alexnet
>>> model = alexnet.create_model("alexnet2012", num_classes=10)
>>> alexnet.load_weights(model, "run/checkpoints/best.pt")
"""

from .errors import UserError, WeightsError
from .model import AlexNet, AlexNet2012, create_model, list_models
from .predict import Predictor, load
from .weights import load_weights, model_from_file

__version__ = "0.1.0"

__all__ = [
    "AlexNet",
    "AlexNet2012",
    "Predictor",
    "UserError",
    "WeightsError",
    "create_model",
    "list_models",
    "load",
    "load_weights",
    "model_from_file",
]
