"""Load test for ``mnistkit serve``: N ``POST /predict`` requests at a fixed concurrency.

Starts the server as a subprocess on 127.0.0.1 (a free port), sends the requests
with httpx.AsyncClient, and reports errors, requests/s and p50/p99 latency. The
goal on 2 CPU cores is >= 300 requests/s with p99 <= 50 ms; note that the load
generator shares those cores with the server.

    python bench/load_test.py                         # untrained logreg, canvas-sized PNG uploads
    python bench/load_test.py --checkpoint runs/x/model.safetensors --payload json

Exit code 0 when every request succeeded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, help="checkpoint to serve (default: a fresh untrained logreg)")
    p.add_argument("--requests", type=int, default=2000, help="total requests (default: 2000)")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight (default: 16)")
    p.add_argument("--time-limit", type=float, default=120.0, help="stop sending after this many seconds (default: 120)")
    p.add_argument("--payload", choices=["png", "json"], default="png",
                   help="png: a 280x280 canvas-like drawing upload; json: 28x28 pixels (default: png)")
    return p.parse_args(argv)


def make_checkpoint(folder: Path) -> Path:
    """An untrained logreg: speed does not depend on the weights."""
    import torch

    from mnistkit.checkpoint import save_checkpoint
    from mnistkit.models import build_model

    torch.manual_seed(0)
    return save_checkpoint(folder / "bench.safetensors", build_model("logreg"),
                           {"dataset": "mnist", "norm": {"mean": 0.1307, "std": 0.3081},
                            "class_names": [str(i) for i in range(10)]})


def drawing_png() -> bytes:
    """What the page's canvas sends: black strokes on a white 280x280 PNG."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (280, 280), "white")
    ImageDraw.Draw(img).ellipse((90, 50, 190, 230), outline="black", width=18)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoint: Path, port: int) -> subprocess.Popen:
    """``mnistkit serve`` in a subprocess; returns once /healthz answers (or raises after 60 s)."""
    import httpx

    proc = subprocess.Popen([sys.executable, "-m", "mnistkit", "serve", str(checkpoint),
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not answer /healthz within 60 s")


async def run_load(url: str, payload: str, total: int, concurrency: int, time_limit: float) -> dict:
    """Send up to ``total`` requests, ``concurrency`` at a time, until done or ``time_limit`` passes."""
    import httpx

    png = drawing_png()
    pixels = {"pixels": [[255 if 12 <= c <= 15 and 5 <= r <= 22 else 0 for c in range(28)] for r in range(28)]}
    latencies: list[float] = []
    errors: list[str] = []
    next_index = 0
    stop_at = time.monotonic() + time_limit

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < total and time.monotonic() < stop_at:
            next_index += 1
            t0 = time.perf_counter()
            try:
                if payload == "png":
                    r = await client.post(url, files={"file": ("d.png", png, "image/png")})
                else:
                    r = await client.post(url, json=pixels)
                if r.status_code != 200:
                    errors.append(f"HTTP {r.status_code}: {r.text[:100]}")
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc!r} (cause: {exc.__cause__!r}, request {next_index})")
            latencies.append(time.perf_counter() - t0)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        await client.post(url, files={"file": ("d.png", png, "image/png")})  # warm-up
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "requests": len(latencies), "errors": len(errors), "first_errors": errors[:3],
        "seconds": elapsed, "rps": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), to report CPU per request under any load."""
    import os

    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def main(argv=None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or make_checkpoint(Path(tmp))
        port = free_port()
        proc = start_server(checkpoint, port)
        cpu_before = cpu_seconds(proc.pid)
        try:
            stats = asyncio.run(run_load(f"http://127.0.0.1:{port}/predict", args.payload,
                                         args.requests, args.concurrency, args.time_limit))
        finally:
            cpu_after = cpu_seconds(proc.pid)
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    ok = stats["errors"] == 0 and stats["requests"] == args.requests
    print(f"{stats['requests']} requests ({args.payload}) at concurrency {args.concurrency} "
          f"in {stats['seconds']:.1f} s: {stats['errors']} errors, {stats['rps']:.0f} requests/s, "
          f"p50 {stats['p50_ms']:.1f} ms, p99 {stats['p99_ms']:.1f} ms "
          f"(goal: 0 errors, >= 300 requests/s, p99 <= 50 ms)")
    if cpu_before is not None and cpu_after is not None and stats["requests"]:
        per_request = 1000 * (cpu_after - cpu_before) / (stats["requests"] + 1)
        print(f"server CPU: {per_request:.2f} ms per request (a ceiling of ~{1000 / per_request:.0f} requests/s "
              "per fully available core, whatever else the machine is doing)")
    for e in stats["first_errors"]:
        print("  error:", e)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
