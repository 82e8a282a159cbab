#!/usr/bin/env bash
# Everything issues 4, 28 and 29 need from a GPU machine, in one command (the device tool's single call):
# the Triton kernels' cubins (built HERE, where triton 3.9.0 is: `cmake --build build --target
# resq_triton`, then carry build/plugins/libresq_triton.so; the GPU machine has triton 3.6) loaded by
# our loader and run through our launch seam against the reference executor (the linear, the
# Hadamard, the KV attention); the plugins' enqueue (the TensorRT-free op layer MixedLinearPlugin,
# HadamardPlugin and KVCacheAttentionPlugin adapt, in libresq_triton.so) on device buffers for the tiny
# models' layer-0 linears, Hadamards and attention (a prefill then decode steps through the aliased
# cache), against the reference executor computed on the CPU HERE (the case files:
# `RESQ_ENQUEUE_CASES=$PWD/build/plugins/enqueue_cases.pt RESQ_KV_ENQUEUE_CASES=$PWD/build/plugins/kv_enqueue_cases.pt
# .venv/bin/python -m pytest -q tests/plugins/test_plugin_enqueue.py tests/plugins/test_kv_enqueue.py`; carry
# them beside libresq_triton.so: the GPU machine has neither the tiny models nor TensorRT); then the CPU
# references and libresq_kernels.so (device queries) built for this GPU only, the GPU tests (the cubins
# of the linear, the Hadamard and the KV attention through loader and seam against the reference
# executor), then the benchmark of the cubins (GEMMs, KV decode and prefill attention) against FP16,
# written as a dated record.
# Results go to $OUT (the device tool brings that folder back; default out/gpu here), since files
# written into the repository copy on that machine are lost:
#   nvidia-smi.txt, triton-check.log/.json, enqueue-check.log/.json, build.log, gpu-tests.log, gpu-tests.xml,
#   benchmarks-gpu-<UTC date>.md/.json, bench.log, runtime.log, runtime-bench.json
# Usage: bash tools/gpu_session.sh [--tests-only|--bench-only|--triton-only]
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-out/gpu}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 RESQ_NATIVE_DIR="$PWD/build/plugins"  # the tests use this build, no cmake rebuild
py=$(command -v python3)
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
arch=$("$py" -c "import torch; m, n = torch.cuda.get_device_capability(); print(f'{m}{n}' + ('a' if m == 9 else ''))") \
  || { echo "no CUDA device visible to torch" | tee "$out/build.log"; exit 1; }
status=0
# 1. our cubins through our loader (prepare: cubin by SM, shared memory, loaded into the context)
#    and the seam, bit-exact against the reference executor, on this GPU
triton_lib="$PWD/build/plugins/libresq_triton.so"
if [[ ! -f "$triton_lib" ]]; then
  echo "error: $triton_lib was not carried (build it where triton 3.9.0 is: cmake --build build --target resq_triton)" \
    | tee "$out/triton-check.log"
  status=1
elif [[ "${1:-}" != --bench-only ]]; then
  "$py" tools/triton_gpu_check.py --mode cuda --lib "$triton_lib" --out "$out/triton-check.json" 2>&1 \
    | tee "$out/triton-check.log" | tail -40
  status=${PIPESTATUS[0]}
fi
# 2. the plugins' enqueue on device buffers (tools/op_enqueue_check.py: resq_op_check / resq_op_enqueue with
#    the CUDA launcher on torch CUDA tensors; the same cases the CPU tests replay with the interpreter)
if [[ -f "$triton_lib" && "${1:-}" != --bench-only ]]; then
  "$py" tools/op_enqueue_check.py --mode cuda --lib "$triton_lib" --cases "$PWD/build/plugins/enqueue_cases.pt" \
    "$PWD/build/plugins/kv_enqueue_cases.pt" --out "$out/enqueue-check.json" 2>&1 | tee "$out/enqueue-check.log" | tail -20
  status=$((status | PIPESTATUS[0]))
fi
[[ "${1:-}" == --triton-only ]] && exit "$status"
{ date -u; nvcc --version | tail -2; echo "arch $arch"; } > "$out/build.log"
# the CPU references and libresq_kernels.so for this GPU only; libresq_triton.so is the carried one
for what in cpu cuda; do
  RESQ_CUDA_ARCHS="$arch" bash tools/build_native.sh "$what" >> "$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
done
if [[ "${1:-}" != --bench-only ]]; then
  "$py" -m pytest -q -rs -p no:cacheprovider tests/plugins/test_gpu_kernels.py --junitxml="$out/gpu-tests.xml" \
    2>&1 | tee "$out/gpu-tests.log" | tail -40
  status=$((status | PIPESTATUS[0]))
fi
if [[ "${1:-}" != --tests-only ]]; then
  "$py" tools/bench_kernels.py --lib "$triton_lib" --out "$out/benchmarks-gpu-$(date -u +%Y-%m-%d).md" 2>&1 \
    | tee "$out/bench.log" | tail -60
  status=$((status | PIPESTATUS[0]))
fi
# 3. the TensorRT runtime (issue 31): `generate --engine` and `bench --engine` on a plan for this GPU (RESQ_PLAN,
#    or one built here from the ONNX folder RESQ_ONNX), where TensorRT imports; skipped with the reason otherwise
trt=$("$py" -c "import importlib.util as u; print(next((m for m in ('tensorrt', 'tensorrt_rtx_bindings') if u.find_spec(m)), ''))")
plan="${RESQ_PLAN:-$out/runtime.plan}"
if [[ -z "$trt" ]]; then
  echo "skipped: neither tensorrt nor tensorrt_rtx_bindings imports here" | tee "$out/runtime.log"
elif [[ ! -f "$plan" && ! -d "${RESQ_ONNX:-}" ]]; then
  echo "skipped: no plan (set RESQ_PLAN to one built for sm_$arch, or RESQ_ONNX to an ONNX folder to build one)" \
    | tee "$out/runtime.log"
else
  { [[ -f "$plan" ]] || "$py" -m resq_export.cli engine --onnx "$RESQ_ONNX" --engine "$plan"; } > "$out/runtime.log" 2>&1 \
    && "$py" -m resq_export.cli generate --engine "$plan" --prompt "The history of" --max-new-tokens 32 >> "$out/runtime.log" 2>&1 \
    && "$py" -m resq_export.cli bench --engine "$plan" --json > "$out/runtime-bench.json" 2>> "$out/runtime.log"
  rc=$?
  tail -20 "$out/runtime.log"
  status=$((status | rc))
fi
exit "$status"
