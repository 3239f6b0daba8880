"""The state database (db.py): what a restart keeps, what expires, and state folders this
version cannot use (older layouts are imported; others are refused with a message)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from entra_emulator.db import APPLICATION_ID, DB_FILE, SCHEMA_VERSION, StateDB, StateError
from entra_emulator.keys import SigningKey
from entra_emulator.server import EmulatorServer
from entra_emulator.state import (
    CODE_LIFETIME_SECONDS,
    SPENT_CODE_MEMORY_SECONDS,
    AuthorizationCode,
    Clock,
    CodeStore,
    RefreshGrant,
    RefreshTokenStore,
)
from tests.support import assert_entra_error, get_me, redeem_code, refresh, sign_in_for_code


@pytest.fixture
def state_dir(tmp_path: Path, emulator: EmulatorServer) -> Path:
    state = tmp_path / "state"
    shutil.copytree(emulator.state_dir / "tls", state / "tls")
    return state


def test_a_restart_keeps_refresh_tokens_revocations_consents_and_keys(state_dir, default_app):
    with EmulatorServer(state_dir=state_dir, https_port=0, http_port=0) as before:
        kept = redeem_code(before, default_app, sign_in_for_code(before, default_app)).json()
        stolen = redeem_code(before, default_app, sign_in_for_code(before, default_app)).json()
        rotated = refresh(before, default_app, stolen["refresh_token"]).json()
        assert_entra_error(refresh(before, default_app, stolen["refresh_token"]), 400,
                           "invalid_grant", 70000)   # reuse: the family is revoked
        kid = before.keys.current.kid
        user = before.directory.user_by_username("AdeleV@contoso.onmicrosoft.com")
        consented = before.state.consents.granted(user.id, default_app.client_id)
        assert consented
    with EmulatorServer(state_dir=state_dir, https_port=0, http_port=0) as after:
        assert after.keys.current.kid == kid
        assert after.state.consents.granted(user.id, default_app.client_id) == consented
        renewed = refresh(after, default_app, kept["refresh_token"])
        assert renewed.status_code == 200, renewed.text
        assert get_me(after, renewed.json()["access_token"]).status_code == 200
        assert_entra_error(refresh(after, default_app, rotated["refresh_token"]), 400,
                           "invalid_grant", 70000)


def _code(now: float) -> AuthorizationCode:
    return AuthorizationCode(
        client_id="c", redirect_uri="r", user_id="u", scope="openid", granted=frozenset(),
        nonce=None, code_challenge=None, code_challenge_method=None, sid="s", auth_time=0,
        include_auth_time=False, tenant_id="t", issued_at=now,
        expires_at=now + CODE_LIFETIME_SECONDS)


def _grant(now: float, family: str = "f") -> RefreshGrant:
    return RefreshGrant(family=family, client_id="c", user_id="u", tenant_id="t",
                        granted=frozenset(), sid="s", auth_time=0, include_auth_time=False,
                        issued_at=now, expires_at=now + 100)


def test_expired_rows_are_purged():
    clock, db = Clock(), StateDB.in_memory()
    codes, tokens = CodeStore(clock, db), RefreshTokenStore(clock, db)
    now = clock.now()
    code, grant = _code(now), _grant(now)
    first_code, first_token = codes.issue(code), tokens.issue(grant)
    clock.advance(CODE_LIFETIME_SECONDS + SPENT_CODE_MEMORY_SECONDS + 1)
    codes.issue(code)
    tokens.issue(grant)
    assert codes.find(first_code) is None and tokens.find(first_token) is None
    assert db.one("SELECT count(*) FROM codes")[0] == 1 and len(tokens) == 1


def test_only_the_newest_codes_and_refresh_tokens_are_kept():
    """Anyone who can sign in can mint codes and refresh tokens in a loop: the store keeps the
    newest, a bounded number, not everything until it expires."""
    clock, db = Clock(), StateDB.in_memory()
    codes, tokens = CodeStore(clock, db, limit=3), RefreshTokenStore(clock, db, limit=3)
    now = clock.now()
    code, grant = _code(now), _grant(now)
    issued_codes = [codes.issue(code) for _ in range(5)]
    issued_tokens = [tokens.issue(grant) for _ in range(5)]
    assert [codes.find(c) is not None for c in issued_codes] == [False, False, True, True, True]
    assert [tokens.find(t) is not None for t in issued_tokens] == [False, False, True, True,
                                                                   True]
    assert db.one("SELECT count(*) FROM codes")[0] == 3 and len(tokens) == 3


def test_a_code_is_redeemed_once_across_connections(tmp_path):
    """Two stores on one file (as two workers have): one redemption wins."""
    first, second = (CodeStore(Clock(), StateDB.open(tmp_path)) for _ in range(2))
    now = Clock().now()
    code = first.issue(AuthorizationCode(
        client_id="c", redirect_uri="r", user_id="u", scope="openid", granted=frozenset(),
        nonce=None, code_challenge=None, code_challenge_method=None, sid="s", auth_time=0,
        include_auth_time=False, tenant_id="t", issued_at=now, expires_at=now + 600))
    _, won = first.redeem(code, "family-1")
    record, again = second.redeem(code, "family-2")
    assert won and not again and record.issued_families == ["family-1"]
    assert second.mark_reused(code) == (["family-1"], [])
    assert first.add_access_token(code, "uti-1")   # issued after the reuse: revoke it too


def test_concurrent_threads_of_one_process_each_write_and_one_use_wins(tmp_path):
    """16 threads on one state file (more than a worker's request threads): every write lands,
    none fails on a locked database, and of 16 uses of one refresh token exactly one wins."""
    clock = Clock()
    tokens = RefreshTokenStore(clock, StateDB.open(tmp_path))
    now = clock.now()

    def grant(family: str) -> RefreshGrant:
        return RefreshGrant(family=family, client_id="c", user_id="u", tenant_id="t",
                            granted=frozenset(), sid="s", auth_time=0, include_auth_time=False,
                            issued_at=now, expires_at=now + 600)

    shared = tokens.issue(grant("shared"))
    start = threading.Barrier(16)
    issued: list[str] = []
    won: list[bool] = []

    def work(index: int) -> None:
        start.wait()
        won.append(tokens.use(shared)[1])
        issued.extend(tokens.issue(grant(f"family-{index}")) for _ in range(20))

    threads = [threading.Thread(target=work, args=(index,)) for index in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(won) == [False] * 15 + [True]
    assert len(issued) == 320 and len(tokens) == 321
    assert all(tokens.find(token) is not None for token in issued)


def test_the_database_is_owner_only_and_in_wal_mode(tmp_path):
    StateDB.open(tmp_path)
    assert (tmp_path / DB_FILE).stat().st_mode & 0o077 == 0
    with sqlite3.connect(tmp_path / DB_FILE) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


# ---------------------------------------------------------------------------------------------
# Older and foreign state folders
# ---------------------------------------------------------------------------------------------

def test_an_old_json_state_folder_is_imported(state_dir, default_app):
    key = SigningKey.generate()
    state_dir.mkdir(exist_ok=True)
    (state_dir / "signing_keys.json").write_text(json.dumps({"keys": [key.to_json()]}))
    (state_dir / "consents.json").write_text(json.dumps(
        {f"user-1|{default_app.client_id}": ["User.Read", "openid"]}))
    with EmulatorServer(state_dir=state_dir, https_port=0, http_port=0) as emu:
        assert emu.keys.current.kid == key.kid
        assert emu.state.consents.granted("user-1", default_app.client_id) == {"User.Read",
                                                                               "openid"}
    assert not (state_dir / "signing_keys.json").exists()
    assert (state_dir / "signing_keys.json.migrated").exists()
    assert (state_dir / "consents.json.migrated").exists()


def test_an_unreadable_old_file_is_named(tmp_path):
    (tmp_path / "signing_keys.json").write_text("{not json")
    with pytest.raises(StateError, match="signing_keys.json: unreadable signing keys"):
        StateDB.open(tmp_path)


def newer_database(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(folder / DB_FILE) as connection:
        connection.execute("CREATE TABLE future (x)")
        connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")


def test_a_newer_schema_is_refused_with_a_message(tmp_path):
    newer_database(tmp_path)
    with pytest.raises(StateError, match="written by a newer entra-emulator"):
        StateDB.open(tmp_path)


def test_another_programs_database_is_refused(tmp_path):
    with sqlite3.connect(tmp_path / DB_FILE) as connection:
        connection.execute("CREATE TABLE photos (x)")
    with pytest.raises(StateError, match="not a state database of entra-emulator"):
        StateDB.open(tmp_path)
    (tmp_path / DB_FILE).write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StateError, match="not a state database of entra-emulator"):
        StateDB.open(tmp_path)


def test_the_command_line_names_an_unusable_state_folder_without_a_traceback(tmp_path):
    newer_database(tmp_path / "state")
    completed = subprocess.run(
        [sys.executable, "-m", "entra_emulator", "serve", "--port", "0", "--state-dir",
         str(tmp_path / "state")], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 1
    assert "error:" in completed.stderr and "newer entra-emulator" in completed.stderr
    assert "Traceback" not in completed.stderr
