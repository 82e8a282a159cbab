#!/usr/bin/env bash
# The native build without CMake (for machines that have nvcc and g++ but no cmake, e.g. a bare GPU
# box): the same sources and flags as plugins/CMakeLists.txt, into build/plugins/.
# Usage: tools/build_native.sh [cpu|cuda|triton|all] ; RESQ_CUDA_ARCHS="90a" (default "80 86 89 90a 120").
# triton: the cubins of resq_export.kernels (or of RESQ_TRITON_CONFIGS=module:function, importable
# from RESQ_TRITON_PATH) and libresq_triton.so; RESQ_PYTHON is the interpreter with triton==3.9.0
# (default .venv/bin/python, else python3). RESQ_NATIVE_OUT replaces build/plugins.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
out="${RESQ_NATIVE_OUT:-build/plugins}"
mkdir -p "$out/generated"
python3 plugins/tools/gen_ops_header.py resq_export/export/ops.json "$out/generated/resq_ops.h"
inc=(-I"$out/generated")
for dir in plugins/*/; do inc+=(-I"$dir"); done  # common/ and the op folders, as plugins/CMakeLists.txt
if [[ "$what" == cpu || "$what" == all ]]; then
  g++ -std=c++17 -O2 -ffp-contract=off -fno-fast-math -fPIC -shared -fvisibility=hidden "${inc[@]}" \
    plugins/common/spec_manifest.cpp plugins/*/*_ref.cpp -o "$out/libresq_cpu_ref.so"
fi
if [[ "$what" == cuda || "$what" == all ]]; then
  command -v nvcc > /dev/null || { echo "nvcc not found: the CUDA kernel library is skipped" >&2; exit 0; }
  gencode=()
  archs=(${RESQ_CUDA_ARCHS:-80 86 89 90a 120})
  for a in "${archs[@]}"; do gencode+=("-gencode=arch=compute_$a,code=sm_$a"); done
  csv=$(IFS=,; echo "${archs[*]}")
  nvcc -std=c++17 -O3 -lineinfo --expt-relaxed-constexpr -Xcompiler=-fPIC,-fvisibility=hidden -shared \
    "${gencode[@]}" -DRESQ_CUDA_ARCH_LIST="\"$csv\"" "${inc[@]}" plugins/*/*.cu -o "$out/libresq_kernels.so"
fi
if [[ "$what" == triton || "$what" == all ]]; then
  command -v nvcc > /dev/null || { echo "error: nvcc not found: the CUDA toolkit (its ptxas and runtime) builds libresq_triton.so" >&2; exit 1; }
  cuda_home="${CUDA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")}"
  [[ -e "$cuda_home/include/cuda_runtime_api.h" ]] || cuda_home=/usr/local/cuda  # nvcc may be a wrapper script
  py="${RESQ_PYTHON:-}"
  [[ -n "$py" ]] || { [[ -x .venv/bin/python ]] && py=.venv/bin/python || py=python3; }
  archs=(${RESQ_CUDA_ARCHS:-80 86 89 90a 120})
  env -u TRITON_INTERPRET PYTHONPATH="$PWD${RESQ_TRITON_PATH:+:$RESQ_TRITON_PATH}" RESQ_PTXAS="$cuda_home/bin/ptxas" \
    "$py" plugins/tools/compile_triton.py "$out/triton" --archs "$(IFS=,; echo "${archs[*]}")" \
    --configs "${RESQ_TRITON_CONFIGS:-resq_export.kernels.configs:all_configs}"
  cudart_dir="$cuda_home/lib64"; [[ -e "$cudart_dir/libcudart.so" ]] || cudart_dir="$cuda_home/lib"
  g++ -std=c++17 -O2 -Wall -Wextra -fPIC -shared -fvisibility=hidden "${inc[@]}" -I"$cuda_home/include" \
    plugins/common/triton_loader.cpp plugins/*/triton_[!l]*.cpp plugins/*/*_op.cpp "$out/triton/triton_kernels.cpp" -L"$cudart_dir" -lcudart \
    -o "$out/libresq_triton.so"
fi
