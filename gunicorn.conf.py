"""Production serving: `gunicorn -c gunicorn.conf.py wsgi:app` (gunicorn also reads this file by
itself when started from the repository root).

Every value can be set from the environment; the defaults suit one machine behind a reverse proxy
on the same host. Several instances share sign-ins and sessions only with SESSION_TYPE=redis.
"""

import multiprocessing
import os

from dotenv import dotenv_values


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{name} must be a whole number (got {value!r})") from None


wsgi_app = "wsgi:app"
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:5000").split(",")

# The app waits on the network (identity provider, Graph), not the CPU: a few processes, each
# with threads. Each worker builds its own app (no preload): sockets of the shared HTTP pool
# must not be inherited across fork.
workers = _env_int("GUNICORN_WORKERS", multiprocessing.cpu_count() * 2 + 1)
threads = _env_int("GUNICORN_THREADS", 4)
worker_class = "gthread"

# Without a SECRET_KEY the app draws a random one per process, so each worker would seal token
# caches and sign sessions with its own key and users would be signed out at random.
if workers > 1 and not (os.environ.get("SECRET_KEY") or dotenv_values(".env").get("SECRET_KEY")):
    raise SystemExit("Set SECRET_KEY (in the environment or .env) to the same random value for "
                     "every worker and instance, e.g. "
                     "python -c 'import secrets; print(secrets.token_hex(32))'")

# A slow request is at most: token refresh + Graph call (HTTP_TIMEOUT each, default 10 s) + the
# Graph Retry-After wait (GRAPH_RETRY_MAX_WAIT, default 5 s) + the photo. Kill only beyond that.
timeout = _env_int("GUNICORN_TIMEOUT", 60)
graceful_timeout = _env_int("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = _env_int("GUNICORN_KEEPALIVE", 5)
# Bounded requests: a header block or request line beyond these is refused with 400.
limit_request_line = 4094
limit_request_field_size = 8190

# X-Forwarded-* are believed in one place only: the app's ProxyFix, for exactly
# TRUSTED_PROXY_HOPS proxies. Gunicorn must not set the scheme from headers on its own.
forwarded_allow_ips = ""
secure_scheme_headers: dict[str, str] = {}

# Several instances may run on one machine (and the tests start some): no shared control socket.
control_socket_disable = True

accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
errorlog = os.environ.get("GUNICORN_ERROR_LOG", "-")
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
# The path without its query string (%(U)s, never %(r)s or %(q)s): a query-mode callback carries
# `code` and `state` there. No referrer (%(f)s) either: the identity provider's page, whose URL
# holds the sign-in request, refers the browser to the callback. No cookies, no Authorization.
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s"'
