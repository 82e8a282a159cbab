#!/usr/bin/env bash
# The native build without CMake (for machines that have nvcc and g++ but no cmake, e.g. a bare GPU
# box): the same sources and flags as plugins/CMakeLists.txt, into build/plugins/.
# Usage: tools/build_native.sh [cpu|cuda|all] ; RESQ_CUDA_ARCHS="90a" (default "80 86 89 90a 120").
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
out=build/plugins
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
