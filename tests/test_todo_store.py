"""The To-do API's store: a caller keeps at most MAX_ITEMS items, also when requests race."""

from __future__ import annotations

import threading

import pytest

from todo_api.store import MAX_ITEMS, TodoStore, TooMany


def test_items_past_the_limit_are_refused(tmp_path):
    store = TodoStore(tmp_path / "todo.sqlite3")
    for number in range(MAX_ITEMS):
        store.add("alice", f"item {number}")
    with pytest.raises(TooMany):
        store.add("alice", "one more")
    assert store.add("bob", "another caller's")["text"] == "another caller's"
    assert len(store.list("alice")) == MAX_ITEMS


def test_racing_adds_never_pass_the_limit(tmp_path):
    store = TodoStore(tmp_path / "todo.sqlite3")
    for number in range(MAX_ITEMS - 3):
        store.add("alice", f"item {number}")
    start = threading.Barrier(12)
    outcomes: list[str] = []

    def add() -> None:
        start.wait()
        try:
            store.add("alice", "racing")
            outcomes.append("added")
        except TooMany:
            outcomes.append("refused")

    threads = [threading.Thread(target=add) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["added"] * 3 + ["refused"] * 9
    assert len(store.list("alice")) == MAX_ITEMS


def test_the_api_takes_the_web_apps_tenant_list(tmp_path):
    """With a multi-tenant AUTHORITY, the To-do API lets in no tenant the web app would not."""
    from todo_api import create_app

    app = create_app({"TODO_API_CLIENT_ID": "api-client", "TODO_API_CLIENT_SECRET": "s",
                      "AUTHORITY": "https://login.microsoftonline.com/organizations",
                      "ALLOWED_TENANTS": "11111111-1111-1111-1111-111111111111, "
                                         "22222222-2222-2222-2222-222222222222",
                      "TODO_DB": str(tmp_path / "todos.db"), "SECRET_KEY": "x" * 32})
    assert app.config["ENTRA_ALLOWED_TENANTS"] == ["11111111-1111-1111-1111-111111111111",
                                                   "22222222-2222-2222-2222-222222222222"]
