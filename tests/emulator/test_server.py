"""The in-process server: keep-alive TLS connections, request bodies, stopping."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator

import pytest
import requests

from entra_emulator.server import EmulatorServer


@contextlib.contextmanager
def tls_connection(emu: EmulatorServer) -> Iterator[ssl.SSLSocket]:
    """One raw TLS connection to the emulator's https server."""
    context = ssl.create_default_context(cafile=emu.ca_cert)
    host, port = emu.https_base.removeprefix("https://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        yield tls


def raw_exchange(emu: EmulatorServer, payload: bytes, responses: int) -> bytes:
    """Send raw bytes over one TLS connection and read until `responses` answers arrived."""
    with tls_connection(emu) as tls:
        tls.sendall(payload)
        received = b""
        while received.count(b"HTTP/1.1 ") < responses or not received.endswith(b"}"):
            chunk = tls.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def test_one_connection_serves_several_requests(emulator):
    path = f"/{emulator.tenant_id}/v2.0/.well-known/openid-configuration"
    request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
    answers = raw_exchange(emulator, request * 3, responses=3)
    assert answers.count(b"HTTP/1.1 200 OK") == 3
    assert b"Connection: close" not in answers


def test_an_unread_body_does_not_leak_into_the_next_request(emulator):
    body = b"x" * 5000
    first = (f"POST /no/such/path HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}"
             "\r\nContent-Type: application/octet-stream\r\n\r\n").encode() + body
    path = f"/{emulator.tenant_id}/discovery/v2.0/keys"
    second = f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
    answers = raw_exchange(emulator, first + second, responses=2)
    assert b"HTTP/1.1 404" in answers and b"HTTP/1.1 200 OK" in answers
    assert b'"keys"' in answers


def test_token_requests_reuse_the_connection(emulator, default_app):
    session = requests.Session()
    data = {"client_id": default_app.client_id, "client_secret": default_app.client_secret,
            "grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default"}
    for _ in range(3):
        response = session.post(f"{emulator.authority}/oauth2/v2.0/token", data=data,
                                verify=emulator.ca_bundle)
        assert response.status_code == 200
    assert "close" not in response.headers.get("Connection", "")
    assert len(session.adapters["https://"].poolmanager.pools) == 1


def test_stop_ends_kept_alive_connections(tmp_path):
    emu = EmulatorServer(state_dir=tmp_path, https_port=0, http_port=0).start()
    session = requests.Session()
    url = f"{emu.authority}/v2.0/.well-known/openid-configuration"
    assert session.get(url, verify=emu.ca_bundle).status_code == 200
    emu.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        session.get(url, verify=emu.ca_bundle, timeout=5)


def test_ports_zero_pick_free_ports_and_bases_match(emulator):
    assert emulator.https_base.startswith("https://localhost:")
    assert emulator.http_base.startswith("http://localhost:")
    assert emulator.https_base != emulator.http_base.replace("http:", "https:")
    assert emulator.authority == f"{emulator.https_base}/{emulator.tenant_id}"
    assert emulator.graph_me_url == f"{emulator.https_base}/v1.0/me"


def test_a_taken_port_is_named(emulator, tmp_path):
    from entra_emulator.server import PortInUseError

    taken = int(emulator.https_base.rsplit(":", 1)[1])
    with pytest.raises(PortInUseError, match=f"port {taken} on localhost is already in use"):
        EmulatorServer(state_dir=tmp_path, https_port=taken, http_port=0).start()


def test_a_silent_client_does_not_stall_the_others(emulator):
    host, port = emulator.https_base.removeprefix("https://").rsplit(":", 1)
    with socket.create_connection((host, int(port))):   # connects, never says hello
        response = requests.get(f"{emulator.authority}/v2.0/.well-known/openid-configuration",
                                verify=emulator.ca_bundle, timeout=5)
    assert response.status_code == 200


def test_plain_http_on_the_tls_port_is_dropped_quietly(emulator):
    host, port = emulator.https_base.removeprefix("https://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert plain.recv(100) == b""


def read_until_closed(emu: EmulatorServer, payload: bytes) -> bytes:
    """Send raw bytes over one TLS connection and read until the server closes it."""
    with tls_connection(emu) as tls:
        tls.sendall(payload)
        received = b""
        while chunk := tls.recv(65536):
            received += chunk
        return received


@pytest.mark.parametrize("request_line", [
    "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n",
])
def test_a_client_that_asks_to_close_gets_one_answer_then_the_close(emulator, request_line):
    path = f"/{emulator.tenant_id}/v2.0/.well-known/openid-configuration"
    # A second request after the close is never answered: the server closed the connection.
    payload = (request_line.format(path=path) * 2).encode()
    answer = read_until_closed(emulator, payload)
    assert answer.count(b" 200 OK") == 1
    if "HTTP/1.1" in request_line:   # an HTTP/1.0 connection closes unless it asks otherwise
        assert b"Connection: close" in answer


def test_head_answers_without_a_body_and_keeps_the_connection(emulator):
    path = f"/{emulator.tenant_id}/v2.0/.well-known/openid-configuration"
    payload = (f"HEAD {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"
               f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").encode()
    answers = raw_exchange(emulator, payload, responses=2)
    assert answers.count(b"HTTP/1.1 200 OK") == 2
    head, _, rest = answers.partition(b"\r\n\r\n")
    assert rest.startswith(b"HTTP/1.1 200 OK")  # no body between the two answers
