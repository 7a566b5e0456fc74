"""Export model bundles to other formats (ONNX)."""

from postergenre.export.onnx import OnnxMismatchError, export_onnx, validate_onnx

__all__ = ["OnnxMismatchError", "export_onnx", "validate_onnx"]
