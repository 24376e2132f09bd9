"""The catalog as a running server sees it: re-read when LOKAL_HOME/catalog.yaml changes.

`lokal model add`, `lokal model synth` and hand edits take effect without a restart. A bad entry is logged
(file, alias, why) and skipped, the others load. A file unusable as a whole (a YAML syntax error, unreadable)
keeps the last good user entries; at start-up there are none, and the built-in catalog still serves.
"""

from __future__ import annotations

import logging
import os
import threading

from lokal.catalog.catalog import Catalog
from lokal.catalog.demo import demo_files
from lokal.catalog.parse import CatalogError, Problem, read_user_catalog
from lokal.catalog.spec import Choice, ModelSpec, Variant
from lokal.config import Settings

log = logging.getLogger("lokal.catalog")

# What identifies one version of the file. The size and inode matter beside the mtime: an editor that
# truncates and then writes can do both within one mtime tick, and a read in between (an empty file) must
# not stick until the next write.
# The demo model's files are part of it: `lokal serve` writes it after the catalog was first read.
Stamp = tuple[tuple[int, int, int, int] | None, tuple[bool, bool]]


def _report(problems: list[Problem]) -> None:
    for problem in problems:
        log.warning("%s", problem)


class LiveCatalog:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        # Checked on every request: plain strings and os.stat, no Path building each time.
        self._watched = (str(settings.user_catalog), *map(str, demo_files(settings)))
        self._stamp = self._fingerprint()  # before reading: a change during the read triggers another one
        self._catalog = Catalog.load(settings)
        _report(self._catalog.problems)

    def _fingerprint(self) -> Stamp:
        catalog, gguf, onnx = self._watched
        demo = os.path.isfile(gguf), os.path.isfile(onnx)
        try:
            st = os.stat(catalog)
        except FileNotFoundError:
            return None, demo
        except OSError:
            return (-1, -1, -1, -1), demo  # unreadable: the reload says why
        return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns), demo

    def current(self) -> Catalog:
        stamp = self._fingerprint()
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    self._stamp = stamp
                    self._reload()
        return self._catalog

    def _reload(self) -> None:
        path = self.settings.user_catalog
        try:
            user = read_user_catalog(path)
        except CatalogError as exc:
            log.error("%s; keeping the previous user catalog", exc.message)
            return
        try:
            self._catalog = self._catalog.with_user(user)
        except Exception:  # never let a reload take the listing down: keep serving what we had
            log.exception("reloading %s failed; keeping the previous catalog", path)
            return
        log.info("user catalog changed; reloaded %s", path)
        _report(self._catalog.problems)

    @property
    def problems(self) -> list[Problem]:
        return self.current().problems

    def specs(self) -> list[ModelSpec]:
        return self.current().specs()

    def resolve(self, name: str) -> tuple[ModelSpec, Variant]:
        return self.current().resolve(name)

    def resolve_runnable(self, name: str) -> tuple[ModelSpec, Variant]:
        """For serving: EngineUnavailable (naming the install command) when the engine is missing."""
        return self.current().resolve_runnable(name)

    def resolve_choice(self, name: str) -> tuple[ModelSpec, Choice]:
        return self.current().resolve_choice(name)

    def best_variant(self, spec: ModelSpec) -> Variant:
        return self.current().best_variant(spec)

    def choice(self, spec: ModelSpec) -> Choice:
        return self.current().choice(spec)

    def get(self, alias: str) -> ModelSpec | None:
        return self.current().get(alias)
