"""Inference: load a model bundle and predict."""

from postergenre.inference.predictor import Prediction, Predictor
from postergenre.models.bundle import bundled_models, resolve_model

__all__ = ["Prediction", "Predictor", "bundled_models", "resolve_model"]
