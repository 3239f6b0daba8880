"""The default store (files, cachelib) still works, and still serves several processes of one
machine: instances sharing SESSION_FILE_DIR, as gunicorn's workers do."""

from __future__ import annotations

import pickle
import struct
import time
from pathlib import Path

from tests.scale.scale_support import ADELE, Balancer, Browser
from webapp.sessions import FileSessions


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


def test_stored_file_expires_with_the_sign_in(make_instance, tmp_path, emulator,
                                              browser_sign_in):
    lifetime = 300
    app = make_instance(SESSION_LIFETIME=str(lifetime))
    browser = Browser(Balancer(app), emulator, browser_sign_in)
    signed_in = time.time()
    assert browser.sign_in().status_code == 303
    expiries = []
    for path in Path(tmp_path / "sessions").iterdir():
        if path.is_file():
            with path.open("rb") as stored:
                expires = struct.unpack("I", stored.read(4))[0]  # cachelib's header
                if isinstance(pickle.load(stored), dict):  # not cachelib's item counter
                    expiries.append(expires)
    assert len(expiries) == 1
    assert signed_in + lifetime - 2 <= expiries[0] <= signed_in + lifetime + 2
