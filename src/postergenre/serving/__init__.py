"""The web app: `create_app(predictor)` for the ASGI application, `serve(predictor)` to run it."""

from postergenre.serving.app import create_app
from postergenre.serving.server import serve

__all__ = ["create_app", "serve"]
