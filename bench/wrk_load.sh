#!/usr/bin/env bash
# Server latency measured with wrk (a C load generator, Debian package `wrk`), so the
# client's own CPU use does not inflate the tail as a Python client does on 2 cores.
# Usage: bench/wrk_load.sh CHECKPOINT [SECONDS] [CONCURRENCY]. Loopback only; bounded in time.
set -euo pipefail
ckpt=${1:?usage: bench/wrk_load.sh CHECKPOINT [SECONDS] [CONCURRENCY]}
secs=${2:-10}; conc=${3:-16}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd); py=${PYTHON:-$here/../.venv/bin/python}
tmp=$(mktemp -d); port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$py" -m mnistkit serve "$ckpt" --host 127.0.0.1 --port "$port" >"$tmp/serve.log" 2>&1 &
server=$!; trap 'kill $server 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.5; done
"$py" - "$tmp" <<'PY'
import json, sys
sys.path.insert(0, "bench")
from load_test import drawing_png
tmp = sys.argv[1]
json.dump({"pixels": [[200 if 6 < r < 22 and 12 < c < 16 else 0 for c in range(28)] for r in range(28)]},
          open(f"{tmp}/pixels.json", "w"))
png = drawing_png()
body = (b"--mkb\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d.png\"\r\n"
        b"Content-Type: image/png\r\n\r\n" + png + b"\r\n--mkb--\r\n")
open(f"{tmp}/upload.bin", "wb").write(body)
PY
for kind in json png; do
  if [ $kind = json ]; then body=$tmp/pixels.json; ctype=application/json
  else body=$tmp/upload.bin; ctype="multipart/form-data; boundary=mkb"; fi
  echo "== $kind payload, concurrency $conc, $secs s"
  MNISTKIT_WRK_BODY=$body MNISTKIT_WRK_CTYPE=$ctype \
    wrk -t1 -c"$conc" -d"${secs}s" --latency -s "$here/wrk/predict.lua" "http://127.0.0.1:$port/predict" |
    grep -E "Latency Distribution|50%|99%|requests in|Requests/sec|Non-2xx|Socket errors" || true
done
