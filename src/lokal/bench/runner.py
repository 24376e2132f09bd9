"""Load patterns: sequential, fixed concurrency (closed loop), constant and Poisson rate (open loop), and a
sweep over load levels that finds the highest one whose SLO still holds. Every run is bounded in request
count (rounds x prompts) and optionally in time (`max_duration_s` per level)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

from lokal.bench.client import FATAL_STATUS, BenchClient, RequestParams, TokenCounter, load_tokenizer
from lokal.bench.config import BenchConfig, LoadPattern, ModelEntry
from lokal.bench.metrics import RequestRecord, summarize
from lokal.bench.prompts import Prompt
from lokal.bench.result import BenchResult, ModelResult, StepResult
from lokal.bench.server_info import either, fetch_server_figures, fetch_synthetic

Job = tuple[int, Prompt]  # (round, prompt)


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    model: str
    phase: Literal["start", "warmup", "measure", "done"]
    step: str
    completed: int
    total: int
    record: RequestRecord | None = None


ProgressFn = Callable[[ProgressEvent], None]


class _Loop(NamedTuple):
    records: list[RequestRecord]
    truncated: bool
    t0: float
    duration_s: float
    offsets: list[float] | None = None


def schedule(pattern: LoadPattern, n: int, seed: int | None = None) -> list[float]:
    """Send offsets (s) from the level's start: evenly spaced, or exponential gaps (Poisson arrivals)."""
    if pattern.rate is None:
        return [0.0] * n
    if pattern.kind == "poisson":
        gaps = np.random.default_rng(seed if seed is not None else 0).exponential(1.0 / pattern.rate, size=n)
        return [0.0, *np.cumsum(gaps[:-1]).tolist()] if n else []
    return [i / pattern.rate for i in range(n)]


def _is_fatal(r: RequestRecord) -> bool:
    # Same answer on every retry (unknown model, bad key) or nobody listening: stop hammering this model.
    return r.error_kind == "connect" or (r.status_code in FATAL_STATUS and not r.ok)


class _ModelRun:
    """One model's warm-up and load levels against one client."""

    def __init__(
        self, config: BenchConfig, entry: ModelEntry, client: BenchClient, on_progress: ProgressFn | None
    ) -> None:
        self.config = config
        self.entry = entry
        self.client = client
        self.on_progress = on_progress
        self.params = RequestParams(
            max_tokens=config.max_tokens,
            temperature=config.temperature,
            seed=config.seed,
            stream=config.stream,
            ignore_eos=config.ignore_eos,
            logprobs=config.logprobs,
            extra_body=config.extra_body,
        )
        self.fatal: RequestRecord | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self.done = 0
        self.total = 0

    def _emit(self, phase: Literal["start", "warmup", "measure", "done"], step: str, rec: RequestRecord | None) -> None:
        if self.on_progress is not None:
            self.on_progress(ProgressEvent(self.entry.display, phase, step, self.done, self.total, rec))

    async def _one(self, job: Job, t0: float, phase: Literal["warmup", "measure"], step: str) -> RequestRecord:
        rnd, prompt = job
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            rec = await self.client.chat(
                self.entry.name,
                prompt,
                self.params,
                round_index=rnd,
                t0=t0,
                keep_output=self.config.keep_outputs or rnd == 0,
            )
        finally:
            self.in_flight -= 1
        if self.fatal is None and _is_fatal(rec):
            self.fatal = rec
        self.done += 1
        self._emit(phase, step, rec)
        return rec

    def _expired(self, deadline: float | None) -> bool:
        return deadline is not None and time.perf_counter() >= deadline

    async def closed_loop(
        self, jobs: Sequence[Job], concurrency: int, phase: Literal["warmup", "measure"], step: str
    ) -> _Loop:
        """`concurrency` workers, each sending its next request as soon as its last one finished."""
        records: list[RequestRecord | None] = [None] * len(jobs)
        pending = iter(enumerate(jobs))
        deadline = self._deadline()
        truncated = False
        t0 = time.perf_counter()

        async def worker() -> None:
            nonlocal truncated
            for i, job in pending:  # the shared iterator hands each job to exactly one worker
                if self.fatal is not None or self._expired(deadline):
                    truncated = True
                    return
                records[i] = await self._one(job, t0, phase, step)

        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(jobs))))))
        return _Loop([r for r in records if r is not None], truncated, t0, time.perf_counter() - t0)

    async def open_loop(self, jobs: Sequence[Job], pattern: LoadPattern, step: str) -> _Loop:
        """Requests sent on a clock regardless of how many are still running (optionally capped)."""
        offsets = schedule(pattern, len(jobs), self.config.seed)
        cap = asyncio.Semaphore(pattern.max_concurrency) if pattern.max_concurrency else None
        deadline = self._deadline()
        truncated = False
        t0 = time.perf_counter()

        async def send(job: Job) -> RequestRecord:
            if cap is None:
                return await self._one(job, t0, "measure", step)
            async with cap:
                return await self._one(job, t0, "measure", step)

        tasks: list[asyncio.Task[RequestRecord]] = []
        for job, offset in zip(jobs, offsets, strict=True):
            delay = t0 + offset - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.fatal is not None or self._expired(deadline):
                truncated = True
                break
            tasks.append(asyncio.create_task(send(job)))
        records = list(await asyncio.gather(*tasks))
        return _Loop(records, truncated, t0, time.perf_counter() - t0, offsets[: len(records)])

    def _deadline(self) -> float | None:
        d = self.config.max_duration_s
        return time.perf_counter() + d if d else None

    async def run_level(self, pattern: LoadPattern) -> StepResult:
        jobs = [(r, p) for r in range(self.config.rounds) for p in self.config.prompts]
        self.max_in_flight = 0
        if pattern.kind in ("rate", "poisson"):
            out = await self.open_loop(jobs, pattern, pattern.label)
        else:
            conc = pattern.concurrency if pattern.kind == "concurrency" else 1
            out = await self.closed_loop(jobs, conc, "measure", pattern.label)
        slo = self.config.slo
        summary = summarize(out.records, duration_s=out.duration_s, max_in_flight=self.max_in_flight, slo=slo)
        slo_ok = None
        if slo is not None and slo.is_set() and summary.slo_attainment is not None:
            slo_ok = summary.slo_attainment >= slo.attainment
        return StepResult(
            pattern,
            summary,
            out.records,
            truncated=out.truncated,
            slo_ok=slo_ok,
            schedule_s=out.offsets,
            t0_perf_s=out.t0,
        )

    async def run(self) -> ModelResult:
        cfg = self.config
        result = ModelResult(entry=self.entry, endpoint=self.client.endpoint)
        levels = cfg.levels
        n_prompts = len(cfg.prompts)
        self.total = n_prompts * (cfg.warmup_rounds + cfg.rounds * len(levels))
        self._emit("start", "", None)
        # Asked first and whatever happens next: a failed synthetic model is still labelled synthetic.
        result.synthetic = await fetch_synthetic(self.client, self.client.endpoint, self.entry.name)
        if cfg.warmup_rounds:
            jobs = [(-1 - r, p) for r in range(cfg.warmup_rounds) for p in cfg.prompts]
            first = levels[0]
            conc = first.concurrency if first.kind == "concurrency" else 1
            result.warmup = (await self.closed_loop(jobs, conc, "warmup", "warm-up")).records
            if not any(r.ok for r in result.warmup):
                return self._failed(result, result.warmup)

        for level in levels:
            step = await self.run_level(level)
            result.steps.append(step)
            if self.fatal is not None:
                break
            if cfg.sweep is not None and step.slo_ok is False and cfg.sweep.stop_on_fail:
                break
        for step in result.steps:
            for r in step.records:
                if r.ok and r.output is not None:
                    result.samples.setdefault(r.prompt_id, r.output)
                if not cfg.keep_outputs:
                    r.output = None

        measured = result.records
        ok = sum(r.ok for r in measured)
        if ok == 0:
            return self._failed(result, measured)
        if ok < len(measured) or self.fatal is not None:
            result.status = "partial"
            result.error = next((r.error for r in measured if not r.ok), None)
        result.best_step = self._best_step(result.steps)
        if cfg.server_stats:
            result.server = await fetch_server_figures(self.client, self.client.endpoint, self.entry.name)
            if result.server is not None:
                result.synthetic = either(result.synthetic, result.server.synthetic)
        self._emit("done", "", None)
        return result

    def _best_step(self, steps: list[StepResult]) -> int | None:
        if self.config.sweep is None:
            return None
        if self.config.slo is not None and self.config.slo.is_set():
            held = [i for i, s in enumerate(steps) if s.slo_ok]
            return max(held, key=lambda i: steps[i].summary.request_throughput) if held else None
        return max(range(len(steps)), key=lambda i: steps[i].summary.request_throughput)

    def _failed(self, result: ModelResult, records: list[RequestRecord]) -> ModelResult:
        result.status = "failed"
        first = self.fatal or next((r for r in records if not r.ok), None)
        result.error = first.error if first else "no requests completed"
        self._emit("done", "", None)
        return result


def _max_connections(config: BenchConfig) -> int:
    caps = []
    for lv in config.levels:
        if lv.kind == "concurrency":
            caps.append(lv.concurrency)
        elif lv.kind in ("rate", "poisson"):
            caps.append(lv.max_concurrency or 1000)
    return max([1, *caps])


async def arun_bench(config: BenchConfig, *, on_progress: ProgressFn | None = None) -> BenchResult:
    """Measure every model in turn; a model that fails is recorded with its error and the run goes on."""
    counter: TokenCounter | None = load_tokenizer(config.tokenizer) if config.tokenizer else None
    clients: dict[tuple[str, str | None], BenchClient] = {}
    results: list[ModelResult] = []
    try:
        for entry in config.models:
            endpoint = entry.endpoint or config.endpoint
            key = entry.api_key(config.api_key)
            client = clients.get((endpoint, key))
            if client is None:
                client = BenchClient(
                    endpoint,
                    key,
                    timeout_s=config.request_timeout_s,
                    max_connections=_max_connections(config),
                    tokenizer=counter,
                )
                clients[(endpoint, key)] = client
            results.append(await _ModelRun(config, entry, client, on_progress).run())
    finally:
        for c in clients.values():
            await c.aclose()
    return BenchResult(config=config.to_dict(), models=results)


def run_bench(config: BenchConfig, *, on_progress: ProgressFn | None = None) -> BenchResult:
    """Synchronous entry point: `run_bench(BenchConfig(models=[ModelEntry(name="tiny")]))`."""
    return asyncio.run(arun_bench(config, on_progress=on_progress))
