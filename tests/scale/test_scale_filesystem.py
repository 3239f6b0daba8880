"""The default store (files, cachelib) still works, and still serves several processes of one
machine: instances sharing SESSION_FILE_DIR (and flask_entra's records beside it,
`<SESSION_FILE_DIR>-flask-entra/`), as gunicorn's workers do."""

from __future__ import annotations

import pickle
import struct
import time
from pathlib import Path

import pytest

from tests.scale.scale_support import ADELE, Balancer, Browser, csrf_token_of, stored_session


def test_default_file_store_is_shared_by_instances_of_one_machine(make_instance, tmp_path,
                                                                  emulator, browser_sign_in):
    first, second = make_instance(), make_instance()
    assert first.config["SESSION_TYPE"] == "filesystem"  # no SESSION_TYPE: files
    balancer = Balancer(first, second)
    browser = Browser(balancer, emulator, browser_sign_in)
    assert browser.sign_in(next_path="/graph").status_code == 303
    assert balancer.served == [0, 1]
    # The session in SESSION_FILE_DIR, its token cache apart in flask_entra's records.
    assert len(stored_expiries(tmp_path / "sessions")) == 1
    assert len(stored_expiries(tmp_path / "sessions-flask-entra" / "records")) == 1
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
def test_stored_files_expire_with_the_sign_in(make_instance, tmp_path, emulator,
                                              browser_sign_in, setting, stored_for):
    app = make_instance(**setting)
    browser = Browser(Balancer(app), emulator, browser_sign_in)
    signed_in = time.time()
    assert browser.sign_in().status_code == 303
    # The session and its token cache (the refresh token) both.
    for folder in (tmp_path / "sessions", tmp_path / "sessions-flask-entra" / "records"):
        expiries = stored_expiries(folder)
        assert len(expiries) == 1, folder
        assert signed_in + stored_for - 2 <= expiries[0] <= signed_in + stored_for + 2, folder


def test_a_sign_out_on_one_instance_ends_the_session_on_the_other(make_instance, tmp_path,
                                                                   emulator, browser_sign_in):
    """No instance keeps a session in memory: a sign-out on another instance ends it there at
    once, for a copied cookie too."""
    first, second = make_instance(), make_instance()
    browser = Browser(Balancer(first), emulator, browser_sign_in)
    assert browser.sign_in().status_code == 303
    stolen = browser.tab()  # the same session cookie, e.g. copied by an attacker
    assert ADELE in browser.get("/").get_data(as_text=True)  # read by the first
    session_id = browser.session_id()

    browser.balancer.replace(second)
    csrf = csrf_token_of(browser.get("/"))
    assert browser.post("/logout", data={"csrf_token": csrf}).status_code == 303
    # Gone from the folder the sessions share; only the ended mark is left, in the records.
    assert stored_session(second, session_id) is None
    assert stored_expiries(tmp_path / "sessions") == []
    assert len(stored_expiries(tmp_path / "sessions-flask-entra" / "records")) == 1

    stolen.balancer.replace(first)
    page = stolen.get("/")
    assert page.status_code == 200 and ADELE not in page.get_data(as_text=True)
    assert stolen.get("/graph").status_code == 302  # to sign-in
    assert stored_expiries(tmp_path / "sessions") == []  # and nothing was written back


def stored_expiries(folder: Path) -> list[int]:
    """The expiry of each entry cachelib keeps in `folder` (not its item counter)."""
    expiries = []
    for path in folder.iterdir() if folder.exists() else ():
        if path.is_file():
            with path.open("rb") as stored:
                expires = struct.unpack("I", stored.read(4))[0]  # cachelib's header
                if not isinstance(pickle.load(stored), int):  # cachelib's item counter
                    expiries.append(expires)
    return expiries
