#!/usr/bin/env bash
# Install, then run the flagship job (CPU preset): learning curves land in runs/<experiment>_cpu/plots.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
python -m gdm_jax.launch --config=configs/dreamer_odt.py:cpu --workdir=runs/dreamer_odt_cpu "$@"
