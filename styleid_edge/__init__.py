"""styleid-edge: face anonymization with StyleID on ONNX Runtime and TensorRT."""

__version__ = "0.1.0"
