"""A Triton server started the documented way (.venv-serve/bin/python -m resq_export.serve.launch) on
free loopback ports, and what the test reads of it: readiness, its processes' memory, its shutdown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVE_PYTHON = ROOT / ".venv-serve" / "bin" / "python"
START_TIMEOUT_S = 180  # every instance's stub imports torch, transformers and ONNX Runtime on 2 cores


def free_ports(n: int) -> list[int]:
    """Ports the kernel hands out now (held together so they differ; the server binds them right after)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_free(port: int) -> bool:
    """Nothing listens on it: a server could bind it now (SO_REUSEADDR, as servers do, so that the
    TIME_WAIT of closed client connections does not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def tree(pid: int) -> list[int]:
    """pid and its descendants (the Python backend's stubs are the server's children)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


def memory_mib(pids: list[int], field: str) -> float:
    """Sum of a /proc/PID/status field (VmRSS: now, VmHWM: the process's peak) over live pids, MiB."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class Server:
    def __init__(self, repo: Path, log: Path):
        self.http, self.grpc, self.metrics = free_ports(3)
        self.log = log
        env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's resq_export, in the stubs too
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(
                [str(SERVE_PYTHON), "-m", "resq_export.serve.launch", str(repo), "--http-port", str(self.http),
                 "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics)],
                stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        self.started_s = self._wait_ready()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def _wait_ready(self) -> float:
        start = time.perf_counter()
        while time.perf_counter() - start < START_TIMEOUT_S:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return time.perf_counter() - start
            except OSError:
                pass
            time.sleep(0.5)
        self.kill()
        raise AssertionError(f"the server was not ready within {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM, as a service manager stops it; the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)

    def kill(self) -> None:
        if self.proc.poll() is None:
            for pid in reversed(tree(self.proc.pid)):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait()
