"""Running the app as a network server: bind the port first, then announce it, then serve under
uvicorn with deadlines for slow clients (needs the ``serve`` extra).

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) but has no deadline for a
client that sends its request headers a byte at a time ("slowloris"): such connections stay
open for as long as the client likes, and enough of them exhaust the connection limit.
:class:`DeadlineH11Protocol` adds that deadline; the app itself bounds how long a body may take.

uvicorn's connection limit is for all clients together, so one client could hold every slot.
:class:`SharedH11Protocol` also caps the connections each client holds (:mod:`.shares`).
"""

from __future__ import annotations

import errno
import json
import os
import socket
from typing import ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from mnistkit.errors import ConfigError
from mnistkit.serving.limits import (
    HEADER_TIMEOUT_S,
    KEEP_ALIVE_S,
    LIMIT_CONCURRENCY,
    MAX_HEADER_BYTES,
    REFUSAL_LINGER_S,
    Limits,
)
from mnistkit.serving.shares import ClientShares, client_address


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections that do not deliver a request's headers in time.

    The timer runs whenever no request is being handled (after connecting, after each
    response) and is not reset by incoming bytes, so trickling data does not keep it alive.
    """

    header_timeout_s: float = HEADER_TIMEOUT_S
    _header_timer = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._handling_request():
            self._disarm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self._handling_request():
            self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _handling_request(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_deadline_passed)

    def _disarm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_deadline_passed(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing() and not self._handling_request():
            if self.conn.our_state in (h11.IDLE, h11.DONE):
                try:
                    self.transport.write(self.conn.send(h11.ConnectionClosed()) or b"")
                except h11.LocalProtocolError:
                    pass
            self.transport.close()


class SharedH11Protocol(DeadlineH11Protocol):
    """The deadline protocol, refusing a connection at once when its client already holds its share.

    The refusal is a 503 written before any request is read: waiting for the request would let
    the extra connection hold a server-wide slot until the header deadline. The connection is then
    half-closed and what the client sends is read and dropped for :data:`REFUSAL_LINGER_S`: closing
    with its request unread would reset the connection, and the client's kernel would drop the 503.
    """

    connection_shares: ClassVar[ClientShares] = ClientShares("open connections", 0)
    #: Refused connections still lingering; at most :data:`LIMIT_CONCURRENCY`, so refusals cannot
    #: pile up open sockets: past that, a refusal closes at once.
    lingering: ClassVar[set[SharedH11Protocol]] = set()
    _holds_share = False
    _refused = False

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if self.connection_shares.take(client_address(self.client)):
            self._holds_share = True
        else:
            self._refuse(transport)

    def data_received(self, data: bytes) -> None:
        if not self._refused:  # after a refusal, the client's request is dropped unread
            super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lingering.discard(self)
        if self._holds_share:
            self._holds_share = False
            self.connection_shares.give_back(client_address(self.client))
        super().connection_lost(exc)

    def _refuse(self, transport) -> None:
        self._refused = True
        self.connections.discard(self)  # it holds no server-wide slot either
        self._disarm_header_deadline()
        transport.write(over_share_response(self.connection_shares.refusal()))
        if len(self.lingering) >= LIMIT_CONCURRENCY or not transport.can_write_eof():
            transport.close()
            return
        try:
            transport.write_eof()
        except OSError:  # the client is gone already (it hung up before the refusal): nothing to linger for
            transport.close()
            return
        self.lingering.add(self)
        self.loop.call_later(REFUSAL_LINGER_S, transport.close)


def over_share_response(message: str) -> bytes:
    """A whole HTTP/1.1 503 with the app's ``{"error": ...}`` body, for a connection closed before its request."""
    body = json.dumps({"error": message}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; a busy port or unknown host is a one-line :class:`ConfigError`.

    Binding before saying "serving at" means the message is true when it is printed.
    """
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        hint = (
            "; another program is using it: stop it or choose another --port" if exc.errno == errno.EADDRINUSE else ""
        )
        # create_server repeats the address in strerror; name-lookup errors have their own codes
        reason = exc.strerror if isinstance(exc, socket.gaierror) or not exc.errno else os.strerror(exc.errno)
        raise ConfigError(f"cannot listen on {host}:{port}: {reason}{hint}") from None


def uvicorn_config(app, limits: Limits | None = None):
    """uvicorn settings for an untrusted network: the deadline protocol, per-client connection
    shares, and the limits of :mod:`.limits`.

    Forwarded headers are ignored (``proxy_headers=False``): the client address is what the
    per-client shares count by, and a header must not choose it.
    """
    import uvicorn

    limits = limits or Limits()
    settings = {
        "header_timeout_s": limits.header_timeout_s,
        "connection_shares": ClientShares("open connections", limits.client_connections),
        "lingering": set(),
    }
    return uvicorn.Config(
        app,
        http=type("SharedH11Protocol", (SharedH11Protocol,), settings),
        timeout_keep_alive=KEEP_ALIVE_S,
        limit_concurrency=LIMIT_CONCURRENCY,
        proxy_headers=False,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        lifespan="off",
        log_level="warning",
        access_log=False,
        server_header=False,
    )


def serve_forever(app, sock: socket.socket, limits: Limits | None = None) -> None:
    """Serve ``app`` on the already-bound ``sock`` until Ctrl+C or SIGTERM."""
    import uvicorn

    uvicorn.Server(uvicorn_config(app, limits)).run(sockets=[sock])
