"""The Triton Python-backend model that a serve-repo repository's 1/model.py re-exports. It runs in
Triton's Python backend stub, one process per instance: initialize opens the generator once, execute
streams each request's text as decoupled responses (one per piece) and then the final flag. A bad
request gets one error response naming the problem; the instance goes on serving."""

from __future__ import annotations

import json
import traceback
from pathlib import Path

from ..errors import ResQError
from ..runtime import load
from .protocol import INPUTS, OUTPUT, request_settings


def model_parameters(model_config: dict) -> dict[str, str]:
    """config.pbtxt's parameters as name -> string."""
    return {k: v.get("string_value", "") for k, v in model_config.get("parameters", {}).items()}


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        import numpy as np
        import triton_python_backend_utils as pb_utils  # only inside Triton's stub

        self.pb, self.np = pb_utils, np
        config = json.loads(args["model_config"])
        # Streaming needs the decoupled policy: without it Triton takes one response per request
        if not pb_utils.using_decoupled_model_transaction_policy(config):
            raise pb_utils.TritonModelException(
                f"model {args['model_name']}: config.pbtxt needs model_transaction_policy {{ decoupled: true }} "
                "to stream text (rewrite the repository with resq-export serve-repo)")
        outputs = [o["name"] for o in config.get("output", [])]
        if outputs != [OUTPUT.name]:
            raise pb_utils.TritonModelException(
                f"model {args['model_name']}: config.pbtxt's outputs are {outputs}, this model writes "
                f"[{OUTPUT.name!r}] (rewrite the repository with resq-export serve-repo)")
        params = model_parameters(config)
        plugins = params.get("plugin_library") or None
        # the same Generator `resq-export generate` runs (resq_export.runtime: ONNX Runtime or TensorRT),
        # opened here so a plan that cannot run on this GPU fails the load, not the first request
        self.generator = load(Path(params["model_path"]), plugins=Path(plugins) if plugins else None)
        self.generator.open()
        pb_utils.Logger.log_info(f"resq-export: instance {args['model_instance_name']} serves {params['model_path']}")

    def _text(self, piece: str):
        tensor = self.pb.Tensor(OUTPUT.name, self.np.array([piece.encode("utf-8")], dtype=self.np.object_))
        return self.pb.InferenceResponse(output_tensors=[tensor])

    def _serve(self, request) -> None:
        pb = self.pb
        sender = request.get_response_sender()
        final = pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        try:
            tensors = {}
            for field in INPUTS:
                t = pb.get_input_tensor_by_name(request, field.name)
                tensors[field.name] = None if t is None else t.as_numpy()
            settings = request_settings(tensors)
            for piece in self.generator.stream(settings.pop("prompt"), **settings):
                if sender.is_cancelled():  # the client went away: stop spending the instance on it
                    break
                sender.send(self._text(piece))
            sender.send(flags=final)
        except ResQError as e:  # the request's fault: say why, keep serving
            sender.send(pb.InferenceResponse(error=pb.TritonError(str(e))), flags=final)
        except Exception as e:  # a fault of ours: logged in full, the client still gets its final response
            pb.Logger.log_error("resq-export: " + traceback.format_exc())
            sender.send(pb.InferenceResponse(error=pb.TritonError(f"internal error: {type(e).__name__}: {e}")),
                        flags=final)

    def execute(self, requests):
        # One request at a time per instance (its ONNX Runtime session uses the cores); concurrency
        # comes from instances (instance_group count) and servers
        for request in requests:
            self._serve(request)
        return None

    def finalize(self) -> None:
        self.generator = None
