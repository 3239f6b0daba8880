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
