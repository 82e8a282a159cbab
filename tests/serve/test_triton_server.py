"""Triton Inference Server for real (the PyTriton wheel's server and Python backend, .venv-serve),
serving a tiny model's ONNX folder from a serve-repo repository: 8 concurrent gRPC streaming
clients x 10 requests, each answer equal to single-client generation, bad requests answered with an
error while serving goes on, memory that does not grow with requests, and a clean shutdown.
Needs `bash tools/setup_serve.sh` (docs/serving.md); skipped, saying so, without it."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from server_process import SERVE_PYTHON, Server, memory_mib, port_free, tree
from tiny_models import run_cli

pytestmark = [
    pytest.mark.serve,
    pytest.mark.skipif(not SERVE_PYTHON.is_file(),
                       reason=f"no {SERVE_PYTHON}: run `bash tools/setup_serve.sh` to test serving (docs/serving.md)"),
]

CLIENT = Path(__file__).with_name("triton_client.py")
CLIENTS, REQUESTS, INSTANCES = 8, 10, 2
PROMPTS = ["The history of", "Once upon a time", "In the beginning", "A quick brown fox", "The function",
           "Numbers: 1 2 3", "Hello world", "We the people", "It was the best", "Rain fell on"]


@pytest.fixture(scope="module")
def server(onnx_dir, tmp_path_factory):
    repo = tmp_path_factory.mktemp("serve") / "repo"
    result = run_cli("serve-repo", "--onnx", onnx_dir, "--out", repo, "--instances", str(INSTANCES))
    assert result.exit_code == 0, result.output
    s = Server(repo, repo.parent / "server.log")
    yield s
    s.kill()


def _load(server: Server, clients: list[list[dict]]) -> dict:
    done = subprocess.run([str(SERVE_PYTHON), str(CLIENT), f"127.0.0.1:{server.grpc}", "resq"],
                          input=json.dumps({"clients": clients}), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:] + "\n" + server.log_tail()
    return json.loads(done.stdout)


def _jobs() -> list[list[dict]]:
    """Every client a different mix: greedy and seeded sampling, lengths 3 to 17 tokens."""
    jobs = []
    for c in range(CLIENTS):
        requests = []
        for r in range(REQUESTS):
            k = c * REQUESTS + r
            request = {"prompt": PROMPTS[(c + 3 * r) % len(PROMPTS)], "max_new_tokens": 3 + k % 15}
            if k % 4 == 3:
                request.update(temperature=0.8, seed=k)
            requests.append(request)
        jobs.append(requests)
    return jobs


def _expected(onnx_dir: Path, jobs: list[list[dict]]) -> dict[str, str]:
    """Single-client generation in this process (the code `resq-export generate` runs)."""
    from resq_export.runtime import load

    generator = load(onnx_dir)
    out = {}
    for request in (r for client in jobs for r in client):
        key = json.dumps(request, sort_keys=True)
        if key not in out:
            settings = {k: v for k, v in request.items() if k != "prompt"}
            out[key] = generator.generate(request["prompt"], **settings)
    return out


class PeakRss:
    """The server's processes' summed RSS, sampled every 50 ms while the load runs."""

    def __init__(self, pid: int):
        self.pid, self.peak_mib, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak_mib = max(self.peak_mib, memory_mib(tree(self.pid), "VmRSS"))
            time.sleep(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def test_concurrent_streaming_equals_single_client_generate(server, onnx_dir):
    jobs = _jobs()
    expected = _expected(onnx_dir, jobs)
    # the command-line generate gives the same text as the API used for the expectations
    cli = run_cli("generate", "--onnx", onnx_dir, "--prompt", PROMPTS[0], "--max-new-tokens", "3")
    assert cli.output == expected[json.dumps({"max_new_tokens": 3, "prompt": PROMPTS[0]}, sort_keys=True)] + "\n"

    rss_before = memory_mib(tree(server.proc.pid), "VmRSS")
    rounds = []
    for _ in range(2):  # the second round shows whether memory grows with requests served
        with PeakRss(server.proc.pid) as peak:
            answer = _load(server, jobs)
        rounds.append((answer, peak.peak_mib, memory_mib(tree(server.proc.pid), "VmRSS")))

    config = rounds[0][0]["config"]
    assert config["modelTransactionPolicy"]["decoupled"] is True
    assert [g["count"] for g in config["instanceGroup"]] == [INSTANCES]
    assert config["parameters"]["model_path"]["stringValue"] == str(onnx_dir.resolve())
    for answer, _, _ in rounds:
        results = answer["results"]
        assert [len(r) for r in results] == [REQUESTS] * CLIENTS
        for client, records in zip(jobs, results):
            for request, record in zip(client, records):
                assert record["error"] is None and record["final"], (request, record)
                assert "".join(record["pieces"]) == expected[json.dumps(request, sort_keys=True)], (request, record)
        pieces = [len(r["pieces"]) for records in results for r in records]
        assert max(pieces) > 1, "no request was streamed in more than one response"

    (first, peak1, after1), (second, peak2, after2) = rounds
    assert after2 - after1 < 64, f"the server's RSS grew from {after1:.0f} to {after2:.0f} MiB over 80 more requests"
    records = [r for records in second["results"] for r in records]
    firsts = sorted(r["first_s"] or r["total_s"] for r in records)
    tokens = sum(len(r["pieces"]) for r in records)
    print(f"\nserver ready in {server.started_s:.1f} s ({INSTANCES} instances); {CLIENTS} clients x {REQUESTS} "
          f"requests: {first['wall_s']:.2f} s, then {second['wall_s']:.2f} s ({len(records) / second['wall_s']:.1f} "
          f"requests/s, {tokens / second['wall_s']:.0f} streamed pieces/s); first piece p50 "
          f"{1000 * firsts[len(firsts) // 2]:.0f} ms, p95 {1000 * firsts[int(len(firsts) * 0.95)]:.0f} ms; RSS "
          f"(server + stubs) {rss_before:.0f} MiB idle, peak {max(peak1, peak2):.0f} MiB, after each round "
          f"{after1:.0f} / {after2:.0f} MiB")


def test_bad_requests_get_one_error_and_serving_goes_on(server):
    requests = [{"prompt": "hello", "chat": True},  # the tiny tokenizer has no chat template
                {"prompt": "hello", "max_new_tokens": 0},
                {"prompt": "   "},
                {"prompt": "hello", "top_p": 0.0},
                {"prompt": "hello", "max_new_tokens": 10_000},  # beyond the model's context
                {"prompt": "hello", "max_new_tokens": 2}]
    records = _load(server, [requests])["results"][0]
    errors = [r["error"] for r in records]
    for needle, error in zip(["chat template", "max_new_tokens", "prompt", "top_p", "context"], errors):
        assert error is not None and needle in error and "Traceback" not in error, (needle, error)
    assert errors[-1] is None and records[-1]["final"] and records[-1]["pieces"], records[-1]


def test_shutdown_is_clean(server):
    """Runs last in this file: SIGTERM stops the server and its stubs, and frees the ports."""
    pids = tree(server.proc.pid)
    assert len(pids) > INSTANCES, f"expected the server and {INSTANCES} stubs, found pids {pids}"
    assert server.stop() == 0, server.log_tail()
    deadline = time.time() + 30
    while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.2)
    assert not [p for p in pids if Path(f"/proc/{p}").exists()], "stub processes outlived the server"
    held = [p for p in (server.http, server.grpc, server.metrics) if not port_free(p)]
    assert not held, f"ports still listened on after the server exited: {held}"
    assert "error" not in server.log_tail(15).lower(), server.log_tail(15)
