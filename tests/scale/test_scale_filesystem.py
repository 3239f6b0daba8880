"""The default store (files, cachelib) still works, and still serves several processes of one
machine: instances sharing SESSION_FILE_DIR, as gunicorn's workers do."""

from __future__ import annotations

import pickle
import struct
import time
from pathlib import Path

import pytest

from tests.scale.scale_support import ADELE, Balancer, Browser
from webapp.sessions import FileSessions, RecentSessions


def test_default_file_store_is_shared_by_instances_of_one_machine(make_instance, tmp_path,
                                                                  emulator, browser_sign_in):
    first, second = make_instance(), make_instance()
    assert isinstance(first.session_interface, FileSessions)  # no SESSION_TYPE: files
    balancer = Balancer(first, second)
    browser = Browser(balancer, emulator, browser_sign_in)
    assert browser.sign_in(next_path="/graph").status_code == 303
    assert balancer.served == [0, 1]
    for _ in range(2):
        graph = browser.get("/graph")
        assert graph.status_code == 200 and ADELE in graph.get_data(as_text=True)

    balancer.replace(make_instance())  # a restart
    assert browser.get("/graph").status_code == 200


@pytest.mark.parametrize(("setting", "stored_for"), [
    # The session ends SESSION_LIFETIME after the sign-in, whatever happens meanwhile.
    ({"SESSION_LIFETIME": "300"}, 300),
    # Checklist E6: an idle session ends in the store too, not only at the user's next request,
    # so a browser that never comes back leaves no session (and refresh token) behind: after
    # the idle timeout plus the minute by which the last request may not be recorded yet.
    ({"SESSION_IDLE_TIMEOUT": "300"}, 300 + 60),
])
def test_stored_file_expires_with_the_sign_in(make_instance, tmp_path, emulator, browser_sign_in,
                                              setting, stored_for):
    app = make_instance(**setting)
    browser = Browser(Balancer(app), emulator, browser_sign_in)
    signed_in = time.time()
    assert browser.sign_in().status_code == 303
    expiries = stored_expiries(tmp_path / "sessions")
    assert len(expiries) == 1
    assert signed_in + stored_for - 2 <= expiries[0] <= signed_in + stored_for + 2


def test_a_sign_out_on_one_instance_ends_the_session_on_the_other(make_instance, emulator,
                                                                   browser_sign_in):
    """Each instance keeps the sessions it read in memory (RecentSessions): a sign-out on
    another instance must still end the session there at once, for a copied cookie too."""
    first, second = make_instance(), make_instance()
    browser = Browser(Balancer(first), emulator, browser_sign_in)
    assert browser.sign_in().status_code == 303
    stolen = browser.tab()  # the same session cookie, e.g. copied by an attacker
    assert ADELE in browser.get("/").get_data(as_text=True)  # now in the first's memory

    browser.balancer.replace(second)
    page = browser.get("/").get_data(as_text=True)
    csrf = page.split('name="csrf_token" value="')[1].split('"')[0]
    assert browser.post("/logout", data={"csrf_token": csrf}).status_code == 303

    stolen.balancer.replace(first)
    page = stolen.get("/")
    assert page.status_code == 200 and ADELE not in page.get_data(as_text=True)
    assert stolen.get("/graph").status_code == 302  # to sign-in


def test_recent_sessions_are_dropped_when_another_process_writes(tmp_path):
    """Two RecentSessions on one generations file act as two processes."""
    mine, theirs = (RecentSessions(tmp_path / "generations") for _ in range(2))
    generation = mine.generation("session:a")
    mine.put("session:a", generation, {"user": {"name": "Adele"}})
    copy = mine.get("session:a", mine.generation("session:a"))
    assert copy == {"user": {"name": "Adele"}}
    copy["user"]["name"] = "changed by a request"  # a copy: the cached one is unchanged
    assert mine.get("session:a", mine.generation("session:a"))["user"]["name"] == "Adele"

    theirs.changed("session:a")
    assert mine.generation("session:a") != generation
    assert mine.get("session:a", mine.generation("session:a")) is None


def test_recent_sessions_keep_a_bounded_number_for_a_bounded_time(tmp_path, monkeypatch):
    monkeypatch.setattr(RecentSessions, "CAPACITY", 3)
    monkeypatch.setattr(RecentSessions, "MAX_AGE_SECONDS", 0.2)
    recent = RecentSessions(tmp_path / "generations")
    for name in "abcd":
        recent.put(name, recent.generation(name), {"n": name})
    assert recent.get("a", recent.generation("a")) is None  # the first in made room
    assert recent.get("d", recent.generation("d")) == {"n": "d"}
    time.sleep(0.3)
    assert recent.get("d", recent.generation("d")) is None


def test_recent_sessions_follow_a_replaced_generations_file(tmp_path, monkeypatch):
    """Someone clears the session folder while workers run: a worker started after maps a new
    file; one started before must notice, or it would never see that worker's writes."""
    monkeypatch.setattr(RecentSessions, "FILE_CHECK_SECONDS", 0.1)
    before = RecentSessions(tmp_path / "generations")
    before.put("session:a", before.generation("session:a"), {"user": "Adele"})
    (tmp_path / "generations").unlink()
    after = RecentSessions(tmp_path / "generations")
    after.changed("session:a")  # e.g. a sign-out handled by the newer worker
    time.sleep(0.2)
    assert before.get("session:a", before.generation("session:a")) is None


def stored_expiries(folder: Path) -> list[int]:
    expiries = []
    for path in folder.iterdir():
        if path.is_file():
            with path.open("rb") as stored:
                expires = struct.unpack("I", stored.read(4))[0]  # cachelib's header
                if isinstance(pickle.load(stored), dict):  # not cachelib's item counter
                    expiries.append(expires)
    return expiries


def test_a_write_right_after_the_file_was_replaced_still_reaches_every_process(tmp_path):
    before = RecentSessions(tmp_path / "generations")
    (tmp_path / "generations").unlink()
    after = RecentSessions(tmp_path / "generations")
    after.put("session:a", after.generation("session:a"), {"user": "Adele"})
    before.changed("session:a")  # at once, not a FILE_CHECK_SECONDS later
    assert after.get("session:a", after.generation("session:a")) is None
