#!/usr/bin/env bash
# The TensorRT check from a fresh clone, on a machine without a GPU: installs TensorRT for RTX into
# .venv (after tools/setup.sh when .venv is missing), builds libresq_plugins.so against the TensorRT
# headers given, runs every `trt` test (none may skip), builds the SmolLM2 engine for sm_89 with the
# flagship command, and prints a summary. The headers are not in this repository and never copied
# into it: e.g. the OSS headers of github NVIDIA/TensorRT (include/, v11.1 at a892d222), or a
# TensorRT / TensorRT-RTX SDK folder.
# Usage: bash tools/trt_check.sh HEADERS_DIR   (HEADERS_DIR/include/NvInfer.h, or HEADERS_DIR/NvInfer.h)
# Output: out/trt-check/ (test log, engine, its manifest, the build's log and timing).
set -euo pipefail
cd "$(dirname "$0")/.."
headers="${1:?usage: tools/trt_check.sh HEADERS_DIR (the folder holding include/NvInfer.h)}"
[[ -f "$headers/NvInfer.h" ]] && headers="$(dirname "$headers")"
[[ -f "$headers/include/NvInfer.h" ]] || { echo "error: no include/NvInfer.h under $headers" >&2; exit 1; }
headers="$(cd "$headers" && pwd)"
out=out/trt-check
mkdir -p "$out"

[[ -x .venv/bin/python ]] || bash tools/setup.sh
.venv/bin/pip install --quiet -e '.[tensorrt-rtx]'
cmake -S . -B build -DRESQ_TENSORRT_ROOT="$headers" > "$out/configure.log" 2>&1 || { cat "$out/configure.log"; exit 1; }
grep -- "-- resq" "$out/configure.log"
cmake --build build -j "$(nproc)" > "$out/native-build.log" 2>&1 || { tail -30 "$out/native-build.log"; exit 1; }
[[ -f build/plugins/libresq_plugins.so ]] || { echo "error: libresq_plugins.so was not built" >&2; exit 1; }

echo "== trt tests"
.venv/bin/python -m pytest -q -rs -m trt -p no:cacheprovider tests/plugins/test_engine.py tests/plugins/test_plan_size.py 2>&1 | tee "$out/trt-tests.log" | tail -15
tests=${PIPESTATUS[0]}
if grep -qE "[0-9]+ skipped" "$out/trt-tests.log"; then
  echo "error: trt tests skipped here (see the reasons above)" >&2
  tests=1
fi

echo "== SmolLM2-135M: build --engine for sm_89 (quantise, export, validate, engine; 8 to 17 minutes on 2 cores)"
rm -rf "$out/smollm2" "$out/smollm2.plan" "$out/smollm2.plan.json"
set +e
/usr/bin/time -v .venv/bin/resq-export build --model smollm2-135m --out "$out/smollm2" --engine "$out/smollm2.plan" \
  --runtime tensorrt-rtx --target-sm 89 --quiet > "$out/smollm2-build.log" 2> "$out/smollm2-build.err"
flagship=$?
set -e
tail -8 "$out/smollm2-build.log"
grep -E "Elapsed|Maximum resident" "$out/smollm2-build.err" || true

echo "== summary"
echo "trt tests: $(tail -1 "$out/trt-tests.log")"
if [[ $flagship -eq 0 && -s "$out/smollm2.plan" ]]; then
  echo "SmolLM2 engine: $out/smollm2.plan ($(stat -c %s "$out/smollm2.plan") bytes), exit 0"
  .venv/bin/python -c 'import json, sys; w = json.load(open(sys.argv[1]))["weights"]
print("SmolLM2 plan: %sx its %d bytes of weights (issue 34: at most 1.4x)" % (w["plan_over_weights"], w["initializer_bytes"]))' \
    "$out/smollm2.plan.json"
else
  echo "SmolLM2 engine: FAILED (exit $flagship; $out/smollm2-build.err)"
fi
[[ $tests -eq 0 && $flagship -eq 0 ]]
