#!/usr/bin/env bash
# Which part of W4A4KV4 costs the perplexity (issue 18, docs/results.md "Session 9"): FP, then ResQ
# with 4-bit weights only, + 4-bit activations, + 4-bit KV, each evaluated on the packaged eval text
# and on an out-of-domain text. One job at a time; about 25 min on a 2-core machine.
#   bash tools/error_decomposition.sh OUT_DIR OOD_TEXT [MODEL]
# Writes OUT_DIR/<setting>.<packaged|ood>.json (resq-export eval --json) and OUT_DIR/times.log.
set -u
cd "$(dirname "$0")/.."
out=$1 ood=$2 model=${3:-smollm2-135m}
mkdir -p "$out"
evaluate() {  # setting name, then eval's model or artifact flags
  local name=$1; shift
  /usr/bin/time -f "$name packaged %e s %M kB" .venv/bin/resq-export eval "$@" --max-tokens 8192 --seqlen 512 \
    --json --quiet > "$out/$name.packaged.json" 2>> "$out/times.log"
  /usr/bin/time -f "$name ood %e s %M kB" .venv/bin/resq-export eval "$@" --text "$ood" --max-tokens 8192 \
    --seqlen 512 --json --quiet > "$out/$name.ood.json" 2>> "$out/times.log"
}
evaluate fp --model "$model"
for setting in "W4A16KV16:--a-bits 16 --kv-bits 16" "W4A4KV16:--kv-bits 16" "W4A4KV4:"; do
  name=${setting%%:*} flags=${setting#*:}
  # shellcheck disable=SC2086  # flags are words
  /usr/bin/time -f "$name quantize %e s %M kB" .venv/bin/resq-export quantize --model "$model" $flags \
    --out "$out/art-$name" > "$out/q-$name.log" 2>> "$out/times.log"
  evaluate "$name" --artifact "$out/art-$name"
done
