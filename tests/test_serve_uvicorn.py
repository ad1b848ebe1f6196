"""``mnistkit serve`` as users run it: a real uvicorn process on 127.0.0.1, a trained model, real sockets.

Covers what only a real server shows: slow clients timed out, a busy port and a bad checkpoint
as one line with exit code 2, and a short mixed load (good requests beside hostile ones) with
no 5xx, no traceback in the server log and bounded RSS. No timing asserts: the latency goals
are measured by ``bench/load_test.py --attack``.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from helpers import stop_process  # noqa: E402
from serve_helpers import TIMEOUT_S, assert_matches_library, drawing, expected, png_bytes  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import load_test  # noqa: E402

#: Here good and hostile clients all come from 127.0.0.1, standing for many clients: no per-client
#: shares (they are tested in test_serve_fair.py, with clients on different addresses).
ONE_ADDRESS_IS_MANY = ("--client-connections", "0", "--client-requests", "0")


@pytest.fixture(scope="module")
def server(served_run, tmp_path_factory):
    """``mnistkit serve --model RUN_DIR`` on a free port; yields (base URL, process, log path)."""
    port = load_test.free_port()
    log_path = tmp_path_factory.mktemp("log") / "serve.log"
    with open(log_path, "wb") as log:
        proc = load_test.start_server(
            served_run, port, log, ("--request-timeout", str(TIMEOUT_S), *ONE_ADDRESS_IS_MANY)
        )
    try:
        yield f"http://127.0.0.1:{port}", proc, log_path
    finally:
        stop_process(proc)


def test_real_server_answers_like_the_library(server, served_ckpt):
    base, _, log_path = server
    data = png_bytes(drawing())
    body = assert_matches_library(
        httpx.post(base + "/predict?preview=1", files={"file": ("d.png", data, "image/png")}), served_ckpt
    )
    assert body["label"] == "0"
    assert_matches_library(
        httpx.post(base + "/predict", json={"pixels": body["preview"]}),
        served_ckpt,
        np.array(body["preview"], np.uint8),
    )
    assert "serving" in log_path.read_text() and str(REPO) not in httpx.get(base + "/model").text


def test_concurrent_requests_from_threads_each_get_their_own_answer(server, served_ckpt):
    """32 different digits posted from 8 threads at once: every answer is the library's for *its* pixels
    (a server mixing up concurrent requests, or batching them wrongly, gives another digit's answer)."""
    from concurrent.futures import ThreadPoolExecutor

    base, _, _ = server
    rng = np.random.default_rng(0)
    digits = [np.zeros((28, 28), np.uint8) for _ in range(32)]
    for i, digit in enumerate(digits):
        digit[4 + i % 18 : 10 + i % 18, 4:24] = rng.integers(100, 256, (6, 20))  # a bar at a different row each
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda d: client.post(base + "/predict", json={"pixels": d.tolist()}), digits))
    bodies = [assert_matches_library(r, served_ckpt, d) for r, d in zip(answers, digits, strict=True)]
    assert len({b["label"] + f"{b['probability']:.6f}" for b in bodies}) > 16  # really different inputs


def _closed_after(sock: socket.socket, trickle: bytes, limit_s: float) -> tuple[float, bytes]:
    """Send ``trickle`` a byte every 0.1 s; (seconds until the server closed, what it sent back)."""
    start, answer = time.monotonic(), b""
    sock.settimeout(0.1)
    for byte in trickle:
        if time.monotonic() - start > limit_s:
            break
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            break
        try:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        except TimeoutError:
            continue
        except OSError:
            break
    return time.monotonic() - start, answer


def test_slow_headers_and_slow_bodies_are_cut_off(server):
    base, _, _ = server
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
        took, _ = _closed_after(s, b"X-Slow: " + b"a" * 1000, limit_s=10 * TIMEOUT_S)
    assert took < 5 * TIMEOUT_S, f"a client trickling headers was kept {took:.1f} s"
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n")
        took, answer = _closed_after(s, b"\x89" * 1000, limit_s=10 * TIMEOUT_S)
    assert took < 5 * TIMEOUT_S and answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"not received within 1 s" in answer
    with socket.create_connection(("127.0.0.1", port)) as s:  # unfinished headers past the limit: 400, not memory
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000)  # > 16 KiB, all read at once
        s.settimeout(5)
        assert s.recv(100).startswith(b"HTTP/1.1 400")


def test_busy_port_is_one_line_exit_2(server, served_run):
    base, _, _ = server
    port = base.rsplit(":", 1)[1]
    busy = subprocess.run(
        [sys.executable, "-m", "mnistkit", "serve", str(served_run), "--port", port],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert busy.returncode == 2 and busy.stdout == ""
    assert busy.stderr.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr
    assert "another program is using it" in busy.stderr and "serving" not in busy.stderr
    # (a bad checkpoint is the same one line + exit 2: tested in process in test_serve.py)


def test_short_mixed_load_no_server_errors_bounded_memory(server, served_ckpt):
    """60 good requests at concurrency 8 while large PNGs, hostile JSON and trickling clients run beside them:
    every good answer is the library's, no 5xx, no traceback, peak RSS under 1 GB."""
    base, proc, log_path = server
    bodies = [
        ("png-over-pixel-limit", load_test.big_png(2100, 2100), "image/png"),
        ("png-just-under-limit", load_test.big_png(1500, 1500), "image/png"),
        ("json-30000-deep", b"[" * 30000 + b"]" * 30000, "application/json"),
        ("json-5000-digit-int", b'{"pixels": ' + b"9" * 5000 + b"}", "application/json"),
    ]
    from mnistkit.preprocess.image import load_image, preprocess_image

    want = {
        "png": expected(served_ckpt, preprocess_image(load_image(load_test.drawing_png()))),
        "json": expected(served_ckpt, np.array(load_test.GOOD_PIXELS["pixels"], np.uint8)),
    }
    stats = asyncio.run(
        asyncio.wait_for(load_test.run_mixed(base + "/predict", "mixed", 60, 8, 60, bodies, 4, want), 120)
    )
    assert stats["requests"] == 60 and stats["errors"] == 0, stats["first_errors"]
    assert stats["server_errors"] == 0 and stats["attack_server_errors"] == 0, stats["attack"]
    attack = stats["attack"]
    assert set(attack["png-over-pixel-limit"]) == {"400"} and set(attack["json-30000-deep"]) == {"422"}
    assert set(attack["png-just-under-limit"]) <= {"200", "503"}
    peak = load_test.peak_rss_mb(proc.pid)
    assert peak is not None and peak < 1024, f"server peak RSS {peak:.0f} MB"
    assert "Traceback" not in log_path.read_text()
    # and the server still answers like the library afterwards
    assert_matches_library(
        httpx.post(base + "/predict?preview=1", files={"file": ("d.png", png_bytes(drawing()), "image/png")}),
        served_ckpt,
    )
