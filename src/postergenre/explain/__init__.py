"""Explanations: where in a poster the model found its evidence for a genre."""

from postergenre.explain.gradcam import Explanation, explain_poster, grad_cam

__all__ = ["Explanation", "explain_poster", "grad_cam"]
