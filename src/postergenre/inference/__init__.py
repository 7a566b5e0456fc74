"""Inference: load a model (a bundle, or an exported .onnx file) and predict (see `Predictor`).

The runners of exported graphs are public too: `open_graph("model.onnx")` opens and checks a
file (ONNX Runtime, or OpenVINO with runtime="openvino") and returns its runner, whose `card`
says its genres and preprocessing and whose call maps preprocessed posters to probabilities;
`OnnxRunner` and `OpenVinoRunner` are the two runners themselves.
"""

from postergenre.inference.graph_model import GraphOnlyError, open_graph
from postergenre.inference.onnx_runtime import OnnxRunner
from postergenre.inference.openvino_runtime import OpenVinoRunner
from postergenre.inference.predictions import Prediction, Predictions
from postergenre.inference.predictor import Predictor
from postergenre.models.catalog import bundled_models, resolve_model

__all__ = [
    "GraphOnlyError",
    "OnnxRunner",
    "OpenVinoRunner",
    "Prediction",
    "Predictions",
    "Predictor",
    "bundled_models",
    "open_graph",
    "resolve_model",
]
