"""The emulator's HTTP server: cheroot, CherryPy's WSGI server, used through its public API.

What it gives: HTTP/1.1 keep-alive, a fixed pool of worker threads (a connection holds a thread
only while a request is being read or answered; idle kept-alive connections wait in one
selector), and TLS through its SSL adapter interface.

Two things are our own, both through cheroot's public extension points, both so that a client
that connects and says nothing stalls nobody:

- the TLS adapter (cheroot.ssl.Adapter) below: cheroot's builtin adapter runs the handshake
  inside accept(), on the one thread that accepts, so one silent client would stall every
  other until it times out. Ours wraps the socket without a handshake; the handshake runs on
  a worker thread when the client's first bytes arrive (within HANDSHAKE_SECONDS).
- `process_conn`: cheroot hands a new connection to a worker thread at once, where it waits
  for its first request; as many silent connections as threads would hold them all. Ours
  first puts a new connection in the selector where kept-alive connections wait (`put_conn`),
  so it holds a thread only once it has sent something. Idle connections are closed after
  CONNECTION_TIMEOUT_SECONDS either way.
- a deadline per request (`_DeadlineStream`, through the adapter's `makefile` and cheroot's
  `ConnectionClass`): its line, headers and body must arrive within REQUEST_SECONDS of its first
  byte. cheroot's timeout bounds each read only, so a client sending a byte every few seconds
  would hold a thread for as long as it likes.

It knows nothing of Entra; server.py runs the emulator's app on it (and bench/ runs a bare
Flask app on it, as a baseline for the same server).
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from typing import Any

from cheroot import errors as cheroot_errors
from cheroot.makefile import MakeFile, StreamReader, StreamWriter
from cheroot.server import HTTPConnection
from cheroot.ssl import Adapter
from cheroot.wsgi import Server as WSGIServer

# Requests answered at once per port and process; more wait in the queue. Idle and silent
# connections hold none. Few, because the requests share one GIL: with 16 threads, 8 clients
# refreshing at once cost 3.3-3.5 ms of CPU per refresh, with 4 threads 2.6-2.9 ms, with 2
# 2.3-2.5 ms (bench/README.md); 4 leaves room for a slow request (a delay fault, a half-sent
# body) without stalling the rest. More cores: `serve --workers N`.
THREADS = 4
# A connection idle this long (between requests, or mid-request) is closed.
CONNECTION_TIMEOUT_SECONDS = 30
# Idle kept-alive connections held at once; past it, answers close their connection.
MAX_KEEP_ALIVE_CONNECTIONS = 256
LISTEN_BACKLOG = 1024
MAX_HEADER_BYTES = 1024 * 1024
# A TLS client that has begun its handshake has this long to finish it.
HANDSHAKE_SECONDS = 10
# A request (line, headers, body) must arrive within this long of its first byte; a slower one
# is answered 408 (or, cut off mid-body, not at all) and its connection closed.
REQUEST_SECONDS = 10
# How long stop() waits for requests in progress.
SHUTDOWN_SECONDS = 5
Application = Callable[..., Iterable[bytes]]


class PortInUseError(OSError):
    """The port asked for is taken (the message names it)."""


class _DeadlineStream(socket.SocketIO):
    """The raw stream of a connection: the reads of one request end by REQUEST_SECONDS after
    its first read (`new_request()` starts the next request's clock). Past it a read raises
    the timeout cheroot answers with 408 and a closed connection."""

    def __init__(self, sock: socket.socket, mode: str) -> None:
        super().__init__(sock, mode)
        self._socket = sock
        self._deadline: float | None = None

    def new_request(self) -> None:
        self._deadline = None

    def readinto(self, buffer: Any) -> int | None:
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + REQUEST_SECONDS
        left = self._deadline - now
        if left <= 0:
            raise TimeoutError("timed out")   # the text cheroot looks for
        self._socket.settimeout(min(left, CONNECTION_TIMEOUT_SECONDS))
        try:
            return super().readinto(buffer)
        finally:   # writes keep the connection's own timeout
            self._socket.settimeout(CONNECTION_TIMEOUT_SECONDS)


class _HandshakeOnFirstRead(_DeadlineStream):
    """The raw stream of a TLS connection whose handshake has not run: the first read runs it,
    on the worker thread that reads. A failed handshake (plain HTTP, a client gone, a timeout)
    is cheroot's FatalSSLAlert, which closes the connection without an answer."""

    def __init__(self, sock: ssl.SSLSocket, mode: str) -> None:
        super().__init__(sock, mode)
        self._tls = sock
        self._handshake_done = False

    def readinto(self, buffer: Any) -> int | None:
        if not self._handshake_done:
            timeout = self._tls.gettimeout()
            try:
                self._tls.settimeout(HANDSHAKE_SECONDS)
                self._tls.do_handshake()
            except (OSError, ValueError) as problem:
                raise cheroot_errors.FatalSSLAlert(str(problem)) from None
            finally:
                self._tls.settimeout(timeout)
            self._handshake_done = True
        return super().readinto(buffer)


class _Reader(StreamReader):
    def __init__(self, raw: _DeadlineStream, bufsize: int = -1) -> None:
        # cheroot's StreamReader, over one of the raw streams above instead of a SocketIO.
        super(StreamReader, self).__init__(raw, bufsize if bufsize > 0 else 8192)
        self.bytes_read = 0


def _makefile(sock: Any, mode: str = "r", bufsize: int = -1) -> Any:
    """cheroot's makefile for a connection, reading through the streams above."""
    if "r" in mode:
        raw = _HandshakeOnFirstRead(sock, mode) if isinstance(sock, ssl.SSLSocket) \
            else _DeadlineStream(sock, mode)
        return _Reader(raw, bufsize)
    return StreamWriter(sock, mode, bufsize if bufsize > 0 else 8192)


class DeferredHandshakeTLS(Adapter):
    """A cheroot SSL adapter for an ssl.SSLContext, with the handshake off the accept thread."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(None, None)
        self.context = context

    def bind(self, sock: socket.socket) -> socket.socket:
        return sock

    def wrap(self, sock: socket.socket) -> tuple[ssl.SSLSocket, dict[str, str]]:
        wrapped = self.context.wrap_socket(sock, server_side=True,
                                           do_handshake_on_connect=False)
        return wrapped, self.get_environ()

    def get_environ(self, sock: Any = None) -> dict[str, str]:
        return {"wsgi.url_scheme": "https", "HTTPS": "on"}

    def makefile(self, sock: Any, mode: str = "r", bufsize: int = -1) -> Any:
        return _makefile(sock, mode, bufsize)


class _Connection(HTTPConnection):
    """cheroot's connection; a plain one also reads through a deadline stream."""

    def __init__(self, server: Any, sock: Any, makefile: Any = MakeFile) -> None:
        super().__init__(server, sock, _makefile if makefile is MakeFile else makefile)


class _Server(WSGIServer):
    """cheroot's WSGI server; a new connection waits in the selector for its first bytes, and
    each request's reads have a deadline."""

    ConnectionClass = _Connection

    def process_conn(self, conn: Any) -> None:
        if not getattr(conn, "entra_emulator_waited", False):
            conn.entra_emulator_waited = True
            self.put_conn(conn)   # back here, to a worker thread, once it is readable
            return
        conn.rfile.raw.new_request()   # a worker thread reads the next request now
        super().process_conn(conn)


class HTTPServer:
    """One listening port served by cheroot. `listen()` makes one; `serve_forever()` serves
    (on the calling thread) until `shutdown()`."""

    def __init__(self, server: _Server) -> None:
        self._server = server

    @property
    def port(self) -> int:
        return int(self._server.bind_addr[1])

    @property
    def server_address(self) -> tuple[str, int]:
        return self._server.bind_addr[0], self.port

    @property
    def app(self) -> Application:
        return self._server.wsgi_app

    @app.setter
    def app(self, app: Application) -> None:
        self._server.wsgi_app = app

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._server.expiration_interval = poll_interval
        self._server.serve()

    def shutdown(self) -> None:
        """Stop accepting, finish the requests in progress, close every connection."""
        if self._server.ready:
            self._server.stop()

    server_close = shutdown


def listen(host: str, port: int, app: Application, context: ssl.SSLContext | None, *,
           reuse_port: bool = False, threads: int = THREADS) -> HTTPServer:
    """A server for `app` on host:port (0 picks a free port), https when `context` is given,
    bound and listening on return. `reuse_port`: several processes may listen on the port
    (SO_REUSEPORT; the kernel spreads connections over them)."""
    server = _Server((bind_address(host), port), app, numthreads=threads, server_name=host,
                        request_queue_size=LISTEN_BACKLOG, timeout=CONNECTION_TIMEOUT_SECONDS,
                        shutdown_timeout=SHUTDOWN_SECONDS, reuse_port=reuse_port)
    server.keep_alive_conn_limit = MAX_KEEP_ALIVE_CONNECTIONS
    server.max_request_header_size = MAX_HEADER_BYTES
    server.software = "entra-emulator"
    if context is not None:
        server.ssl_adapter = DeferredHandshakeTLS(context)
    try:
        server.prepare()
    except OSError as problem:
        # cheroot reports every bind failure as one message; name a taken port plainly.
        if os.strerror(errno.EADDRINUSE) in str(problem):
            raise PortInUseError(errno.EADDRINUSE, f"port {port} on {host} is already in use; "
                                 "stop what uses it or choose another port "
                                 "(0 picks a free one)") from None
        raise
    return HTTPServer(server)


def bind_address(host: str) -> str:
    """The address to bind: an IP as given, a name's first IPv4 address (as werkzeug binds
    `localhost`: 127.0.0.1, which every client falls back to)."""
    if ":" in host:
        return host.strip("[]")
    try:
        return socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    except socket.gaierror:
        return host
