"""Stored Responses (`store: true`, the default): what GET /v1/responses/{id} returns and what
previous_response_id continues, kept in one SQLite table under LOKAL_HOME.

A row holds, as JSON text, the conversation the model read (instructions aside: OpenAI does not carry them over
to the next response, and neither does lokal), the output items it gave and the response object. A continued
conversation is then one row read, however long the chain of responses behind it. Rows are kept 30 days, as
OpenAI keeps stored responses; older ones are dropped when a new one is written, so the file does not grow
without end. Calls block on disk I/O: the routes run them in a thread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RETENTION_S = 30 * 24 * 3600.0
FILENAME = "responses.sqlite3"
_SCHEMA = """CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    input TEXT NOT NULL,
    output TEXT NOT NULL,
    response TEXT NOT NULL
)"""
_INDEX = "CREATE INDEX IF NOT EXISTS responses_by_age ON responses (created_at)"  # the purge on each write


@dataclass(frozen=True, slots=True)
class StoredResponse:
    id: str
    created_at: float
    input: list[dict[str, Any]]  # the conversation before this response's output (earlier turns included)
    output: list[dict[str, Any]]
    response: dict[str, Any]

    @property
    def conversation(self) -> list[dict[str, Any]]:
        """The items a response that continues this one reads before its own input."""
        return self.input + self.output


class ResponseStore:
    def __init__(self, path: Path, retention_s: float = RETENTION_S) -> None:
        self.path = path
        self.retention_s = retention_s
        self._ready = False
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        # A connection per call: calls come from whichever worker thread asyncio.to_thread picks, and opening
        # a SQLite file costs microseconds. The table is made on first use, so a server whose home is read-only
        # still starts (and only storing fails).
        if not self._ready:
            with self._lock:
                if not self._ready:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    with closing(sqlite3.connect(self.path, timeout=10)) as db, db:
                        db.execute(_SCHEMA)
                        db.execute(_INDEX)
                    self._ready = True
        return sqlite3.connect(self.path, timeout=10)

    def put(self, stored: StoredResponse) -> None:
        row = (
            stored.id,
            stored.created_at,
            json.dumps(stored.input, ensure_ascii=False),
            json.dumps(stored.output, ensure_ascii=False),
            json.dumps(stored.response, ensure_ascii=False),
        )
        with closing(self._connect()) as db, db:
            db.execute("DELETE FROM responses WHERE created_at < ?", (time.time() - self.retention_s,))
            db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)", row)

    def get(self, rid: str) -> StoredResponse | None:
        with closing(self._connect()) as db:
            found = db.execute(
                "SELECT id, created_at, input, output, response FROM responses WHERE id = ? AND created_at >= ?",
                (rid, time.time() - self.retention_s),
            ).fetchone()
        if found is None:
            return None
        return StoredResponse(
            found[0], float(found[1]), json.loads(found[2]), json.loads(found[3]), json.loads(found[4])
        )

    def delete(self, rid: str) -> bool:
        with closing(self._connect()) as db, db:
            return db.execute("DELETE FROM responses WHERE id = ?", (rid,)).rowcount > 0


__all__ = ["FILENAME", "RETENTION_S", "ResponseStore", "StoredResponse"]
