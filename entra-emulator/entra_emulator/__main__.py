"""Command line: `python -m entra_emulator serve ...` and `python -m entra_emulator check FILE`."""

from __future__ import annotations

import argparse
import sys

from entra_emulator.directory import DEFAULT_DIRECTORY, DirectoryError, load_directory


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="entra-emulator",
        description="A local Microsoft Entra ID (v2 endpoints) and Microsoft Graph /me.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the emulator until Ctrl-C")
    serve.add_argument("--directory", metavar="FILE", default=None,
                       help=f"directory file (default: the packaged {DEFAULT_DIRECTORY.name})")
    serve.add_argument("--state", "--state-dir", dest="state", metavar="DIR",
                       default=".emulator",
                       help="folder for keys, certificates and consents (default: .emulator)")
    serve.add_argument("--host", default="localhost", help="host name to serve on "
                       "(default: localhost)")
    serve.add_argument("--https-port", "--port", dest="https_port", type=int, default=8443,
                       help="https port for MSAL and Graph clients; 0 picks a free one "
                            "(default: 8443)")
    serve.add_argument("--http-port", type=int, default=None,
                       help="plain-http port for the browser pages; 0 picks a free one "
                            "(default: 8080, or a free one when the https port is 0)")
    serve.add_argument("--env-file", metavar="FILE", default=None,
                       help="when ready, write AUTHORITY, CLIENT_ID, ... in dotenv form here")
    serve.add_argument("--authorization-response-iss", action="store_true",
                       help="send RFC 9207's iss in every authorization response and advertise "
                            "it in discovery (off by default: Entra is not known to send it)")

    serve.add_argument("--workers", type=_positive, default=1, metavar="N",
                       help="worker processes sharing the ports and the state folder, so "
                            "requests use N cores (default: 1, in this process)")

    # What `serve --workers N` starts N of (workers.py); not for direct use.
    worker = commands.add_parser("worker", help="(internal) one worker of serve --workers")
    worker.add_argument("--index", type=int, required=True)
    worker.add_argument("--directory", default=None)
    worker.add_argument("--state", required=True)
    worker.add_argument("--host", required=True)
    worker.add_argument("--https-port", type=int, required=True)
    worker.add_argument("--http-port", type=int, required=True)
    worker.add_argument("--authorization-response-iss", action="store_true")

    check = commands.add_parser("check", help="validate a directory file")
    check.add_argument("file", help="the directory file to validate")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check":
        return check(args.file)
    if args.command == "worker":
        from entra_emulator.workers import run_worker

        run_worker(args.index, args.directory, args.state, args.host, args.https_port,
                   args.http_port, args.authorization_response_iss)
        return 0
    from entra_emulator.serving import serve

    http_port = args.http_port if args.http_port is not None else (
        0 if args.https_port == 0 else 8080)
    try:
        serve(directory=args.directory, state_dir=args.state, host=args.host,
              https_port=args.https_port, http_port=http_port, env_file=args.env_file,
              authorization_response_iss=args.authorization_response_iss, workers=args.workers)
    except DirectoryError as problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    except OSError as problem:
        print(f"error: cannot serve on {args.host}: {problem.strerror or problem}",
              file=sys.stderr)
        return 1
    except RuntimeError as problem:   # an unusable state folder; the message says what to do
        print(f"error: {problem}", file=sys.stderr)
        return 1
    return 0


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 (got {text!r})")
    return number


def check(path: str) -> int:
    try:
        directory = load_directory(path)
    except DirectoryError as problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    print(f"{path}: OK: tenant {directory.tenant.display_name} ({directory.tenant_id}), "
          f"{len(directory.users)} users, {len(directory.applications)} applications")
    return 0


if __name__ == "__main__":
    sys.exit(main())
