#!/usr/bin/env bash
# Everything issue 4 needs from a GPU machine, in one command (the device tool's single call):
# build the native libraries for this GPU only, run the GPU correctness tests, then the benchmark.
# Results go to $OUT (the device tool brings that folder back; default out/gpu here), since files
# written into the repository copy on that machine are lost:
#   nvidia-smi.txt, build.log, gpu-tests.log, gpu-tests.xml, benchmarks-gpu.md/.json, bench.log
# Usage: bash tools/gpu_session.sh [--tests-only|--bench-only]
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-out/gpu}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 RESQ_NATIVE_DIR="$PWD/build/plugins"  # the tests use this build, no cmake rebuild
py=$(command -v python3)
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
arch=$("$py" -c "import torch; m, n = torch.cuda.get_device_capability(); print(f'{m}{n}' + ('a' if m == 9 else ''))") \
  || { echo "no CUDA device visible to torch" | tee "$out/build.log"; exit 1; }
{ date -u; nvcc --version | tail -2; echo "arch $arch"; } > "$out/build.log"
RESQ_CUDA_ARCHS="$arch" bash tools/build_native.sh all >> "$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
status=0
if [[ "${1:-}" != --bench-only ]]; then
  "$py" -m pytest -q -rs -p no:cacheprovider tests/plugins/test_gpu_kernels.py --junitxml="$out/gpu-tests.xml" \
    2>&1 | tee "$out/gpu-tests.log" | tail -40
  status=${PIPESTATUS[0]}
fi
if [[ "${1:-}" != --tests-only ]]; then
  "$py" tools/bench_kernels.py --out "$out/benchmarks-gpu.md" 2>&1 | tee "$out/bench.log" | tail -60
  status=$((status | PIPESTATUS[0]))
fi
exit "$status"
