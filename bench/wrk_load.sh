#!/usr/bin/env bash
# Server latency measured with wrk (a C load generator, Debian package `wrk`), so the
# client's own CPU use does not inflate the tail as a Python client does on 2 cores.
# Usage: bench/wrk_load.sh CHECKPOINT [SECONDS] [CONCURRENCY] [attack]. Loopback only; bounded in time.
# With `attack`, each payload is measured twice: alone, then while load_test.py --attack-only runs
# the hostile clients beside wrk; the server's peak RSS and any traceback in its log are printed.
set -euo pipefail
ckpt=${1:?usage: bench/wrk_load.sh CHECKPOINT [SECONDS] [CONCURRENCY] [attack]}
secs=${2:-10}; conc=${3:-16}; attack=${4:-}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd); py=${PYTHON:-$here/../.venv/bin/python}
tmp=$(mktemp -d); port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# every request comes from 127.0.0.1, standing for many clients: per-client shares off
"$py" -m mnistkit serve "$ckpt" --host 127.0.0.1 --port "$port" --client-connections 0 --client-requests 0 >"$tmp/serve.log" 2>&1 &
server=$!; trap 'kill $server 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 120); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.5; done
curl -sf "http://127.0.0.1:$port/healthz" >/dev/null || { echo "the server did not start:" >&2; cat "$tmp/serve.log" >&2; exit 1; }
"$py" - "$tmp" <<'PY'
import json, sys
sys.path.insert(0, "bench")
from load_test import GOOD_PIXELS, drawing_png
tmp = sys.argv[1]
json.dump(GOOD_PIXELS, open(f"{tmp}/pixels.json", "w"))
png = drawing_png()
body = (b"--mkb\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d.png\"\r\n"
        b"Content-Type: image/png\r\n\r\n" + png + b"\r\n--mkb--\r\n")
open(f"{tmp}/upload.bin", "wb").write(body)
PY
url="http://127.0.0.1:$port/predict"
run_wrk() {
  MNISTKIT_WRK_BODY=$1 MNISTKIT_WRK_CTYPE=$2 \
    wrk -t1 -c"$conc" -d"${secs}s" --latency -s "$here/wrk/predict.lua" "$url" |
    grep -E "Latency Distribution|50%|99%|requests in|Requests/sec|Non-2xx|Socket errors" || true
}
for kind in json png; do
  if [ $kind = json ]; then body=$tmp/pixels.json; ctype=application/json
  else body=$tmp/upload.bin; ctype="multipart/form-data; boundary=mkb"; fi
  echo "== $kind payload, concurrency $conc, $secs s"
  run_wrk "$body" "$ctype"
  if [ "$attack" = attack ]; then
    echo "== $kind payload, concurrency $conc, $secs s, under attack"
    PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "$py" "$here/load_test.py" --attack-only "$url" \
      --seconds "$((secs + 2))" >"$tmp/attack.json" &
    attacker=$!
    sleep 2  # the hostile bodies are built and the attack is running before wrk starts
    run_wrk "$body" "$ctype"
    wait $attacker
    echo "   attack: $(cat "$tmp/attack.json")"
  fi
done
echo "server peak RSS: $(awk '/VmHWM/ {printf "%.0f MB", $2/1024}' /proc/$server/status); tracebacks in its log: $(grep -c Traceback "$tmp/serve.log" || true)"
