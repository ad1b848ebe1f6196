#!/usr/bin/env bash
# The main job: train the tutorial's model with the defaults. If full MNIST is
# neither found locally nor downloadable, say so in one line and use mnist-sample.
# Ends by saying how to put `mnistkit` on the PATH: it lives in the virtual environment.
set -euo pipefail
PY=${1:-.venv/bin/python}
if "$PY" -m mnistkit data fetch mnist >/dev/null 2>&1; then
  "$PY" -m mnistkit train --out "runs/demo-$(date +%Y%m%d-%H%M%S)"
else
  echo "Full MNIST was neither found locally nor downloadable; running the demo on mnist-sample (5,000 real digits) instead."
  "$PY" -m mnistkit train --dataset mnist-sample --log-every 20 --out "runs/demo-sample-$(date +%Y%m%d-%H%M%S)"
fi
ACTIVATE="$(dirname "$PY")/activate"
if [ -f "$ACTIVATE" ]; then
  echo "The mnistkit command is in $(dirname "$PY"), not on your PATH: run '. $ACTIVATE' in your shell first (or call $(dirname "$PY")/mnistkit)."
fi
