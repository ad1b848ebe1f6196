"""Each client's share of the server: how many connections and requests one source address holds.

The server-wide limit (:data:`~mnistkit.serving.limits.LIMIT_CONCURRENCY`) alone lets one client
take every slot with slow connections, and then ``/healthz`` and everyone else get 503. A share per
client caps what one address may hold, so a slow or hostile client exhausts its own share first.

A client is its TCP peer address, never a header: any process that can connect could write a
header, so it must not choose whose share a connection counts against. Behind a reverse proxy every
request comes from the proxy's address, so there the proxy is one client.
"""

from __future__ import annotations

import collections
import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager

from mnistkit.serving.bodies import ApiError


class ClientShares:
    """Counts what each client holds (connections or requests) against ``per_client`` (0: no limit).

    Touched only on the event loop's thread, so it needs no lock.
    """

    def __init__(self, what: str, per_client: int):
        self.what = what
        self.per_client = per_client
        self.held: collections.Counter[str] = collections.Counter()

    def take(self, client: str) -> bool:
        """Count one more for ``client``; False (and nothing counted) when its share is full."""
        if self.per_client and self.held[client] >= self.per_client:
            return False
        self.held[client] += 1
        return True

    def give_back(self, client: str) -> None:
        self.held[client] -= 1
        if self.held[client] <= 0:
            del self.held[client]  # the counter holds only clients with something open

    def refusal(self) -> str:
        """The message a client over its share gets."""
        return f"too many {self.what} from your address (at most {self.per_client} at once); retry in a moment"

    @contextmanager
    def hold(self, client: str) -> Iterator[None]:
        """Hold one for ``client`` while the block runs; over its share: :class:`ApiError` 503 at once.

        The 503 closes the connection: the request's body is still unread.
        """
        if not self.take(client):
            raise ApiError(503, self.refusal(), {"Retry-After": "1", "Connection": "close"})
        try:
            yield
        finally:
            self.give_back(client)


def client_address(client: tuple[str, int] | None) -> str:
    """The key of a client's share, from an ASGI ``client`` / uvicorn peer ``(host, port)``.

    An IPv4 address is itself (also when IPv4-mapped, ``::ffff:a.b.c.d``); an IPv6 address counts
    as its /64 network, since one subscriber usually holds a whole /64 and could otherwise take a
    fresh share per address. Unix sockets (no peer) are "".
    """
    if not client:
        return ""
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:  # not an IP address (a test client's name): itself
        return client[0]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
