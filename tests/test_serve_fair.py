"""``mnistkit serve`` shares itself fairly: one client holding its whole share of connections and
requests (slow bodies, slow headers) leaves ``/healthz`` and other clients served. Also ``HEAD``
answered as ``GET`` without a body, and a model answering NaN as a JSON error that names it.

The server is a real uvicorn process on 127.0.0.1. Clients are told apart by source address, so
the "other client" connects from 127.0.0.2 (Linux routes all of 127.0.0.0/8 on the loopback
interface). Every loop here ends by itself: on an event, or at a deadline.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import socket
import sys
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from conftest import REPO  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from helpers import require_or_skip, stop_process  # noqa: E402
from serve_helpers import TIMEOUT_S, assert_matches_library, drawing, png_bytes  # noqa: E402

from mnistkit.serving.app import create_app, public_metadata  # noqa: E402
from mnistkit.serving.limits import CLIENT_CONNECTIONS, CLIENT_REQUESTS  # noqa: E402
from mnistkit.serving.shares import client_address  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
import load_test  # noqa: E402

#: The attacker's address (the default source on loopback) and two others, each its own client.
ATTACKER, OTHER, THIRD = "127.0.0.1", "127.0.0.2", "127.0.0.3"
#: A POST whose 1,000-byte body then arrives a byte at a time.
SLOW_BODY_HEAD = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n"
SLOW_HEADER_HEAD = b"POST /predict HTTP/1.1\r\nHost: x\r\n"


@pytest.fixture(scope="module")
def server(served_run, tmp_path_factory):
    """``mnistkit serve`` with the default shares and a 1 s request timeout; yields (host, port)."""
    for address in (OTHER, THIRD):
        try:
            with socket.socket() as s:
                s.bind((address, 0))
        except OSError:
            require_or_skip(f"{address} is not usable as a source address (Linux routes 127.0.0.0/8 on lo)")
    port = load_test.free_port()
    log_path = tmp_path_factory.mktemp("log") / "serve.log"
    with open(log_path, "wb") as log:
        proc = load_test.start_server(served_run, port, log, ("--request-timeout", str(TIMEOUT_S)))
    try:
        yield ATTACKER, port
    finally:
        stop_process(proc)
        assert "Traceback" not in log_path.read_text()


def strict_json(text: str):
    """JSON as the standard has it: NaN and Infinity are refused, as a browser's JSON.parse does."""

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


async def _open(port: int, source: str, first: bytes = b""):
    reader, writer = await asyncio.open_connection(ATTACKER, port, local_addr=(source, 0))
    if first:
        writer.write(first)
    return reader, writer


async def _drip(reader, writer, stop: asyncio.Event, every_s: float = 0.1) -> bytes:
    """Send a byte every ``every_s`` until the server answers or closes, or ``stop``; what it sent back."""
    answer = b""
    try:
        while not stop.is_set():
            writer.write(b"a")
            await writer.drain()
            try:
                chunk = await asyncio.wait_for(reader.read(4096), every_s)
            except asyncio.TimeoutError:
                continue
            if not chunk:
                break
            answer += chunk
    except OSError:  # reset by the server: refused, or closed while we still wrote
        pass
    writer.close()
    return answer


async def hostile_client(port: int, stop: asyncio.Event, seen: collections.Counter, head: bytes) -> None:
    """One connection at a time that sends ``head`` and then drips bytes, reconnecting after each answer."""
    while not stop.is_set():
        try:
            reader, writer = await _open(port, ATTACKER, head)
        except OSError:
            seen["connect failed"] += 1
            await asyncio.sleep(0.05)
            continue
        answer = await _drip(reader, writer, stop)
        seen[answer[9:12].decode() or "closed"] += 1


#: Waits for an event are this many times what a quiet machine needs: the suite runs beside other
#: work (two pytest workers, busy cores), and a wait that ends on its event costs nothing extra.
SLACK = 3
#: How long a connection waits for a refusal that comes "at once" (a loaded server answers late).
REFUSAL_S = 0.5


async def refused_at_connect(port: int, source: str) -> bytes:
    """What a connection from ``source`` that sends nothing gets within a second: a refusal comes at once."""
    reader, writer = await _open(port, source)
    try:
        return await asyncio.wait_for(reader.read(4096), REFUSAL_S)
    except (asyncio.TimeoutError, OSError):
        return b""
    finally:
        writer.close()


async def wait_for(condition, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not await condition():
        assert time.monotonic() < deadline, f"not within {limit_s:g} s: {what}"
        await asyncio.sleep(0.05)


@pytest.mark.slow
def test_a_client_holding_its_whole_share_leaves_healthz_and_other_clients_served(server, served_ckpt):
    """Row 9: 64 connections from one address, dripping bodies (and headers), reconnecting after each
    408 or 503. Once that client's share is full, another address still gets every /healthz and
    every /predict answered; the attacker's slow bodies still end in 408 (the deadline is kept)."""
    host, port = server
    base = f"http://{host}:{port}"
    drawn = png_bytes(drawing())

    async def scenario():
        stop, seen = asyncio.Event(), collections.Counter()
        heads = [SLOW_BODY_HEAD] * 48 + [SLOW_HEADER_HEAD] * 16
        attack = [asyncio.create_task(hostile_client(port, stop, seen, head)) for head in heads]

        async def share_full() -> bool:
            return b"too many open connections" in await refused_at_connect(port, ATTACKER)

        try:
            await wait_for(share_full, 10 * SLACK, "the attacker fills its share of connections")
            transport = httpx.AsyncHTTPTransport(local_address=OTHER)
            async with httpx.AsyncClient(transport=transport, base_url=base, timeout=10) as other:
                health = [await other.get("/healthz") for _ in range(20)]
                answers = [
                    await other.post("/predict?preview=1", files={"file": ("d.png", drawn, "image/png")})
                    for _ in range(5)
                ]
                answers += [await other.post("/predict", json=load_test.GOOD_PIXELS) for _ in range(5)]

            async def slow_bodies_timed_out() -> bool:
                return seen["408"] > 0

            await wait_for(slow_bodies_timed_out, 10 * TIMEOUT_S, "a dripping body gets 408")
            # and the attacker still fills its share (its connections come and go: ask until one is refused)
            await wait_for(share_full, 10 * SLACK, "the attacker still fills its share")
        finally:
            stop.set()
            await asyncio.gather(*attack)
        return health, answers, seen

    health, answers, seen = asyncio.run(asyncio.wait_for(scenario(), 60 * SLACK))
    assert [r.status_code for r in health] == [200] * 20, [r.text for r in health if r.status_code != 200]
    for r in answers:
        assert r.status_code == 200, r.text
        assert_matches_library(
            r, served_ckpt, np.array(r.json().get("preview", load_test.GOOD_PIXELS["pixels"]), np.uint8)
        )
    assert seen["408"] > 0 and seen["503"] > 0, seen
    # the share comes back once the attacker has gone
    with httpx.Client(base_url=base, timeout=10) as same_address:
        deadline = time.monotonic() + 10
        while (r := same_address.get("/healthz")).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.status_code == 200


@pytest.mark.slow
def test_a_connection_over_the_share_is_refused_at_once_and_the_share_comes_back(server):
    """A client with its whole share of connections open: the next one from it is a JSON 503 and closed
    at once (it holds no slot until a deadline); another address is served; closing one gives a slot back."""
    _, port = server

    async def scenario():
        held = [await _open(port, THIRD) for _ in range(CLIENT_CONNECTIONS)]
        try:
            # each connection is answered only after its predecessors were accepted: ask one of them
            held[-1][1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            first = await asyncio.wait_for(held[-1][0].read(4096), 5)
            refused = await refused_at_connect(port, THIRD)
            other = await refused_at_connect(port, OTHER)
            # a client that sends its request at once still reads the 503 (no reset drops it)
            reader, writer = await _open(port, THIRD, b"POST /predict HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 500)
            eager = await asyncio.wait_for(reader.read(), 5)
            writer.close()
        finally:
            for _, writer in held:
                writer.close()

        async def share_back() -> bool:
            return await refused_at_connect(port, THIRD) == b""

        await wait_for(share_back, 5 * SLACK, "closed connections give their share back")
        return first, refused, other, eager

    first, refused, other, eager = asyncio.run(asyncio.wait_for(scenario(), 30 * SLACK))
    assert first.startswith(b"HTTP/1.1 200")
    head, _, body = refused.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503") and b"connection: close" in head and b"retry-after: 1" in head
    assert strict_json(body.decode()) == {
        "error": f"too many open connections from your address (at most {CLIENT_CONNECTIONS} at once); "
        "retry in a moment"
    }
    assert other == b""  # another client's new connection waits for its request, as usual
    assert eager == refused


@pytest.mark.slow
def test_requests_in_progress_are_capped_per_client(server):
    """A client with CLIENT_REQUESTS slow bodies in progress gets 503 for one more /predict at once, while
    its /healthz and another client's /predict are answered; the slow bodies still end in 408."""
    host, port = server
    pixels = json.dumps(load_test.GOOD_PIXELS).encode()
    post = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n"
    )

    async def scenario():
        stop = asyncio.Event()
        slow = [await _open(port, THIRD, SLOW_BODY_HEAD) for _ in range(CLIENT_REQUESTS)]
        drips = [asyncio.create_task(_drip(r, w, stop)) for r, w in slow]
        try:
            async with httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(local_address=THIRD), base_url=f"http://{host}:{port}", timeout=5
            ) as third:

                async def all_in_progress() -> bool:
                    r = await third.post("/predict", content=pixels, headers={"Content-Type": "application/json"})
                    return r.status_code == 503

                await wait_for(all_in_progress, 5 * SLACK, "the slow bodies count as requests in progress")
                over = await third.post("/predict", content=pixels, headers={"Content-Type": "application/json"})
                health = await third.get("/healthz")
            reader, writer = await _open(port, OTHER, post % len(pixels) + pixels)
            other = await asyncio.wait_for(reader.read(), 10)  # to the end: the server closes after answering
            writer.close()
            timed_out = await asyncio.wait_for(asyncio.gather(*drips), 10 * TIMEOUT_S)
        finally:
            stop.set()
            await asyncio.gather(*drips)
        return over, health, other, timed_out

    over, health, other, timed_out = asyncio.run(asyncio.wait_for(scenario(), 30 * SLACK))
    assert over.status_code == 503 and over.headers["retry-after"] == "1" and over.headers["connection"] == "close"
    assert over.json()["error"].startswith(
        f"too many requests in progress from your address (at most {CLIENT_REQUESTS}"
    )
    assert health.status_code == 200
    assert other.startswith(b"HTTP/1.1 200") and b'"label"' in other
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in timed_out), timed_out


def test_clients_are_told_apart_by_address_and_ipv6_by_its_64_network():
    """One IPv6 subscriber holds a whole /64: its addresses share one share; IPv4 addresses are their own."""
    assert client_address(("127.0.0.1", 5000)) == client_address(("127.0.0.1", 6000)) == "127.0.0.1"
    assert client_address(("127.0.0.2", 5000)) != client_address(("127.0.0.1", 5000))
    assert client_address(("::ffff:192.0.2.7", 1)) == "192.0.2.7"
    assert client_address(("2001:db8:1:2::1", 1)) == client_address(("2001:db8:1:2:ffff::9", 1)) == "2001:db8:1:2::/64"
    assert client_address(("2001:db8:1:3::1", 1)) != client_address(("2001:db8:1:2::1", 1))
    assert client_address(None) == "" and client_address(("testclient", 50000)) == "testclient"


@pytest.mark.slow
def test_head_answers_like_get_without_a_body(server):
    """HEAD on the page and the JSON routes: GET's status and headers (Content-Length included), no body.
    Two requests on one connection show it: the second response follows the first's headers directly."""
    host, port = server
    with httpx.Client(base_url=f"http://{host}:{port}", timeout=10) as client:
        for path in ("/", "/healthz", "/model", "/docs"):
            get = client.get(path)
            head = client.head(path)
            assert head.status_code == get.status_code == 200, path
            assert head.headers["content-length"] == str(len(get.content)), path
            assert head.headers["content-type"] == get.headers["content-type"], path
        assert client.head("/predict").status_code == client.get("/predict").status_code == 405
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    first, _, rest = answer.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200") and b"content-length: " in first
    assert rest.startswith(b"HTTP/1.1 200") and rest.endswith(b'"status":"ok","model":"logreg"}')


def test_a_model_answering_nan_gets_a_json_error_naming_it_and_the_server_stays_up():
    """A model that answers NaN (its weights broken after loading, past any checkpoint check): /predict is
    a 500 with valid JSON that says why, not an opaque 'internal error'; /healthz and /model still answer."""
    import torch

    with TestClient(create_app()) as client:  # the bundled model: no training needed
        with torch.no_grad():
            for p in client.app.state.checkpoint.model.parameters():
                p.fill_(float("nan"))
        r = client.post("/predict", json=load_test.GOOD_PIXELS)
        assert r.status_code == 500
        error = strict_json(r.text)["error"]
        assert error.startswith("the model gave a non-finite probability (nan) for this input")
        assert "checkpoint is broken" in error
        assert client.get("/healthz").status_code == 200
        strict_json(client.get("/model").text)


def test_model_metadata_with_nan_is_served_as_null():
    """A diverged run records a NaN loss; /model shows it as null, valid JSON, paths still cut."""
    meta = {"metrics": {"val_loss": math.nan, "best": [math.inf, -math.inf, 0.5]}, "out": "/srv/runs/a"}
    public = public_metadata(meta)
    assert public == {"metrics": {"val_loss": None, "best": [None, None, 0.5]}, "out": "a"}
    assert strict_json(json.dumps(public)) == public


def test_a_refusal_to_a_client_already_gone_closes_quietly():
    """A client over its share that hangs up at once: the refusal's half-close finds no peer
    (ENOTCONN), and the connection is closed without an exception in the server's loop."""
    from mnistkit.serving.server import SharedH11Protocol
    from mnistkit.serving.shares import ClientShares

    class GoneTransport:
        closed = False
        written = b""

        def write(self, data):
            self.written += data

        def can_write_eof(self):
            return True

        def write_eof(self):
            raise OSError(107, "Transport endpoint is not connected")

        def close(self):
            self.closed = True

    protocol = SharedH11Protocol.__new__(SharedH11Protocol)
    protocol.connections = set()
    protocol.connection_shares = ClientShares("open connections", 1)
    protocol.lingering = set()
    protocol._disarm_header_deadline = lambda: None
    transport = GoneTransport()
    protocol._refuse(transport)
    assert transport.closed and transport.written.startswith(b"HTTP/1.1 503")
    assert protocol not in protocol.lingering
