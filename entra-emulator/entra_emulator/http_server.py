"""The emulator's HTTP server: werkzeug's threaded WSGI server with HTTP/1.1 keep-alive, the
TLS handshake on each connection's own thread, and a log line without query strings.

It knows nothing of Entra; server.py runs the emulator's app on it (and bench/ runs a bare
Flask app on it, as a baseline for the same server).
"""

from __future__ import annotations

import contextlib
import errno
import socket
import ssl
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.exceptions import InternalServerError
from werkzeug.serving import (
    BaseWSGIServer,
    WSGIRequestHandler,
    connection_dropped_errors,
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
    request would pay a TLS handshake. For the same reason `run_wsgi` is our own (see there).
    """

    # A buffered wfile: the status line and headers wait for the body, so a response leaves
    # in one TLS record and one send instead of two (each send is a system call and a wake-up
    # of the client). _Response flushes after each piece of body, so streaming still streams.
    wbufsize = RESPONSE_BUFFER_BYTES
    disable_nagle_algorithm = True   # a flush goes out at once
    timeout = KEEP_ALIVE_IDLE_SECONDS

    def setup(self) -> None:
        super().setup()
        self.rfile = _RequestInput(self.rfile)  # type: ignore[assignment]
        self._keep_alive = False
        self.server.open_connections.add(self.connection)  # type: ignore[attr-defined]

    def handle(self) -> None:
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.do_handshake()
            except (OSError, ValueError):
                return   # not TLS, or the client went away: nothing to answer
        super().handle()

    def finish(self) -> None:
        self.server.open_connections.discard(self.connection)  # type: ignore[attr-defined]
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

    def run_wsgi(self) -> None:
        """Run the app for this request and send its answer.

        werkzeug's own run_wsgi is written for a connection it closes after each response: it
        sends `Connection: close`, then reads whatever the client sends for up to 10 ms to
        drain the socket. On a kept-alive connection that is the next request (_RequestInput
        keeps it from being read), and the drain still costs a selector and four system calls
        per request, each handing the GIL to another request's thread. Here the connection
        stays open unless the request or an error says otherwise, and handle_one_request skips
        a body the app left unread.
        """
        if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.wfile.flush()   # the client waits for it before sending the body
        self.environ = environ = self.make_environ()
        if not self._keep_alive:
            self.close_connection = True
        response = _Response(self, environ)
        try:
            response.run(self.server.app)
        except connection_dropped_errors as error:
            self.close_connection = True
            self.connection_dropped(error, environ)
        except Exception:
            if self.server.passthrough_errors:
                raise
            self.close_connection = True
            self.server.log("error", "Error on request:\n%s", traceback.format_exc())
            if not response.started:   # else the client gets a cut answer and a closed line
                with contextlib.suppress(OSError):   # the connection is closing anyway
                    _Response(self, environ).run(InternalServerError())

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Method, path and status only: query strings can carry id_token_hint, codes and
        # state, which must never reach a log.
        path = self.path.split("?", 1)[0]
        self.log("info", '"%s %s" %s', self.command, path, code)


class _Response:
    """One WSGI response on a kept-alive connection: the status line and headers before the
    first piece of body, `Content-Length` from the app or else chunked encoding, and
    `Connection: close` only when the connection is to close."""

    def __init__(self, handler: EmulatorRequestHandler, environ: dict[str, Any]) -> None:
        self.handler = handler
        self.environ = environ
        self.status = ""
        self.headers: list[tuple[str, str]] = []
        self.started = False
        self.chunked = False

    def run(self, app: Callable[..., Iterable[bytes]]) -> None:
        body = app(self.environ, self.start_response)
        try:
            for data in body:
                self.write(data)
            if not self.started:
                self.write(b"")
            if self.chunked:
                self.handler.wfile.write(b"0\r\n\r\n")
                self.handler.wfile.flush()
        finally:
            if hasattr(body, "close"):
                body.close()

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.started:   # PEP 3333: too late to change the answer
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status:
            raise AssertionError("start_response was called twice")
        self.status, self.headers = status, headers
        return self.write

    def write(self, data: bytes) -> None:
        if not self.started:
            self._send_head()
        wfile = self.handler.wfile
        if data:
            if self.chunked:
                wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                wfile.write(data)
        wfile.flush()

    def _send_head(self) -> None:
        self.started = True
        handler = self.handler
        code, _, reason = self.status.partition(" ")
        status = int(code)
        handler.send_response(status, reason)
        names = set()
        for name, value in self.headers:
            handler.send_header(name, value)
            names.add(name.lower())
        # RFC 9112 §6.3: without a length the body ends at a chunk of size 0 (or the close).
        if not ("content-length" in names or self.environ["REQUEST_METHOD"] == "HEAD"
                or 100 <= status < 200 or status in (204, 304)):
            self.chunked = True
            handler.send_header("Transfer-Encoding", "chunked")
        if handler.close_connection:
            handler.send_header("Connection", "close")
        handler.end_headers()


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
