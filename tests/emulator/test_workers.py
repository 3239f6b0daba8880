"""Several workers on one state folder: any request may land on any worker.

Most tests run two in-process emulators on the same state folder (two "workers" whose next
request is chosen by the test); the last ones run `serve --workers 2`, where the kernel chooses.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from entra_emulator.server import EmulatorServer
from tests.emulator.test_cli import read_until_ready
from tests.support import (
    ADELE,
    DEFAULT_PASSWORD,
    assert_entra_error,
    authorize_url,
    decode_jwt,
    get_me,
    params_of,
    pkce_pair,
    redeem_code,
    refresh,
    sign_in_for_code,
)


@pytest.fixture
def two_workers(tmp_path: Path, emulator: EmulatorServer):
    """Two emulators on one state folder (trusted like the session's emulator)."""
    shared = tmp_path / "shared-state"
    shutil.copytree(emulator.state_dir / "tls", shared / "tls")
    first = EmulatorServer(state_dir=shared, https_port=0, http_port=0).start()
    second = EmulatorServer(state_dir=shared, https_port=0, http_port=0).start()
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


def test_two_workers_redeeming_one_code_at_once_one_wins_and_its_tokens_are_revoked(
        two_workers, default_app):
    first, second = two_workers
    for _ in range(3):   # a few rounds: the order in which they reach the database varies
        grant = sign_in_for_code(first, default_app)
        start = threading.Barrier(2)
        answers: dict[str, requests.Response] = {}

        def redeem(name: str, worker: EmulatorServer, grant=grant, start=start,
                   answers=answers) -> None:
            start.wait()
            answers[name] = redeem_code(worker, default_app, grant)

        threads = [threading.Thread(target=redeem, args=(name, worker))
                   for name, worker in (("first", first), ("second", second))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        statuses = sorted(answer.status_code for answer in answers.values())
        assert statuses == [200, 400], {k: v.text[:200] for k, v in answers.items()}
        winner_name = next(name for name, a in answers.items() if a.status_code == 200)
        loser = next(a for a in answers.values() if a.status_code == 400)
        assert_entra_error(loser, 400, "invalid_grant", 54005)
        won = answers[winner_name].json()
        # What the winner got is revoked, as seen from either worker.
        for worker in (first, second):
            assert_entra_error(refresh(worker, default_app, won["refresh_token"]), 400,
                               "invalid_grant", 70000)
            assert worker.state.access_token_revoked(decode_jwt(won["access_token"])[1])
            assert get_me(worker, won["access_token"]).status_code == 401


def test_a_refresh_token_reused_on_another_worker_ends_the_family(two_workers, default_app):
    first, second = two_workers
    tokens = redeem_code(first, default_app, sign_in_for_code(first, default_app)).json()
    rotated = refresh(first, default_app, tokens["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    # The old token comes back on the other worker: refused, and the family ends there too.
    assert_entra_error(refresh(second, default_app, tokens["refresh_token"]), 400,
                       "invalid_grant", 70000)
    assert_entra_error(refresh(first, default_app, rotated.json()["refresh_token"]), 400,
                       "invalid_grant", 70000)


def test_a_refresh_token_from_one_worker_is_good_on_the_other(two_workers, default_app):
    first, second = two_workers
    tokens = redeem_code(first, default_app, sign_in_for_code(first, default_app)).json()
    again = refresh(second, default_app, tokens["refresh_token"])
    assert again.status_code == 200, again.text
    assert get_me(second, again.json()["access_token"]).status_code == 200


def test_a_sign_in_form_posted_to_another_worker(two_workers, default_app):
    first, second = two_workers
    verifier, challenge = pkce_pair()
    browser = requests.Session()
    page = browser.get(authorize_url(first, default_app.client_id,
                                     redirect_uri=default_app.redirect_uri,
                                     code_challenge=challenge, code_challenge_method="S256"))
    assert page.status_code == 200 and 'name="ctx"' in page.text
    ctx = page.text.split('name="ctx" value="', 1)[1].split('"', 1)[0]
    # The binding cookie was set for the first worker's host; the second is the same host.
    posted = browser.post(f"{second.http_base}/{second.tenant_id}/login",
                          data={"ctx": ctx, "username": ADELE, "password": DEFAULT_PASSWORD},
                          allow_redirects=False)
    assert posted.status_code == 200 and 'value="accept"' in posted.text, posted.text[:500]
    # The consent form (shown by the second worker) posted to the first.
    consented = browser.post(f"{first.http_base}/{first.tenant_id}/consent",
                             data={"ctx": ctx, "decision": "accept"}, allow_redirects=False)
    assert consented.status_code == 302, consented.text[:500]
    code = params_of(consented.headers["Location"])["code"]
    # The SSO session made on the second worker is known to the first.
    silent = browser.get(authorize_url(first, default_app.client_id, prompt="none",
                                       redirect_uri=default_app.redirect_uri),
                         allow_redirects=False)
    assert "code=" in silent.headers["Location"]
    answer = requests.post(f"{first.https_base}/{first.tenant_id}/oauth2/v2.0/token", data={
        "client_id": default_app.client_id, "client_secret": default_app.client_secret,
        "grant_type": "authorization_code", "code": code,
        "redirect_uri": default_app.redirect_uri, "code_verifier": verifier,
        "scope": "User.Read openid"}, verify=first.ca_bundle, timeout=10)
    assert answer.status_code == 200, answer.text


def test_a_fault_injected_through_one_worker_fires_on_the_other(two_workers, default_app):
    first, second = two_workers
    added = requests.post(f"{first.https_base}/_emulator/faults", json={
        "target": "token", "kind": "503", "count": 1}, verify=first.ca_bundle, timeout=10)
    assert added.status_code == 201, added.text
    assert requests.get(f"{second.https_base}/_emulator/faults", verify=second.ca_bundle,
                        timeout=10).json()["pending"][0]["kind"] == "503"
    tokens = redeem_code(first, default_app, sign_in_for_code(first, default_app))
    assert tokens.status_code == 503   # the code redemption met the fault, on either worker
    assert requests.get(f"{first.https_base}/_emulator/faults", verify=first.ca_bundle,
                        timeout=10).json()["pending"] == []


def test_clock_keys_defects_and_directory_changes_reach_the_other_worker(two_workers,
                                                                         default_app):
    first, second = two_workers
    first.clock.advance(3600)
    assert second.state.db.one("SELECT clock_offset FROM shared")[0] == 3600
    second.state.sync()
    assert second.clock.now() - first.clock.now() < 1
    rotated = first.keys.rotate()
    jwks = requests.get(f"{second.authority}/discovery/v2.0/keys", verify=second.ca_bundle,
                        timeout=10).json()
    assert jwks["keys"][0]["kid"] == rotated.kid
    first.defects.add(default_app.client_id, "wrong_aud")
    assert second.defects.pending() == [{"client_id": default_app.client_id.lower(),
                                         "defect": "wrong_aud"}]
    document = {"tenant": {"id": first.tenant_id, "displayName": "Other",
                           "defaultDomain": "other.onmicrosoft.com"},
                "users": [], "applications": []}
    first.state.change_directory(document, Path("test.json"))
    second.state.sync()
    assert second.directory.tenant.display_name == "Other"


# ---------------------------------------------------------------------------------------------
# serve --workers 2: the kernel spreads connections
# ---------------------------------------------------------------------------------------------

def start_workers(state: Path, count: int = 2) -> tuple[subprocess.Popen, str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "entra_emulator", "serve", "--port", "0", "--workers",
         str(count), "--state-dir", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    lines = read_until_ready(process, timeout=60)
    authority = next(line.split()[1] for line in lines if "AUTHORITY" in line)
    pages = next(line.split()[-1] for line in lines if "sign-in pages" in line)
    return process, authority, pages


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def test_serve_with_two_workers_answers_from_both_and_signs_in_across_them(tmp_path,
                                                                           default_app):
    state = tmp_path / "state"
    process, authority, pages = start_workers(state)
    bundle = str(state / "tls" / "ca-bundle.pem")
    try:
        seen = set()
        for _ in range(40):   # new connections: the kernel picks a worker for each
            answer = requests.get(f"{authority}/v2.0/.well-known/openid-configuration",
                                  verify=bundle, timeout=10)
            seen.add(answer.headers["X-Emulator-Worker"])
            if len(seen) == 2:
                break
        assert seen == {"0", "1"}
        # Whole sign-ins, each request on a new connection (so on either worker): the form
        # post lands on another worker than the page about half the time.
        tenant = authority.rsplit("/", 1)[1]
        crossed = 0
        for _ in range(12):
            browser = requests.Session()
            browser.headers["Connection"] = "close"   # each request a new connection
            page = browser.get(f"{pages}/{tenant}/oauth2/v2.0/authorize", params={
                "client_id": default_app.client_id, "response_type": "code",
                "redirect_uri": default_app.redirect_uri, "scope": "openid offline_access"})
            ctx = page.text.split('name="ctx" value="', 1)[1].split('"', 1)[0]
            posted = browser.post(f"{pages}/{tenant}/login", allow_redirects=False, data={
                "ctx": ctx, "username": ADELE, "password": DEFAULT_PASSWORD})
            answered = {page.headers["X-Emulator-Worker"], posted.headers["X-Emulator-Worker"]}
            if posted.status_code == 200 and 'value="accept"' in posted.text:   # consent, once
                posted = browser.post(f"{pages}/{tenant}/consent", allow_redirects=False,
                                      data={"ctx": ctx, "decision": "accept"})
                answered.add(posted.headers["X-Emulator-Worker"])
            assert posted.status_code == 302, posted.text[:300]
            crossed += len(answered) == 2
        assert crossed > 0
        code = dict(p.split("=", 1) for p in posted.headers["Location"].split("?", 1)[1]
                    .split("&"))["code"]
        tokens = requests.post(f"{authority}/oauth2/v2.0/token", verify=bundle, timeout=10,
                               data={"client_id": default_app.client_id,
                                     "client_secret": default_app.client_secret,
                                     "grant_type": "authorization_code",
                                     "code": requests.utils.unquote(code),
                                     "redirect_uri": default_app.redirect_uri})
        assert tokens.status_code == 200, tokens.text
    finally:
        stop(process)


def _worker_pids(parent: int) -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:   # field 4 of /proc/PID/stat (after the parenthesised name) is the parent
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    pids.add(int(entry.name))
            except (OSError, ValueError, IndexError):
                pass
    return pids


def test_a_worker_that_dies_is_started_again(tmp_path):
    state = tmp_path / "state"
    process, authority, _ = start_workers(state)
    bundle = str(state / "tls" / "ca-bundle.pem")
    try:
        workers = _worker_pids(process.pid)
        assert len(workers) == 2
        killed = min(workers)
        os.kill(killed, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = _worker_pids(process.pid)
            if len(now) == 2 and killed not in now:
                break
            time.sleep(0.2)
        assert len(now) == 2 and killed not in now, "the dead worker was not replaced"
        seen: set[str] = set()
        deadline = time.monotonic() + 60
        while seen != {"0", "1"} and time.monotonic() < deadline:
            # New connections: both workers answer again (the new one once it listens).
            answer = requests.get(f"{authority}/v2.0/.well-known/openid-configuration",
                                  verify=bundle, timeout=10)
            assert answer.status_code == 200
            seen.add(answer.headers["X-Emulator-Worker"])
        assert seen == {"0", "1"}
        assert process.poll() is None
    finally:
        stop(process)


def test_workers_leave_when_their_parent_is_killed(tmp_path):
    process, authority, _ = start_workers(tmp_path / "state")
    workers = _worker_pids(process.pid)
    assert len(workers) == 2
    process.kill()   # SIGKILL: the parent cannot stop them
    process.wait(timeout=10)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_state_of(pid) != "Z" for pid in workers):
            time.sleep(0.2)
        assert all(_state_of(pid) == "Z" for pid in workers)
    finally:
        for pid in workers:   # never leave one behind, holding ports
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _state_of(pid: int) -> str:
    """Field 3 of /proc/PID/stat (R, S, ...), "Z" once the process has exited."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"
