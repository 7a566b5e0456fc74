"""Inference: load a model bundle and predict (see `Predictor`)."""

from postergenre.inference.predictions import Prediction, Predictions
from postergenre.inference.predictor import Predictor
from postergenre.models.catalog import bundled_models, resolve_model

__all__ = ["Prediction", "Predictions", "Predictor", "bundled_models", "resolve_model"]
