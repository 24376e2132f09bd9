"""The catalog as a running server sees it: re-read when LOKAL_HOME/catalog.yaml changes.

`lokal model add`, `lokal model synth` and hand edits take effect without a restart. A broken edit keeps the
last good catalog (and logs why) rather than taking the server down.
"""

from __future__ import annotations

import logging
import threading

from lokal.catalog.catalog import Catalog
from lokal.catalog.spec import ModelSpec, Variant
from lokal.config import Settings
from lokal.errors import LokalError

log = logging.getLogger("lokal.catalog")


class LiveCatalog:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._stamp = self._mtime()
        self._catalog = Catalog.load(settings)

    def _mtime(self) -> float | None:
        try:
            return self.settings.user_catalog.stat().st_mtime_ns / 1e9
        except FileNotFoundError:
            return None

    def current(self) -> Catalog:
        stamp = self._mtime()
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    try:
                        self._catalog = Catalog.load(self.settings)
                        log.info("user catalog changed; reloaded %s", self.settings.user_catalog)
                    except LokalError as exc:
                        log.error("keeping the previous catalog: %s", exc.message)
                    self._stamp = stamp
        return self._catalog

    def specs(self) -> list[ModelSpec]:
        return self.current().specs()

    def resolve(self, name: str) -> tuple[ModelSpec, Variant]:
        return self.current().resolve(name)

    def best_variant(self, spec: ModelSpec) -> Variant:
        return self.current().best_variant(spec)

    def get(self, alias: str) -> ModelSpec | None:
        return self.current().get(alias)
