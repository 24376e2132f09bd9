"""The replica pool against real scripted upstreams on 127.0.0.1: balancing, limits, retries, ejection, health."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any, TypeVar

import pytest

from lokal.engines.upstream_pool import PoolPolicy, UpstreamPool, UpstreamRejected
from lokal.errors import Overloaded, UpstreamError
from tests.support.scripted import Script, ScriptedServer
from tests.support.server import free_port

T = TypeVar("T")
BODY: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
NO_CHECKS = PoolPolicy(health_check_s=0)


@contextmanager
def servers(*scripts: Script, max_parallel: int | None = None) -> Iterator[list[ScriptedServer]]:
    with ExitStack() as stack:
        yield [stack.enter_context(ScriptedServer(s, max_parallel=max_parallel)) for s in scripts]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def pool(urls: Sequence[str], policy: PoolPolicy = NO_CHECKS, timeout_s: float = 10.0) -> UpstreamPool:
    return UpstreamPool(urls, headers={}, timeout_s=timeout_s, policy=policy)


async def collect(p: UpstreamPool, body: dict[str, Any] = BODY) -> list[str]:
    return [c["choices"][0]["delta"].get("content") or "" async for c in p.stream("/chat/completions", body)]


def test_least_outstanding_spreads_evenly() -> None:
    with servers(*[Script(ttft_s=0.2, tokens=2)] * 4) as srvs:

        async def go() -> None:
            p = pool([s.base_url for s in srvs])
            outs = await asyncio.gather(*(collect(p) for _ in range(8)))
            assert all(o[:2] == ["w0 ", "w1 "] for o in outs)
            assert [r["requests"] for r in p.stats()] == [2, 2, 2, 2]
            await p.aclose()

        run(go())
        assert [s.stats.max_in_flight for s in srvs] == [2, 2, 2, 2]


def test_streams_reuse_their_kept_alive_connection() -> None:
    """A stream read to [DONE] leaves its connection to the pool: five in a row use one TCP connection."""
    with servers(Script(tokens=3)) as (srv,):

        async def go() -> None:
            p = pool([srv.base_url])
            for _ in range(5):
                assert await collect(p) == ["w0 ", "w1 ", "w2 ", ""]
            await p.aclose()

        run(go())
        assert len(srv.stats.peers) == 5 and len(set(srv.stats.peers)) == 1, srv.stats.peers


def test_max_concurrency_per_replica_and_waiting_for_room() -> None:
    with servers(Script(ttft_s=0.05, itl_s=0.01, tokens=3), Script(ttft_s=0.05, itl_s=0.01, tokens=3)) as srvs:

        async def go() -> None:
            p = pool([s.base_url for s in srvs], PoolPolicy(max_concurrency=2, health_check_s=0))
            assert p.capacity == 4
            seen: list[int] = []

            async def one() -> list[dict[str, Any]]:
                out = []
                async for c in p.stream("/chat/completions", BODY):
                    seen.append(sum(r["in_flight"] for r in p.stats()))
                    out.append(c)
                return out

            outs = await asyncio.gather(*(one() for _ in range(10)))  # 10 requests, room for 4: the rest wait
            assert len(outs) == 10 and max(seen) <= 4
            assert sum(r["requests"] for r in p.stats()) == 10
            await p.aclose()

        run(go())
        assert max(s.stats.max_in_flight for s in srvs) == 2


@pytest.mark.parametrize(
    "bad",
    [Script(status=500), Script(status=429, retry_after=1), "refused"],
    ids=["500", "429", "refused"],
)
def test_retry_before_first_chunk_lands_on_another_replica(bad: Script | str) -> None:
    good = Script(tokens=3)
    with servers(good, good) as srvs:
        bad_url = f"http://127.0.0.1:{free_port()}/v1"
        with ExitStack() as stack:
            if isinstance(bad, Script):
                bad_url = stack.enter_context(ScriptedServer(bad)).base_url

            async def go() -> None:
                p = pool([bad_url, srvs[0].base_url, srvs[1].base_url], PoolPolicy(eject_after=100, health_check_s=0))
                outs = await asyncio.gather(*(collect(p) for _ in range(9)))
                assert all(len(o) >= 3 for o in outs)  # zero client-visible failures
                st = p.stats()
                assert st[0]["failures"] >= 1 and st[0]["healthy"]  # tried (round-robin start), never ejected
                assert st[1]["failures"] == st[2]["failures"] == 0
                await p.aclose()

            run(go())


def test_client_errors_are_passed_on_not_retried() -> None:
    with servers(Script(status=400), Script(tokens=2)) as srvs:

        async def go() -> None:
            p = pool([s.base_url for s in srvs])
            with pytest.raises(UpstreamRejected) as err:
                await collect(p)  # round-robin starts at replica 0, the one that refuses
            assert err.value.status_code == 400 and "scripted failure" in err.value.message
            assert err.value.code == "scripted"
            assert [r["requests"] for r in p.stats()] == [1, 0]
            await p.aclose()

        run(go())


def test_every_replica_overloaded_is_503_with_retry_after() -> None:
    with servers(Script(status=429, retry_after=3), Script(status=503)) as srvs:

        async def go() -> None:
            p = pool([s.base_url for s in srvs])
            with pytest.raises(Overloaded) as err:
                await collect(p)
            assert err.value.retry_after == 3
            await p.aclose()

        run(go())


def test_mid_stream_death_raises_promptly() -> None:
    with servers(Script(tokens=10, itl_s=0.01, die_after=3), Script(tokens=10)) as srvs:

        async def go() -> None:
            p = pool([srvs[0].base_url, srvs[1].base_url])
            got: list[str] = []
            t0 = time.monotonic()
            with pytest.raises(UpstreamError) as err:
                async for c in p.stream("/chat/completions", BODY):
                    got.append(c["choices"][0]["delta"]["content"])
            assert got == ["w0 ", "w1 ", "w2 "]  # no retry once tokens went out
            assert "mid-stream" in err.value.message and time.monotonic() - t0 < 2
            assert p.stats()[0]["failures"] == 1 and p.stats()[0]["in_flight"] == 0
            await p.aclose()

        run(go())


def test_stall_is_bounded_by_the_read_timeout() -> None:
    with servers(Script(tokens=10, stall_after=2)) as srvs:

        async def go() -> None:
            p = pool([srvs[0].base_url], timeout_s=0.3)
            t0 = time.monotonic()
            with pytest.raises(UpstreamError, match="mid-stream"):
                await collect(p)
            assert time.monotonic() - t0 < 3
            await p.aclose()

        run(go())


def test_a_stall_before_the_first_chunk_is_retried_elsewhere() -> None:
    with servers(Script(tokens=3, stall_after=0), Script(tokens=3)) as srvs:

        async def go() -> None:
            p = pool([s.base_url for s in srvs], timeout_s=0.3)
            assert await collect(p) == ["w0 ", "w1 ", "w2 ", ""]
            assert [r["failures"] for r in p.stats()] == [1, 0]
            await p.aclose()

        run(go())


def test_a_caller_that_leaves_frees_its_slot_without_a_failure() -> None:
    with servers(Script(tokens=50, itl_s=0.01)) as srvs:

        async def go() -> None:
            p = pool([srvs[0].base_url], PoolPolicy(max_concurrency=1, health_check_s=0))
            stream = p.stream("/chat/completions", BODY)
            async for _ in stream:
                break
            await stream.aclose()
            assert p.stats()[0]["in_flight"] == 0 and p.stats()[0]["failures"] == 0
            task = asyncio.create_task(collect(p))
            await _until(lambda: p.stats()[0]["in_flight"] == 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert p.stats()[0]["in_flight"] == 0
            assert len(await collect(p)) == 51  # the one slot is free again
            await p.aclose()

        run(go())


def test_upstream_error_chunk_raises() -> None:
    # A second server answering with an in-stream error frame: lokal's own shape for a failed generation.
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def chat(request: Any) -> StreamingResponse:
        async def gen() -> Any:
            yield b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
            yield b'data: {"error":{"message":"engine blew up","type":"server_error"}}\n\n'

        return StreamingResponse(gen(), media_type="text/event-stream")

    srv = ScriptedServer(Script())
    srv.app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    srv._make_server()
    with srv:

        async def go() -> None:
            p = pool([srv.base_url])
            with pytest.raises(UpstreamError, match="engine blew up"):
                await collect(p)
            await p.aclose()

        run(go())


def test_ejection_after_failures_and_return_after_cooldown() -> None:
    with servers(Script(status=500), Script(tokens=1)) as srvs:
        flaky, good = srvs

        async def go() -> None:
            p = pool([flaky.base_url, good.base_url], PoolPolicy(eject_after=2, eject_cooldown_s=0.3, health_check_s=0))
            for _ in range(4):
                await collect(p)  # each lands on the good one in the end
            st = p.stats()
            assert st[0]["failures"] == 2 and not st[0]["healthy"] and st[0]["ejected_for_s"] > 0
            before = st[0]["requests"]
            for _ in range(3):
                await collect(p)
            assert p.stats()[0]["requests"] == before  # ejected: not even tried
            flaky.script = Script(tokens=1)  # it recovers
            await asyncio.sleep(0.35)
            assert p.stats()[0]["healthy"]  # cooled down: half-open
            for _ in range(4):
                await collect(p)
            st = p.stats()
            assert st[0]["requests"] > before and st[0]["consecutive_failures"] == 0
            await p.aclose()

        run(go())


def test_half_open_trial_failure_ejects_again() -> None:
    with servers(Script(status=500), Script(tokens=1)) as srvs:

        async def go() -> None:
            p = pool([s.base_url for s in srvs], PoolPolicy(eject_after=1, eject_cooldown_s=0.2, health_check_s=0))
            await collect(p)
            assert not p.stats()[0]["healthy"]
            await asyncio.sleep(0.25)
            await asyncio.gather(*(collect(p) for _ in range(4)))
            st = p.stats()
            assert st[0]["requests"] == 2  # one trial only, which failed: out again
            assert not st[0]["healthy"] and st[0]["failures"] == 2
            await p.aclose()

        run(go())


def test_health_checks_mark_a_killed_replica_unhealthy_and_back() -> None:
    with servers(Script(tokens=1), Script(tokens=1)) as srvs:

        async def go() -> None:
            p = pool([s.base_url for s in srvs], PoolPolicy(health_check_s=0.05))
            await p.start()
            srvs[0].kill()
            await _until(lambda: not p.stats()[0]["healthy"])
            assert p.capacity == 64
            for _ in range(4):
                await collect(p)
            assert p.stats()[0]["failures"] == 0  # never sent one: the health check knew first
            srvs[0].restart()
            await _until(lambda: p.stats()[0]["healthy"])
            await p.aclose()

        run(go())


def test_killed_mid_run_no_failures_before_first_chunk() -> None:
    with servers(*[Script(ttft_s=0.05, itl_s=0.02, tokens=20)] * 3) as srvs:

        async def go() -> tuple[int, int, int]:
            p = pool([s.base_url for s in srvs], PoolPolicy(eject_after=1, eject_cooldown_s=5, health_check_s=0))
            ok = cut = failed_before = 0

            async def one() -> None:
                nonlocal ok, cut, failed_before
                n = 0
                try:
                    async for _ in p.stream("/chat/completions", BODY):
                        n += 1
                    ok += 1
                except UpstreamError:
                    if n:
                        cut += 1
                    else:
                        failed_before += 1

            tasks = [asyncio.create_task(one()) for _ in range(12)]
            await asyncio.sleep(0.15)
            await asyncio.to_thread(srvs[1].kill)
            tasks += [asyncio.create_task(one()) for _ in range(12)]
            await asyncio.wait_for(asyncio.gather(*tasks), 10)
            await p.aclose()
            return ok, cut, failed_before

        ok, cut, failed_before = run(go())
        assert failed_before == 0 and cut >= 1 and ok + cut == 24


def test_no_healthy_replica_tries_the_least_recently_failed() -> None:
    with servers(Script(status=500), Script(status=500)) as srvs:

        async def go() -> None:
            p = pool([s.base_url for s in srvs], PoolPolicy(eject_after=1, eject_cooldown_s=30, health_check_s=0))
            with pytest.raises(UpstreamError):
                await collect(p)
            assert not any(r["healthy"] for r in p.stats())
            srvs[0].script = Script(tokens=2)  # the one that failed first is back
            assert await collect(p) == ["w0 ", "w1 ", ""]
            srvs[0].script = Script(status=500)
            with pytest.raises(UpstreamError, match="no upstream replica is healthy"):
                await collect(p)
            await p.aclose()

        run(go())


def test_latency_mode_prefers_the_faster_replica() -> None:
    with servers(Script(ttft_s=0.15, tokens=1), Script(ttft_s=0.005, tokens=1)) as srvs:

        async def go() -> None:
            p = pool([s.base_url for s in srvs], PoolPolicy(balance="latency", health_check_s=0))
            for _ in range(12):
                await collect(p)
            slow, fast = p.stats()
            assert fast["latency_ewma_ms"] < slow["latency_ewma_ms"]
            assert fast["requests"] >= 10
            await p.aclose()

        run(go())


def test_post_json_retries_and_records_latency() -> None:
    with servers(Script(status=500), Script(tokens=2)) as srvs:

        async def go() -> None:
            p = pool([s.base_url for s in srvs])
            data = await p.post_json("/chat/completions", {"model": "m", "messages": []})
            assert data["choices"][0]["message"]["content"] == "w0 w1 "
            st = p.stats()
            assert st[0]["failures"] == 1 and st[1]["latency_ewma_ms"] is not None
            await p.aclose()

        run(go())


async def _until(cond: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)
