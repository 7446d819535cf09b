"""A TCP relay in a thread: connections to one local address are passed on to another.

The compose test needs it: containers on a Docker network reach the host at its bridge address,
while the test's vLLM server listens on the host's loopback only.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from collections.abc import Iterator


class _Relay(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.target = target
        self.open: set[socket.socket] = set()
        super().__init__(listen, _Pipe)


class _Pipe(socketserver.BaseRequestHandler):
    server: _Relay

    def handle(self) -> None:
        try:
            upstream = socket.create_connection(self.server.target, timeout=10)
        except OSError:
            return
        upstream.settimeout(None)
        self.server.open |= {self.request, upstream}
        back = threading.Thread(target=_copy, args=(upstream, self.request), daemon=True)
        back.start()
        _copy(self.request, upstream)
        back.join()
        for sock in (self.request, upstream):
            self.server.open.discard(sock)
            sock.close()


def _copy(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def tcp_relay(host: str, target: tuple[str, int]) -> Iterator[_Relay]:
    """Relay connections to `host` (a free port: `relay.server_address[1]`) to `target`."""
    relay = _Relay((host, 0), target)
    thread = threading.Thread(target=relay.serve_forever, daemon=True)
    thread.start()
    try:
        yield relay
    finally:
        relay.shutdown()
        relay.server_close()
        for sock in list(relay.open):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        thread.join(10)
