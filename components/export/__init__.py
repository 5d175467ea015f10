"""The export step: ONNX export with a parity check, written as a model bundle."""
