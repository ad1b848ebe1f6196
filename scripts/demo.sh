#!/usr/bin/env bash
# The main job: train the tutorial's model with the defaults. If full MNIST is
# neither found locally nor downloadable, say so in one line and use mnist-sample.
set -euo pipefail
PY=${1:-.venv/bin/python}
if "$PY" -m mnistkit data fetch mnist >/dev/null 2>&1; then
  exec "$PY" -m mnistkit train --out "runs/demo-$(date +%Y%m%d-%H%M%S)"
else
  echo "Full MNIST was neither found locally nor downloadable; running the demo on mnist-sample (5,000 real digits) instead."
  exec "$PY" -m mnistkit train --dataset mnist-sample --log-every 20 --out "runs/demo-sample-$(date +%Y%m%d-%H%M%S)"
fi
