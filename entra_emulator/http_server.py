"""The emulator's HTTP server: werkzeug's threaded WSGI server with HTTP/1.1 keep-alive, the
TLS handshake on each connection's own thread, and a log line without query strings.

It knows nothing of Entra; server.py runs the emulator's app on it (and bench/ runs a bare
Flask app on it, as a baseline for the same server).
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.serving import (
    BaseWSGIServer,
    WSGIRequestHandler,
    get_sockaddr,
    make_server,
    select_address_family,
)

# An idle keep-alive connection is closed after this long (its thread waits meanwhile).
KEEP_ALIVE_IDLE_SECONDS = 75
MAX_BODY_TO_SKIP_BYTES = 1024 * 1024
RESPONSE_BUFFER_BYTES = 64 * 1024


class PortInUseError(OSError):
    """The port asked for is taken (the message names it)."""


class _RequestInput:
    """The connection's input stream. While a request is handled, `read` stops at the end of
    its body, so nothing past it (the next request on the connection) is ever consumed."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.remaining: int | None = None   # unread body bytes; None between requests

    def readline(self, size: int = -1) -> bytes:
        return self._stream.readline(size)

    def read(self, size: int | None = -1) -> bytes:
        if self.remaining is None:
            return self._stream.read(size)
        if size is None or size < 0 or size > self.remaining:
            size = self.remaining
        data = self._stream.read(size) if size else b""
        self.remaining -= len(data)
        return data

    def close(self) -> None:
        self._stream.close()

    @property
    def closed(self) -> bool:
        return self._stream.closed


class EmulatorRequestHandler(WSGIRequestHandler):
    """werkzeug's handler, with HTTP/1.1 keep-alive and a log line without query strings.

    werkzeug closes every connection because http.server cannot tell where a request body
    ends; here the body is bounded by Content-Length (chunked requests still close), so
    clients reuse their TLS connections, as they do with Entra. Without that, every token
    request would pay a TLS handshake.
    """

    # A buffered wfile: werkzeug writes the status line and headers, then the body, then
    # flushes, so a response leaves in one TLS record and one send instead of two (each send
    # is a system call and a wake-up of the client). Bigger responses are written as they come.
    wbufsize = RESPONSE_BUFFER_BYTES
    disable_nagle_algorithm = True   # the flush goes out at once
    timeout = KEEP_ALIVE_IDLE_SECONDS

    def setup(self) -> None:
        super().setup()
        self.rfile = _RequestInput(self.rfile)  # type: ignore[assignment]
        self._keep_alive = False
        connections = getattr(self.server, "open_connections", None)
        if connections is not None:
            connections.add(self.connection)

    def handle(self) -> None:
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.do_handshake()
            except (OSError, ValueError):
                return   # not TLS, or the client went away: nothing to answer
        super().handle()

    def finish(self) -> None:
        connections = getattr(self.server, "open_connections", None)
        if connections is not None:
            connections.discard(self.connection)
        super().finish()

    def handle_one_request(self) -> None:
        self._keep_alive = False
        self.rfile.remaining = None  # type: ignore[attr-defined]
        super().handle_one_request()
        unread = self.rfile.remaining or 0  # type: ignore[attr-defined]
        if unread:
            # The app answered without reading the whole body: skip the rest, unless it is
            # too big to be worth it, then close instead.
            if self.close_connection or unread > MAX_BODY_TO_SKIP_BYTES:
                self.close_connection = True
            else:
                try:
                    skipped = len(self.rfile.read(unread))
                except OSError:
                    skipped = 0
                self.close_connection = skipped < unread
        self.rfile.remaining = None  # type: ignore[attr-defined]

    def make_environ(self) -> dict[str, Any]:
        # werkzeug has just written "100 Continue" if the client asked for it; the client
        # waits for it before sending the body, so it cannot wait in the buffer.
        self.wfile.flush()
        environ = super().make_environ()
        chunked = bool(environ.get("wsgi.input_terminated"))
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        self._keep_alive = self.request_version == "HTTP/1.1" and not chunked and length >= 0
        if not chunked:
            self.rfile.remaining = max(length, 0)  # type: ignore[attr-defined]
        return environ

    def send_header(self, keyword: str, value: str) -> None:
        if (keyword.lower() == "connection" and value.lower() == "close"
                and self._keep_alive and not self.close_connection):
            return
        super().send_header(keyword, value)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Method, path and status only: query strings can carry id_token_hint, codes and
        # state, which must never reach a log.
        path = self.path.split("?", 1)[0]
        self.log("info", '"%s %s" %s', self.command, path, code)


def listen(host: str, port: int, app: Callable[..., Iterable[bytes]],
           context: ssl.SSLContext | None) -> BaseWSGIServer:
    """A threaded server for `app` on host:port (0 picks a free port), https when `context`
    is given. Call its `serve_forever()` to serve."""
    # We bind the socket ourselves: werkzeug answers a taken port with sys.exit(1).
    family = select_address_family(host, port)
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(get_sockaddr(host, port, family))
        listener.listen(128)
        server = make_server(host, port, app, threaded=True,
                             request_handler=EmulatorRequestHandler, fd=listener.fileno())
    except OSError as problem:
        if problem.errno == errno.EADDRINUSE:
            raise PortInUseError(problem.errno, f"port {port} on {host} is already in use; "
                                 "stop what uses it or choose another port "
                                 "(0 picks a free one)") from None
        raise
    finally:
        listener.close()   # the server holds its own duplicate of the socket
    if context is not None:
        # werkzeug would wrap with the TLS handshake inside accept(), on the one thread that
        # accepts: a client that connects and says nothing would stall every other client.
        # Here each connection's handshake runs on its own handler thread.
        server.socket = context.wrap_socket(server.socket, server_side=True,
                                            do_handshake_on_connect=False)
        server.ssl_context = context
    server.open_connections = set()  # type: ignore[attr-defined]
    return server
