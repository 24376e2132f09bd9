"""Response cache for repeated identical sub-steps, keyed on model + messages + generation params.

In memory (LRU) by default; with a path it is also kept in SQLite so separate CLI runs share it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lokal.router.backends import FORWARDED_PARAMS

# The parameters that change the answer are exactly those forwarded upstream; stream, user, ... are not.
_KEY_PARAMS = FORWARDED_PARAMS


def cache_key(model: str, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> str:
    body = {
        "model": model,
        # Tool turns count: two conversations that differ only in a call's arguments are different questions.
        "messages": [
            {k: m.get(k) for k in ("role", "content", "tool_calls", "tool_call_id") if m.get(k) is not None}
            for m in messages
        ],
        "params": {k: params[k] for k in _KEY_PARAMS if params.get(k) is not None},
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def is_deterministic(params: Mapping[str, Any]) -> bool:
    temp = params.get("temperature")
    return params.get("seed") is not None or (temp is not None and float(temp) == 0.0)


@dataclass(frozen=True, slots=True)
class CachedResponse:
    content: str
    prompt_tokens: int
    completion_tokens: int
    model: str


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    misses: int
    entries: int

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class ResponseCache:
    def __init__(self, max_entries: int = 1024, ttl_s: float | None = None, path: Path | None = None) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._mem: OrderedDict[str, tuple[float, CachedResponse]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self._db: sqlite3.Connection | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False)
            self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, at REAL, body TEXT NOT NULL)")
            self._db.commit()

    def _fresh(self, at: float) -> bool:
        return self.ttl_s is None or time.time() - at <= self.ttl_s

    def get(self, key: str) -> CachedResponse | None:
        with self._lock:
            item = self._mem.get(key)
            if item is not None and self._fresh(item[0]):
                self._mem.move_to_end(key)
                self.hits += 1
                return item[1]
            if self._db is not None:
                row = self._db.execute("SELECT at, body FROM responses WHERE key = ?", (key,)).fetchone()
                if row is not None and self._fresh(float(row[0])):
                    value = CachedResponse(**json.loads(row[1]))
                    self._remember(key, float(row[0]), value)
                    self.hits += 1
                    return value
            self.misses += 1
            return None

    def put(self, key: str, value: CachedResponse) -> None:
        now = time.time()
        with self._lock:
            self._remember(key, now, value)
            if self._db is not None:
                body = json.dumps(
                    {
                        "content": value.content,
                        "prompt_tokens": value.prompt_tokens,
                        "completion_tokens": value.completion_tokens,
                        "model": value.model,
                    }
                )
                self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)", (key, now, body))
                self._db.commit()

    def _remember(self, key: str, at: float, value: CachedResponse) -> None:
        self._mem[key] = (at, value)
        self._mem.move_to_end(key)
        while len(self._mem) > self.max_entries:
            self._mem.popitem(last=False)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self.hits, self.misses, len(self._mem))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
