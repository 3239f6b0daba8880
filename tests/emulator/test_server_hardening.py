"""The HTTP server (http_server.py, cheroot) under clients that misbehave: silent TLS clients
and floods of idle connections hold no thread and stall nobody."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time

import requests

from entra_emulator.http_server import THREADS
from entra_emulator.server import EmulatorServer


def _address(emu: EmulatorServer) -> tuple[str, int]:
    host, port = emu.https_base.removeprefix("https://").rsplit(":", 1)
    return host, int(port)


def _discovery(emu: EmulatorServer) -> requests.Response:
    return requests.get(f"{emu.authority}/v2.0/.well-known/openid-configuration",
                        verify=emu.ca_bundle, timeout=5)


def _half_a_client_hello(address: tuple[str, int]) -> socket.socket:
    """A TLS client that starts its handshake and stops halfway."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ssl.create_default_context().wrap_bio(incoming, outgoing,
                                                   server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        client.do_handshake()
    hello = outgoing.read()
    raw = socket.create_connection(address, timeout=10)
    raw.sendall(hello[: len(hello) // 2])
    return raw


def test_silent_and_stalled_tls_clients_do_not_stall_the_others(emulator):
    address = _address(emulator)
    with contextlib.ExitStack() as held:
        for _ in range(20):   # connect, never say hello
            held.enter_context(socket.create_connection(address, timeout=10))
        for _ in range(THREADS // 2):   # a handshake begun, never finished: holds a thread
            held.enter_context(_half_a_client_hello(address))
        for _ in range(5):
            started = time.monotonic()
            assert _discovery(emulator).status_code == 200
            assert time.monotonic() - started < 2


def test_a_flood_of_idle_connections_makes_no_threads_and_the_server_keeps_answering(
        emulator):
    address = _address(emulator)
    assert _discovery(emulator).status_code == 200
    before = threading.active_count()
    with contextlib.ExitStack() as held:
        for _ in range(500):
            held.enter_context(socket.create_connection(address, timeout=10))
        time.sleep(0.5)   # let the server accept them all
        assert threading.active_count() - before < 10   # 500 connections, no new threads
        answers = [_discovery(emulator).status_code for _ in range(5)]
        assert answers == [200] * 5
        # Kept-alive clients are still served alongside.
        with requests.Session() as session:
            for _ in range(3):
                answer = session.get(f"{emulator.authority}/v2.0/.well-known/"
                                     "openid-configuration", verify=emulator.ca_bundle,
                                     timeout=5)
                assert answer.status_code == 200


def test_plain_http_to_the_tls_port_holds_no_thread_for_long(emulator):
    address = _address(emulator)
    for _ in range(THREADS * 2):
        with socket.create_connection(address, timeout=5) as plain:
            plain.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert plain.recv(100) == b""
    assert _discovery(emulator).status_code == 200


def _trickle(sock: socket.socket, first: bytes, stop: threading.Event,
             answers: list[bytes]) -> None:
    """Send `first`, then a byte every 0.3 s (each read well inside the idle timeout) until the
    server answers or closes; record what it said."""
    sock.sendall(first)
    while not stop.is_set():
        try:
            sock.settimeout(0.3)
            data = sock.recv(200)
            answers.append(data)
            return
        except TimeoutError:
            try:
                sock.sendall(b"x")
            except OSError:
                answers.append(b"")
                return
        except OSError:
            answers.append(b"")
            return


def _trickling_clients(connect, first: bytes, count: int):
    stop, answers = threading.Event(), []
    sockets = [connect() for _ in range(count)]
    threads = [threading.Thread(target=_trickle, args=(sock, first, stop, answers), daemon=True)
               for sock in sockets]
    for thread in threads:
        thread.start()
    return stop, answers, sockets, threads


def test_a_request_trickled_in_is_cut_off_and_stalls_nobody_for_long(emulator, monkeypatch):
    """cheroot's timeout bounds each read; a client sending a byte every 0.3 s would hold a
    thread for ever. Each request now has REQUEST_SECONDS from its first byte, headers and
    body: then 408, or a closed connection."""
    from entra_emulator import http_server

    monkeypatch.setattr(http_server, "REQUEST_SECONDS", 2)
    host, port = _address(emulator)
    context = ssl.create_default_context(cafile=emulator.ca_bundle)

    def tls() -> socket.socket:
        return context.wrap_socket(socket.create_connection((host, port), timeout=10),
                                   server_hostname="localhost")

    page_host, page_port = emulator.http_base.removeprefix("http://").rsplit(":", 1)
    stop, answers, sockets, threads = _trickling_clients(
        tls, b"GET /x HTTP/1.1\r\nHost: localhost\r\nX-Slow: ", THREADS * 2)
    body_stop, body_answers, body_sockets, body_threads = _trickling_clients(
        tls, b"POST /common/oauth2/v2.0/token HTTP/1.1\r\nHost: localhost\r\n"
             b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 500\r\n\r\n"
             b"grant_type=", 1)
    page_stop, page_answers, page_sockets, page_threads = _trickling_clients(
        lambda: socket.create_connection((page_host, int(page_port)), timeout=10),
        b"GET /static/emulator.css HTTP/1.1\r\nHost: localhost\r\nX-Slow: ", 1)
    try:
        started = time.monotonic()
        assert _discovery(emulator).status_code == 200   # threads freed by the deadline
        assert time.monotonic() - started < 4.5
        for thread in threads + body_threads + page_threads:
            thread.join(timeout=6)
        assert len(answers) == THREADS * 2 and len(body_answers) == 1 \
            and len(page_answers) == 1
        # Each cut off: a 408, or (the body being drained for the answer) just closed.
        for answer in answers + page_answers + body_answers:
            assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer
    finally:
        for event in (stop, body_stop, page_stop):
            event.set()
        for sock in sockets + body_sockets + page_sockets:
            sock.close()
