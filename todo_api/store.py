"""The to-do items, in one SQLite file (the standard library's sqlite3): shared by every process
of the API, a connection per use. Bounded: a caller keeps at most MAX_ITEMS items of at most
MAX_TEXT characters."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path

MAX_ITEMS = 100
MAX_TEXT = 200
SCHEMA = """CREATE TABLE IF NOT EXISTS todos (
    id INTEGER PRIMARY KEY, owner TEXT NOT NULL, text TEXT NOT NULL, created REAL NOT NULL)"""


class TooMany(Exception):
    """The caller already keeps MAX_ITEMS items."""


class TodoStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=5)

    def list(self, owner: str | None) -> list[dict[str, object]]:
        """The owner's items, or everyone's (owner None: an app-only caller)."""
        query = "SELECT id, text, created FROM todos"
        args: tuple[str, ...] = ()
        if owner is not None:
            query, args = query + " WHERE owner = ?", (owner,)
        with closing(self._connect()) as db:
            rows = db.execute(query + " ORDER BY id", args).fetchall()
        return [{"id": row[0], "text": row[1], "created": row[2]} for row in rows]

    def add(self, owner: str, text: str) -> dict[str, object]:
        created = time.time()
        with closing(self._connect()) as db, db:
            # The count and the insert in one statement: two requests at once cannot both
            # find room for the last item.
            cursor = db.execute("INSERT INTO todos (owner, text, created) SELECT ?, ?, ? "
                                "WHERE (SELECT COUNT(*) FROM todos WHERE owner = ?) < ?",
                                (owner, text, created, owner, MAX_ITEMS))
            if cursor.rowcount == 0:
                raise TooMany()
        return {"id": cursor.lastrowid, "text": text, "created": created}
