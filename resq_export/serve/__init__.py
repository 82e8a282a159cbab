"""Serving with Triton Inference Server: `serve-repo` writes a model repository whose Python-backend
model streams our generation (docs/serving.md)."""
