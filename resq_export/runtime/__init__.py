"""Run what resq-export builds: one generation loop (loop.py) over two backends, ONNX Runtime
(ort_backend.py) and TensorRT (trt_backend.py). `load(path)` opens an ONNX folder or a plan:

    from resq_export.runtime import load
    model = load("out.plan")            # or load("out/onnx")
    for piece in model.stream("The history of", max_new_tokens=64):
        print(piece, end="", flush=True)
"""

from .api import load
from .loop import Generator

__all__ = ["Generator", "load"]
