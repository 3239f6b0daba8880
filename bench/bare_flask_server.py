"""The baseline bench_emulator.py compares the emulator with: a bare Flask app served by the
emulator's own HTTP server (entra_emulator.http_server: werkzeug threads, HTTP/1.1 keep-alive,
TLS with the emulator's certificate), so the difference is the emulator's own work.

    python bench/bare_flask_server.py CERT_FILE KEY_FILE

prints `Ready: https://localhost:PORT` when it serves, then serves until SIGTERM or Ctrl-C.
`GET /` answers "hello"; `POST /trivial` reads the body and answers a small JSON object.
"""

from __future__ import annotations

import ssl
import sys

from flask import Flask, request

from entra_emulator.http_server import listen


def create_app() -> Flask:
    app = Flask("bare")

    @app.get("/")
    def hello() -> str:
        return "hello"

    @app.post("/trivial")
    def trivial() -> dict[str, int]:
        return {"received": len(request.get_data())}

    return app


def main(cert_file: str, key_file: str) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    server = listen("localhost", 0, create_app(), context)
    print(f"Ready: https://localhost:{server.port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main(*sys.argv[1:3])
