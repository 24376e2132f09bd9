"""The model manager on echo engines and a clock moved by hand: load once on first use, TTL unload, least
recently used eviction by count and by memory, and what it refuses. No port, no real time waited."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from lokal.catalog.catalog import Catalog
from lokal.catalog.spec import Variant
from lokal.config import Settings
from lokal.engines.base import Engine, GenerationRequest
from lokal.engines.echo import EchoEngine
from lokal.errors import InvalidRequest, ModelNotDownloaded, ModelUnloaded, Overloaded
from lokal.runtime.manager import ModelManager
from tests.support.echo import Clock, echo_entry, echo_settings

MiB = 2**20
T = TypeVar("T")


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(main())


class Made:
    """make_engine for the manager: echo engines, counted, and failing for the aliases told to."""

    def __init__(self) -> None:
        self.count: dict[str, int] = {}
        self.fail: set[str] = set()

    def __call__(self, variant: Variant) -> Engine:
        self.count[variant.name] = self.count.get(variant.name, 0) + 1
        if variant.name in self.fail:
            raise RuntimeError(f"{variant.name} failed to load")
        return EchoEngine()


def manager_for(settings: Settings, clock: Clock, made: Made | None = None) -> ModelManager:
    catalog = Catalog.load(settings)

    def locate(variant: Variant) -> Path | None:
        path = Path(variant.path) if variant.path else None
        return path if path is not None and path.exists() else None

    return ModelManager(settings, catalog.resolve, locate, made or Made(), clock=clock)


def aliases(manager: ModelManager) -> list[str]:
    return sorted(m.spec.alias for m in manager.loaded())


@pytest.fixture
def clock() -> Clock:
    return Clock()


def three(home: Path, **knobs: Any) -> list[dict[str, Any]]:
    return [echo_entry(home, name, **knobs) for name in ("a", "b", "c")]


def test_first_use_loads_once_however_many_ask(tmp_path: Path, clock: Clock) -> None:
    made = Made()
    manager = manager_for(echo_settings(tmp_path, three(tmp_path, load_s=0.05)), clock, made)

    async def main() -> list[object]:
        got = await asyncio.gather(*(manager.get("a") for _ in range(5)))
        await manager.close()
        return [id(m) for m in got]

    assert len(set(run(main))) == 1
    assert made.count == {"a": 1}


def test_ttl_unloads_an_idle_model_and_use_restarts_its_ttl(tmp_path: Path, clock: Clock) -> None:
    manager = manager_for(echo_settings(tmp_path, three(tmp_path), ttl_seconds=600), clock)

    async def main() -> list[tuple[list[str], list[str]]]:
        await manager.get("a")
        await manager.get("b", ttl=60)
        steps = []
        clock.advance(59)
        steps.append((await manager.reap_expired(), aliases(manager)))
        clock.advance(2)
        steps.append((await manager.reap_expired(), aliases(manager)))
        clock.advance(500)
        (await manager.get("a")).touch()  # used again: its 600 s start now
        clock.advance(599)
        steps.append((await manager.reap_expired(), aliases(manager)))
        clock.advance(1)
        steps.append((await manager.reap_expired(), aliases(manager)))
        await manager.close()
        return steps

    assert run(main) == [([], ["a", "b"]), (["b"], ["a"]), ([], ["a"]), (["a"], [])]


def test_ttl_left_counts_down_on_the_managers_clock(tmp_path: Path, clock: Clock) -> None:
    manager = manager_for(echo_settings(tmp_path, three(tmp_path), ttl_seconds=600), clock)

    async def main() -> list[float]:
        lm = await manager.get("a")
        left = [lm.ttl_left()]
        clock.advance(123.5)
        left.append(lm.ttl_left())
        clock.advance(1000)
        left.append(lm.ttl_left())
        await manager.close()
        return left

    assert run(main) == [600, 476.5, 0]


def test_a_model_in_use_outlives_its_ttl(tmp_path: Path, clock: Clock) -> None:
    manager = manager_for(echo_settings(tmp_path, three(tmp_path), ttl_seconds=10), clock)

    async def main() -> tuple[list[str], list[str]]:
        lm = await manager.get("a")
        lm.active = 1
        clock.advance(3600)
        busy = await manager.reap_expired()
        lm.active = 0
        idle = await manager.reap_expired()
        await manager.close()
        return busy, idle

    assert run(main) == ([], ["a"])


def test_the_reaper_unloads_without_being_asked(tmp_path: Path, clock: Clock) -> None:
    manager = manager_for(echo_settings(tmp_path, three(tmp_path), ttl_seconds=5), clock)

    async def main() -> list[str]:
        manager.start(every=0.01)
        await manager.get("a")
        clock.advance(6)
        for _ in range(100):
            if not manager.loaded():
                break
            await asyncio.sleep(0.01)
        left = aliases(manager)
        await manager.close()
        return left

    assert run(main) == []


def test_max_loaded_evicts_the_least_recently_used(tmp_path: Path, clock: Clock) -> None:
    manager = manager_for(echo_settings(tmp_path, three(tmp_path), max_loaded_models=2), clock)

    async def main() -> list[list[str]]:
        seen = []
        await manager.get("a")
        clock.advance(1)
        await manager.get("b")
        clock.advance(1)
        await manager.get("a")  # a is now the most recent
        clock.advance(1)
        await manager.get("c")
        seen.append(aliases(manager))
        clock.advance(1)
        await manager.get("b")  # the least recent now is a
        seen.append(aliases(manager))
        await manager.close()
        return seen

    assert run(main) == [["a", "c"], ["b", "c"]]


def test_memory_budget_evicts_for_room_and_refuses_what_cannot_fit(tmp_path: Path, clock: Clock) -> None:
    entries = three(tmp_path, memory_bytes=2 * MiB)
    big = echo_entry(tmp_path, "big", memory_bytes=4 * MiB)
    manager = manager_for(echo_settings(tmp_path, [*entries, big], memory_budget_mb=3), clock)

    async def main() -> tuple[list[str], str]:
        await manager.get("a")
        clock.advance(1)
        await manager.get("b")  # 2 + 2 MiB > 3: a goes
        loaded = aliases(manager)
        with pytest.raises(InvalidRequest) as refused:
            await manager.get("big")
        await manager.close()
        return loaded, str(refused.value)

    loaded, message = run(main)
    assert loaded == ["b"]
    assert "needs about 4 MiB but the memory budget is 3 MiB" in message


def test_no_room_while_every_model_is_busy_is_overloaded(tmp_path: Path, clock: Clock) -> None:
    manager = manager_for(echo_settings(tmp_path, three(tmp_path), max_loaded_models=1), clock)

    async def main() -> None:
        (await manager.get("a")).active = 1
        with pytest.raises(Overloaded):
            await manager.get("b")
        with pytest.raises(Overloaded, match="1 requests in flight"):
            await manager.unload("a")
        assert await manager.unload("a", force=True) is True
        assert await manager.unload("a") is False  # not loaded any more
        await manager.get("b")
        await manager.close()

    run(main)


def test_a_failed_load_is_not_kept_and_the_next_request_tries_again(tmp_path: Path, clock: Clock) -> None:
    made = Made()
    made.fail.add("a")
    manager = manager_for(echo_settings(tmp_path, three(tmp_path)), clock, made)

    async def main() -> list[str]:
        with pytest.raises(RuntimeError, match="a failed to load"):
            await manager.get("a")
        made.fail.clear()
        await manager.get("a")
        loaded = aliases(manager)
        await manager.close()
        return loaded

    assert run(main) == ["a"]
    assert made.count == {"a": 2}


def test_a_variant_whose_file_is_missing_is_not_downloaded(tmp_path: Path, clock: Clock) -> None:
    entries = three(tmp_path)
    Path(entries[0]["variants"][0]["path"]).unlink()
    manager = manager_for(echo_settings(tmp_path, entries), clock)

    async def main() -> None:
        with pytest.raises(ModelNotDownloaded, match="lokal model download a"):
            await manager.get("a")
        await manager.close()

    run(main)


def test_unloading_a_model_mid_answer_ends_its_request_with_model_unloaded(tmp_path: Path, clock: Clock) -> None:
    manager = manager_for(echo_settings(tmp_path, three(tmp_path, delay_s=0.02)), clock)
    words = " ".join(["word"] * 200)

    async def main() -> tuple[int, BaseException | None]:
        lm = await manager.get("a")
        req = GenerationRequest(prompt=words, max_tokens=200)
        got = 0
        failure: BaseException | None = None
        try:
            async for event in lm.worker.generate(req):
                got += bool(event.text)
                if got == 3:
                    await manager.unload("a", force=True)
        except ModelUnloaded as exc:
            failure = exc
        await manager.close()
        return got, failure

    got, failure = run(main)
    assert 3 <= got < 200
    assert isinstance(failure, ModelUnloaded)


def test_the_echo_engine_is_exact_about_what_it_writes() -> None:
    from lokal.catalog.spec import ModelSpec

    engine = EchoEngine()
    spec = ModelSpec(alias="e", context_length=64, variants=[Variant(id="e:1", engine="echo", path="/nonexistent")])
    engine.load(spec, spec.variants[0], None)
    cancel = threading.Event()

    def text(**kw: Any) -> tuple[str, str | None, int]:
        events = list(engine.generate(GenerationRequest(prompt="one two three four five", **kw), cancel))
        usage = events[-1].usage
        assert usage is not None and usage.prompt_tokens == 5
        return "".join(e.text for e in events), events[-1].finish_reason, usage.completion_tokens

    assert text() == ("one two three four five", "stop", 5)
    assert text(max_tokens=2) == ("one two ", "length", 2)
    assert text(stop=["ee f"]) == ("one two thr", "stop", 4)  # the stop string ends in the fourth token
    vectors = engine.embed(["x", "x", "y"])
    assert vectors[0] == vectors[1] != vectors[2]
    assert abs(sum(v * v for v in vectors[0]) - 1) < 1e-9
