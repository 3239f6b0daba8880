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
