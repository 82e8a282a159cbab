"""TensorRT engine building (optional: TensorRT is imported only when an engine is built)."""
