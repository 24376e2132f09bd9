"""Which models are loaded: load on first use, unload after TTL, evict least-recently-used for room."""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lokal.catalog.spec import ModelSpec, Variant
from lokal.config import Settings
from lokal.engines.base import Engine
from lokal.errors import InvalidRequest, ModelNotDownloaded, ModelUnloaded, Overloaded
from lokal.runtime.async_worker import AsyncWorker
from lokal.runtime.worker import Worker
from lokal.runtime.workers import make_worker

log = logging.getLogger("lokal.runtime")
Clock = Callable[[], float]  # seconds, monotonic: time.monotonic, or a test's clock that it moves by hand
MAX_TTL_SECONDS = 365 * 24 * 3600.0


def check_ttl(ttl: float | None) -> float | None:
    """Idle seconds before unload: finite (inf and nan would break every reader of /lokal/ps), 0 to a year."""
    if ttl is not None and not (math.isfinite(ttl) and 0 <= ttl <= MAX_TTL_SECONDS):
        raise InvalidRequest(
            f"ttl must be a number of seconds from 0 to {MAX_TTL_SECONDS:.0f} (a year), not {ttl}", param="ttl"
        )
    return ttl


def not_downloaded(spec: ModelSpec, variant: Variant) -> ModelNotDownloaded:
    """The error for a model whose files are not here, with the command that gets them."""
    return ModelNotDownloaded(
        f"model {spec.alias!r} ({variant.id}) is not downloaded. Run: lokal model download {spec.alias}",
        param="model",
    )


@dataclass(slots=True)
class LoadedModel:
    spec: ModelSpec
    variant: Variant
    engine: Engine
    worker: Worker
    ttl: float
    clock: Clock = time.monotonic
    loaded_at: float = 0.0
    last_used: float = 0.0
    active: int = 0  # requests in flight; a model in use is never evicted

    def __post_init__(self) -> None:
        self.loaded_at = self.last_used = self.clock()

    @property
    def id(self) -> str:
        return self.variant.id

    @property
    def memory_bytes(self) -> int:
        return self.engine.info.memory_bytes

    def ttl_left(self, now: float | None = None) -> float:
        return max(0.0, self.ttl - ((self.clock() if now is None else now) - self.last_used))

    def touch(self) -> None:
        self.last_used = self.clock()


Resolver = Callable[[str], tuple[ModelSpec, Variant]]
Locator = Callable[[Variant], Path | None]  # local artifact path; None for an upstream, which has none
EngineFactory = Callable[[Variant], Engine]


class ModelManager:
    def __init__(
        self,
        settings: Settings,
        resolve: Resolver,
        locate: Locator,
        make_engine: EngineFactory,
        clock: Clock = time.monotonic,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._resolve = resolve
        self._locate = locate
        self._make_engine = make_engine
        self._loaded: dict[str, LoadedModel] = {}  # by variant id
        self._loading: dict[str, asyncio.Task[LoadedModel]] = {}  # by variant id: one load however many ask
        self._reaper: asyncio.Task[None] | None = None
        self.on_change: Callable[[], None] = lambda: None

    # -- queries -----------------------------------------------------------------------------------------------
    def loaded(self) -> list[LoadedModel]:
        return list(self._loaded.values())

    def resolve(self, name: str) -> tuple[ModelSpec, Variant]:
        return self._resolve(name)

    def loaded_variant(self, variant_id: str) -> LoadedModel | None:
        return self._loaded.get(variant_id)

    def find_loaded(self, name: str) -> LoadedModel | None:
        spec, variant = self._resolve(name)
        return self._loaded.get(variant.id)

    # -- loading -----------------------------------------------------------------------------------------------
    async def get(self, name: str, ttl: float | None = None) -> LoadedModel:
        spec, variant = self._resolve(name)
        lm = self._loaded.get(variant.id)
        if lm is None:
            task = self._loading.get(variant.id)
            if task is None:  # two first requests for one model load it once
                task = asyncio.ensure_future(self._load(spec, variant, ttl))
                self._loading[variant.id] = task
                task.add_done_callback(functools.partial(self._load_done, variant.id))
            # Shielded: a caller that leaves (its client disconnected) must not abandon a load half done in its
            # thread; the model then stays loaded for the others and the next request.
            lm = await asyncio.shield(task)
        if ttl is not None:
            lm.ttl = ttl
        lm.touch()
        return lm

    async def _load(self, spec: ModelSpec, variant: Variant, ttl: float | None) -> LoadedModel:
        path = self._locate(variant)
        if variant.needs_artifact and path is None:
            raise not_downloaded(spec, variant)
        need = self._estimate(variant, path)
        await self._make_room(need)
        engine = self._make_engine(variant)
        t0 = time.perf_counter()
        await asyncio.to_thread(engine.load, spec, variant, path)
        if not engine.info.load_seconds:
            engine.info.load_seconds = time.perf_counter() - t0
        worker = make_worker(engine, spec.alias, self.settings.queue_size, concurrency=variant.traits.concurrency)
        if isinstance(worker, AsyncWorker):
            try:
                await worker.start()  # on this loop: the engine's pool and its health checks live here
            except BaseException:
                await worker.aclose()
                raise
        ttl = ttl if ttl is not None else self.settings.ttl_seconds
        lm = LoadedModel(spec, variant, engine, worker, ttl, clock=self.clock)
        self._loaded[variant.id] = lm
        synthetic = spec.synthetic or engine.info.extra.get("synthetic") is True
        log.info(
            "loaded %s (%s%s) in %.2fs, %.0f MiB",
            spec.alias,
            variant.id,
            ", SYNTHETIC" if synthetic else "",
            engine.info.load_seconds,
            lm.memory_bytes / 2**20,
        )
        self.on_change()
        return lm

    def _load_done(self, variant_id: str, task: asyncio.Task[LoadedModel]) -> None:
        self._loading.pop(variant_id, None)
        if not task.cancelled():
            task.exception()  # retrieved: a failed load whose callers all left is not logged as unhandled

    def _estimate(self, variant: Variant, path: Path | None) -> int:
        if path is None or not path.exists():
            return 0
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size

    async def _make_room(self, need_bytes: int) -> None:
        budget = self.settings.memory_budget_mb * 2**20
        if need_bytes > budget:
            raise InvalidRequest(
                f"model needs about {need_bytes / 2**20:.0f} MiB but the memory budget is "
                f"{self.settings.memory_budget_mb} MiB (set LOKAL_MEMORY_BUDGET_MB or --memory-budget)",
                param="model",
            )

        def over() -> bool:
            used = sum(m.memory_bytes for m in self._loaded.values())
            return len(self._loaded) >= self.settings.max_loaded_models or used + need_bytes > budget

        while over():
            idle = [m for m in self._loaded.values() if m.active == 0]
            if not idle:
                raise Overloaded("every loaded model is busy and there is no room for another; retry shortly")
            victim = min(idle, key=lambda m: m.last_used)
            log.info("evicting %s (least recently used) to make room", victim.spec.alias)
            await self._unload(victim)

    # -- unloading ---------------------------------------------------------------------------------------------
    async def unload(self, name: str, force: bool = False) -> bool:
        spec, variant = self._resolve(name)
        lm = self._loaded.get(variant.id)
        if lm is None:
            return False
        if lm.active and not force:
            raise Overloaded(f"model {spec.alias!r} has {lm.active} requests in flight; use force to unload")
        await self._unload(lm)
        return True

    async def _unload(self, lm: LoadedModel) -> None:
        """Requests still queued or running (only a forced unload or a server stop leaves any) get an error at
        once rather than a cut answer that looks complete; the engine stops at its next token, so this returns
        promptly instead of after the running generation."""
        self._loaded.pop(lm.variant.id, None)
        lm.worker.abort(
            ModelUnloaded(
                f"model {lm.spec.alias!r} was unloaded while this request was in flight; send it again to reload it"
            )
        )
        if isinstance(lm.worker, AsyncWorker):
            await lm.worker.aclose()  # closes the engine's pool on the loop it runs on
        else:
            await asyncio.to_thread(lm.worker.close)
        log.info("unloaded %s (%s), %.0f MiB freed", lm.spec.alias, lm.variant.id, lm.memory_bytes / 2**20)
        self.on_change()

    async def reap_expired(self) -> list[str]:
        now = self.clock()
        expired = [m for m in self._loaded.values() if m.active == 0 and m.ttl_left(now) <= 0]
        for m in expired:
            await self._unload(m)
        return [m.spec.alias for m in expired]

    async def _reap_forever(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.reap_expired()
            except Exception:  # the reaper must outlive one bad unload
                log.exception("TTL reaper failed")

    def start(self, every: float = 1.0) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap_forever(every))

    async def close(self) -> None:
        if self._reaper:
            self._reaper.cancel()
        for lm in list(self._loaded.values()):
            await self._unload(lm)
