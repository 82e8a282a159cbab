"""The load the server test sends, run by .venv-serve's Python (tritonclient lives there, beside
numpy < 2): `python triton_client.py GRPC_ADDRESS MODEL < jobs.json > results.json`.

jobs.json: {"clients": [[request, ...], ...]}, each request {"prompt", "max_new_tokens", ...} (the
model's inputs). Every client is a thread with its own gRPC stream, sending its requests one after
another; all clients start together. Prints {"config": the model's config, "results": per client,
per request {"pieces": [...], "error": str | None, "final": bool, "first_s", "total_s"}}."""

import json
import queue
import sys
import threading
import time

import numpy as np
import tritonclient.grpc as grpcclient
from google.protobuf.json_format import MessageToDict

TYPES = {"prompt": "BYTES", "max_new_tokens": "INT32", "temperature": "FP32", "top_p": "FP32", "seed": "INT64",
         "chat": "BOOL"}
DTYPES = {"BYTES": np.object_, "INT32": np.int32, "FP32": np.float32, "INT64": np.int64, "BOOL": np.bool_}
TIMEOUT_S = 120


def _inputs(request: dict) -> list:
    tensors = []
    for name, value in request.items():
        t = grpcclient.InferInput(name, [1], TYPES[name])
        t.set_data_from_numpy(np.array([value.encode() if name == "prompt" else value], dtype=DTYPES[TYPES[name]]))
        tensors.append(t)
    return tensors


def run_client(address: str, model: str, requests: list[dict], barrier: threading.Barrier, out: list) -> None:
    responses = queue.Queue()
    client = grpcclient.InferenceServerClient(address)
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    barrier.wait()
    try:
        for i, request in enumerate(requests):
            start = time.perf_counter()
            record = {"pieces": [], "error": None, "final": False, "first_s": None}
            client.async_stream_infer(model, _inputs(request), request_id=str(i), enable_empty_final_response=True)
            while True:
                result, error = responses.get(timeout=TIMEOUT_S)
                if error is not None:  # an error response ends the request
                    record["error"] = str(error)
                    break
                response = result.get_response()
                assert response.id == str(i), (response.id, i)
                text = result.as_numpy("text")
                if text is not None:
                    record["first_s"] = record["first_s"] or time.perf_counter() - start
                    record["pieces"].append(text[0].decode("utf-8"))
                if response.parameters["triton_final_response"].bool_param:
                    record["final"] = True
                    break
            record["total_s"] = time.perf_counter() - start
            out.append(record)
    finally:
        client.stop_stream()
        client.close()


def main() -> None:
    address, model = sys.argv[1], sys.argv[2]
    jobs = json.load(sys.stdin)
    config = MessageToDict(grpcclient.InferenceServerClient(address).get_model_config(model).config)
    results = [[] for _ in jobs["clients"]]
    barrier = threading.Barrier(len(jobs["clients"]))
    threads = [threading.Thread(target=run_client, args=(address, model, reqs, barrier, results[c]))
               for c, reqs in enumerate(jobs["clients"])]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    json.dump({"config": config, "results": results, "wall_s": time.perf_counter() - start}, sys.stdout)


if __name__ == "__main__":
    main()
