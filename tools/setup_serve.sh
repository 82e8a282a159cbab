#!/usr/bin/env bash
# The serving environment .venv-serve (docs/serving.md): Triton Inference Server and its Python backend,
# both bundled by NVIDIA's PyTriton wheel, with what the backend's stub imports to run our generation
# (ONNX Runtime, transformers and tokenizers). No torch: the ONNX Runtime path does not import it
# (tests/runtime/test_torch_free.py); the final check below imports that path without it.
# A venv of its own: the wheel pins numpy < 2, the project's .venv has numpy 2. resq_export itself is
# this checkout, put on the venv's path by a .pth file (no install: the checkout is what is served).
# Rerunning it is harmless (pip skips what is there).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-serve
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"  # the wheel has a backend stub for Python 3.8 to 3.13
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "nvidia-pytriton==0.7.0" "numpy<2" "onnx>=1.17,<1.24" "onnxruntime>=1.20" \
    "transformers>=5.0,<6" "safetensors>=0.4" "gguf>=0.10" "click>=8.1" "tqdm>=4.66"
site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$PWD" > "$site/resq_export_checkout.pth"
# The Python backend runs the stub it finds beside libtriton_python.so; the wheel ships one per Python
# version and copies the right one into a workspace of its own when pytriton starts the server.
# We start tritonserver directly (python -m resq_export.serve.launch), so put this venv's stub in place.
"$VENV/bin/python" - <<'PY'
import shutil, subprocess, sys
from pathlib import Path
import pytriton
root = Path(pytriton.__file__).parent / "tritonserver"
stub = root / "python_backend_stubs" / f"{sys.version_info[0]}.{sys.version_info[1]}" / "triton_python_backend_stub"
if not stub.is_file():
    sys.exit(f"error: nvidia-pytriton 0.7.0 has no Python backend stub for Python {sys.version.split()[0]}")
shutil.copy2(stub, root / "backends" / "python" / "triton_python_backend_stub")
# the stub and the server are dynamically linked: name any library this machine lacks (the stub needs
# a shared libpython3.x: the interpreter's own, else the system's, e.g. Debian's libpython3.11)
from resq_export.serve.launch import server_environment
for binary in (stub, root / "bin" / "tritonserver"):
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=server_environment()).stdout
    missing = [line.split()[0] for line in out.splitlines() if "not found" in line]
    if missing:
        sys.exit(f"error: {binary.name} needs {', '.join(missing)}, not found on this machine")
PY
"$VENV/bin/python" -c "import resq_export.runtime, resq_export.validate.ort_runner, tritonclient.grpc" \
    || { echo "error: $VENV cannot import the serving path (see above)"; exit 1; }
echo "ready: $VENV"
