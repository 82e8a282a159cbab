"""The quantise stage (pipeline.quantize), by job: calibration, bases (pass 1), the per-layer
quantisation of the linears (pass 2), the embedding and head, and the resumable pipeline."""

from .pipeline import quantize

__all__ = ["quantize"]
