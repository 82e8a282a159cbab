"""Start Triton Inference Server on a model repository, with the server and Python backend that
NVIDIA's PyTriton wheel bundles (tools/setup_serve.sh installs them into .venv-serve):

    .venv-serve/bin/python -m resq_export.serve.launch REPO [--http-port 8000] [--grpc-port 8001]
        [--metrics-port 8002] [--address 127.0.0.1] [-- more tritonserver flags]

It replaces itself with tritonserver (same pid: a signal to it reaches the server). The backend's stub
embeds the Python found first on PATH, so this interpreter's folder goes first: the stub then imports
from this environment (numpy < 2, ONNX Runtime, resq_export)."""

from __future__ import annotations

import argparse
import os
import sys
import sysconfig
from pathlib import Path

from ..outputs import SERVE_MARKER


def server_root() -> Path:
    """The wheel's tritonserver folder, with the stub for this Python in place."""
    try:
        import pytriton
    except ImportError:
        sys.exit("error: nvidia-pytriton is not installed in this Python environment: run tools/setup_serve.sh and "
                 "use .venv-serve/bin/python")
    root = Path(pytriton.__file__).parent / "tritonserver"
    if not (root / "backends" / "python" / "triton_python_backend_stub").is_file():
        sys.exit(f"error: {root}/backends/python has no triton_python_backend_stub: run tools/setup_serve.sh")
    return root


def server_environment() -> dict[str, str]:
    """The environment tritonserver (and so the stubs) runs in: this interpreter's folder first on
    PATH, so a stub embeds this environment's Python; this interpreter's libpython first on the
    library path where it has one, so the stub's libpython is the build the environment's standard
    library belongs to, not whichever libpython3.x the system has."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    libdir, library = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    if libdir and library and (Path(libdir) / library).is_file():
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in [libdir, env.get("LD_LIBRARY_PATH", "")] if p)
    return env


def _port(text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{text} is not a port (1-65535)")
    return port


def server_command(root: Path, repo: Path, args: argparse.Namespace, extra: list[str]) -> list[str]:
    return [str(root / "bin" / "tritonserver"), f"--model-repository={repo}",
            f"--backend-directory={root / 'backends'}", f"--cache-directory={root / 'caches'}",
            f"--http-address={args.address}", f"--http-port={args.http_port}",
            f"--grpc-address={args.address}", f"--grpc-port={args.grpc_port}",
            f"--metrics-address={args.address}", f"--metrics-port={args.metrics_port}", *extra]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m resq_export.serve.launch",
                                     description="Start Triton Inference Server on a serve-repo repository.")
    parser.add_argument("repo", type=Path, help="the model repository (resq-export serve-repo --out)")
    parser.add_argument("--http-port", type=_port, default=8000)
    parser.add_argument("--grpc-port", type=_port, default=8001)
    parser.add_argument("--metrics-port", type=_port, default=8002)
    parser.add_argument("--address", default="127.0.0.1", help="where to listen (0.0.0.0: every interface)")
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    repo = args.repo.expanduser().resolve()
    if not (repo / SERVE_MARKER).is_file():
        sys.exit(f"error: {repo} is not a model repository of resq-export serve-repo (no {SERVE_MARKER})")
    root = server_root()
    command = server_command(root, repo, args, extra)
    os.execve(command[0], command, server_environment())


if __name__ == "__main__":
    main()
