"""Foundry Local's REST contract beside /v1: code written for Foundry Local (SDK, CLI) runs unchanged.

Routes: GET /foundry/list, GET /openai/status, /openai/models, /openai/loadedmodels, /openai/load/{id},
/openai/unload/{id}, /openai/unloadall, POST /openai/download. Field names and error wording follow what
`foundry-local-sdk` 0.5.x parses and validates (foundry_local/models.py, api.py, client.py).

lokal's catalog has no Foundry `version`, `promptTemplate` or execution provider: they are derived here from
the variant id (`<name>:<version>`), the chat template family and the device.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from lokal import hardware
from lokal.catalog.download import Downloaded, fetch, source_url
from lokal.catalog.spec import ModelSpec, Variant
from lokal.errors import DownloadError, LokalError, ModelNotDownloaded
from lokal.foundry.download_pool import DownloadPool
from lokal.protocol.decode import load_json, validation_message
from lokal.runtime.engines import traits_of
from lokal.runtime.manager import check_ttl
from lokal.runtime.services import Services

log = logging.getLogger("lokal.foundry")

# The SDK turns exactly this phrase into its "download it first" error (FoundryLocalManager.load_model).
NOT_DOWNLOADED_PHRASE = "No OpenAIService provider found for modelName"
PIPE_NAME = "lokal"  # Foundry reports a named pipe; lokal has none, the name only fills the field
_NO_AUTO_UNLOAD_SECONDS = 10 * 365 * 24 * 3600.0  # `unload=false`: kept loaded; finite so it serialises

DEVICE_TYPES = {"cpu": "CPU", "cuda": "GPU", "npu": "NPU", "webgpu": "GPU"}
EXECUTION_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "npu": "QNNExecutionProvider",
    "webgpu": "WebGpuExecutionProvider",  # Foundry Local's name; lokal's web variants run in the playground
}

# Foundry's promptTemplate uses `{Content}` as the placeholder. lokal formats prompts with the GGUF's own
# template; these are informational, keyed by the catalog's chat_template family.
_CHATML = {
    "system": "<|im_start|>system\n{Content}<|im_end|>",
    "user": "<|im_start|>user\n{Content}<|im_end|>",
    "assistant": "<|im_start|>assistant\n{Content}<|im_end|>",
    "prompt": "<|im_start|>user\n{Content}<|im_end|>\n<|im_start|>assistant",
}
PROMPT_TEMPLATES: dict[str, dict[str, str]] = {
    "chatml": _CHATML,
    "qwen": _CHATML,
    "phi3": {
        "system": "<|system|>\n{Content}<|end|>",
        "user": "<|user|>\n{Content}<|end|>",
        "assistant": "<|assistant|>\n{Content}<|end|>",
        "prompt": "<|user|>\n{Content}<|end|>\n<|assistant|>",
    },
    "phi4": {
        "system": "<|system|>{Content}<|end|>",
        "user": "<|user|>{Content}<|end|>",
        "assistant": "<|assistant|>{Content}<|end|>",
        "prompt": "<|user|>{Content}<|end|><|assistant|>",
    },
    "llama3": {
        "system": "<|start_header_id|>system<|end_header_id|>\n\n{Content}<|eot_id|>",
        "user": "<|start_header_id|>user<|end_header_id|>\n\n{Content}<|eot_id|>",
        "assistant": "<|start_header_id|>assistant<|end_header_id|>\n\n{Content}<|eot_id|>",
        "prompt": "<|start_header_id|>user<|end_header_id|>\n\n{Content}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    },
    "mistral": {
        "user": "[INST] {Content} [/INST]",
        "assistant": "{Content}</s>",
        "prompt": "[INST] {Content} [/INST]",
    },
    "gemma": {
        "user": "<start_of_turn>user\n{Content}<end_of_turn>\n",
        "assistant": "<start_of_turn>model\n{Content}<end_of_turn>\n",
        "prompt": "<start_of_turn>user\n{Content}<end_of_turn>\n<start_of_turn>model\n",
    },
    "deepseek-coder": {
        "system": "{Content}\n",
        "user": "### Instruction:\n{Content}\n",
        "assistant": "### Response:\n{Content}\n<|EOT|>\n",
        "prompt": "### Instruction:\n{Content}\n### Response:\n",
    },
    "harmony": {
        "system": "<|start|>system<|message|>{Content}<|end|>",
        "user": "<|start|>user<|message|>{Content}<|end|>",
        "assistant": "<|start|>assistant<|channel|>final<|message|>{Content}<|end|>",
        "prompt": "<|start|>user<|message|>{Content}<|end|><|start|>assistant",
    },
}


# -- catalog entries ---------------------------------------------------------------------------------------


def ordered_variants(services: Services) -> list[tuple[ModelSpec, Variant]]:
    """Every variant, each alias's variants best-first for this machine.

    The SDK picks the first catalog entry of an alias, so this order is how `get_model_info(alias)` agrees
    with Catalog.resolve(alias): the variant it picks (device and installed engines) first, then GPU before CPU
    when a GPU is present, devices this machine lacks last.
    """
    devices = hardware.devices(services.settings)
    rank = {d: i for i, d in enumerate(devices)}
    out: list[tuple[ModelSpec, Variant]] = []
    for spec in services.catalog.specs():
        chosen = services.catalog.best_variant(spec)  # first: resolution also weighs which engines are installed
        ranked = sorted(
            enumerate(spec.variants),
            key=lambda iv: (iv[1] is not chosen, rank.get(iv[1].device, len(rank)), iv[0]),
        )
        out.extend((spec, v) for _, v in ranked)
    return out


def _uri(services: Services, variant: Variant) -> str:
    if variant.is_upstream:
        return variant.base_url or ""
    if variant.path:
        return Path(variant.path).expanduser().absolute().as_uri()
    try:
        return source_url(variant, services.settings)
    except LokalError:
        return ""


def _provider_type(variant: Variant) -> str:
    if variant.is_upstream:
        return "Remote"
    if variant.path:
        return "Local"
    if variant.url:
        return "Url"
    return "HuggingFace"


def _size_mb(services: Services, variant: Variant) -> int:
    size = variant.size_bytes
    if size is None and variant.needs_artifact:
        path = services.locate(variant)
        if path is not None and path.is_file():
            size = path.stat().st_size
        elif path is not None and path.is_dir():
            size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return round((size or 0) / 2**20)


def list_entry(services: Services, spec: ModelSpec, variant: Variant) -> dict[str, Any]:
    """One /foundry/list element, every field the SDK's FoundryListResponseModel requires."""
    hub = services.settings.hf_endpoint.rstrip("/")
    return {
        "name": variant.id,
        "displayName": spec.display_name or spec.alias,
        "modelType": traits_of(variant.engine).label,  # "GGUF", "ONNX", ...
        "providerType": _provider_type(variant),
        "uri": _uri(services, variant),
        "version": str(variant.version),
        "promptTemplate": PROMPT_TEMPLATES.get((spec.chat_template or "").lower()),
        "publisher": spec.publisher,
        "task": spec.task,
        "runtime": {
            "deviceType": DEVICE_TYPES.get(variant.device, "CPU"),
            "executionProvider": EXECUTION_PROVIDERS.get(variant.device, "CPUExecutionProvider"),
        },
        "fileSizeMb": _size_mb(services, variant),
        "modelSettings": {"parameters": []},
        "alias": spec.alias,
        "supportsToolCalling": spec.supports_tools,
        "license": spec.license,
        "licenseDescription": spec.license_url or spec.license,
        "parentModelUri": f"{hub}/{variant.repo}" if variant.repo else "",
        "maxOutputTokens": spec.max_output_tokens,
        "minFLVersion": None,
    }


# -- downloads ---------------------------------------------------------------------------------------------

_POOL_KEY = "download_pool"


class DownloadModel(BaseModel):
    """The SDK's `FoundryModelInfo.to_download_body()`; only the name matters (the catalog has the source)."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(validation_alias=AliasChoices("Name", "name"))


class DownloadRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | DownloadModel
    token: str | None = None

    @property
    def name(self) -> str:
        return self.model if isinstance(self.model, str) else self.model.name


def _outcome(success: bool, message: str | None, *, verified: bool | None = None) -> str:
    body: dict[str, Any] = {"success": success, "errorMessage": message}
    if verified is False:  # lokal's addition: the bytes could not be checked (the SDK ignores the field)
        body["verified"] = False
    return json.dumps(body) + "\n"


def _progress_line(variant: Variant, done: int, total: int | None) -> str:
    mb = f"{done / 1e6:.1f}/{total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"
    if not total:
        return f"{variant.filename} {mb}\n"
    # Percentage first: the SDK takes the first "NN.N%" on the line, and file names may hold digits.
    return f"{min(100.0, 100.0 * done / total):5.1f}% {variant.filename} {mb}\n"


def _pool(services: Services) -> DownloadPool:
    """The app's download pool (install() makes it; Services built without it get one on first use)."""
    pool = services.extras.get(_POOL_KEY)
    if not isinstance(pool, DownloadPool):
        pool = services.extras[_POOL_KEY] = DownloadPool()
    return pool


async def _download_stream(services: Services, variant: Variant, token: str | None) -> AsyncIterator[str]:
    """Progress lines while the blocking download runs on a download thread, then one JSON outcome line.

    Downloads never use asyncio's default thread pool (model loads do): see download_pool.py.
    """
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[int, int | None] | str | None] = asyncio.Queue()
    cancel = threading.Event()

    def progress(done: int, total: int | None) -> None:
        loop.call_soon_threadsafe(events.put_nowait, (done, total))

    def warn(note: str) -> None:
        log.warning("%s", note)
        loop.call_soon_threadsafe(events.put_nowait, note)

    def run() -> Downloaded:
        if cancel.is_set():  # the client left while this waited for a slot
            raise DownloadError("download cancelled", code="download_cancelled")
        return fetch(variant, services.settings, token=token, progress=progress, cancel=cancel, warn=warn)

    pool = _pool(services)
    try:
        task = pool.submit(run, cancel)
    except RuntimeError as exc:  # shutting down
        yield _outcome(False, str(exc))
        return
    task.add_done_callback(lambda _: events.put_nowait(None))
    last_pct, last_at = -1.0, 0.0
    try:
        yield f"  0.0% {variant.filename} starting download of {variant.id}\n"
        if waiting := pool.waiting():
            yield (
                f"  0.0% {variant.filename} waiting for a download slot ({pool.workers} run at a time, "
                f"{waiting} waiting)\n"
            )
        while (item := await events.get()) is not None:
            if isinstance(item, str):
                yield f"warning: {item}\n"
                continue
            done, total = item
            pct = 100.0 * done / total if total else -1.0
            now = time.monotonic()
            finished = total is not None and done >= total
            if finished or (now - last_at >= 0.25 and pct != last_pct):
                last_pct, last_at = pct, now
                yield _progress_line(variant, done, total)
        try:
            result = task.result()
        except LokalError as exc:
            yield _outcome(False, exc.message)
        except Exception as exc:  # any failure must still end the stream with Foundry's outcome object
            log.exception("download of %s failed", variant.id)
            yield _outcome(False, f"{type(exc).__name__}: {exc}")
        else:
            yield _outcome(True, None, verified=result.verified)
    finally:
        # The client went away (or we are done): stop the transfer, or drop it if it has not started yet;
        # a `.part` stays for the next attempt.
        cancel.set()
        if not task.done():
            task.cancel()


# -- routes ------------------------------------------------------------------------------------------------

def create_router(services: Services) -> APIRouter:
    """The routes, on the app's Services (as the router, RAG and playground features take theirs)."""
    router = APIRouter(tags=["foundry"])

    @router.get("/foundry/list")
    async def foundry_list() -> list[dict[str, Any]]:
        return [list_entry(services, spec, variant) for spec, variant in ordered_variants(services)]


    @router.get("/openai/status")
    async def openai_status(request: Request) -> dict[str, Any]:
        endpoints = [str(request.base_url).rstrip("/")]
        model_dir = str(services.settings.models_dir)
        # The SDK reads camelCase; Foundry's REST reference spells the same fields in PascalCase.
        return {
            "endpoints": endpoints,
            "modelDirPath": model_dir,
            "pipeName": PIPE_NAME,
            "Endpoints": endpoints,
            "ModelDirPath": model_dir,
            "PipeName": PIPE_NAME,
        }


    @router.get("/openai/models")
    async def openai_models() -> list[str]:
        return [variant.id for _, variant in ordered_variants(services) if services.is_cached(variant)]


    @router.get("/openai/loadedmodels")
    async def openai_loaded() -> list[str]:
        return [lm.id for lm in services.manager.loaded()]


    @router.get("/openai/load/{name}")
    async def openai_load(
        name: str, ttl: float | None = None, unload: bool = True, ep: str | None = None
    ) -> dict[str, Any]:
        """Load a model. `ttl` > 0 sets its idle lifetime; `unload=false` without ttl keeps it loaded.

        `ep` (execution provider) is accepted and ignored: the catalog variant decides the device.
        """
        if ttl is not None and ttl > 0:
            keep: float | None = check_ttl(ttl)  # inf or absurd: a 400, not a TTL that breaks /lokal/ps
        elif not unload:
            keep = _NO_AUTO_UNLOAD_SECONDS
        else:
            keep = None
        try:
            lm = await services.manager.get(name, ttl=keep)
        except ModelNotDownloaded as exc:
            raise ModelNotDownloaded(f"{NOT_DOWNLOADED_PHRASE} {name}: {exc.message}", param="model") from None
        return {"id": lm.id, "alias": lm.spec.alias, "ttl": lm.ttl, "loadSeconds": lm.engine.info.load_seconds}


    @router.get("/openai/unload/{name}")
    async def openai_unload(name: str, force: bool = False) -> dict[str, Any]:
        return {"unloaded": await services.manager.unload(name, force=force)}


    @router.get("/openai/unloadall")
    async def openai_unload_all() -> dict[str, Any]:
        manager = services.manager
        ids = [lm.id for lm in manager.loaded()]
        for model_id in ids:
            await manager.unload(model_id, force=True)
        return {"unloaded": ids}


    @router.post("/openai/download")
    async def openai_download(request: Request) -> Response:
        """Stream progress lines ("NN.N% file a/b MB"), then {"success": bool, "errorMessage": str|null}.

        The request's Uri is not trusted: the catalog entry named by model.Name says where the bytes come from.
        """
        try:
            body = DownloadRequest.model_validate(load_json(await request.body()))
            _, variant = services.catalog.resolve(body.name)
        except ValidationError as exc:
            message, _ = validation_message(exc)
            return JSONResponse({"success": False, "errorMessage": message}, status_code=400)
        except LokalError as exc:
            return JSONResponse({"success": False, "errorMessage": exc.message}, status_code=exc.status_code)
        if services.is_cached(variant):
            return StreamingResponse(
                iter([f"100.0% {variant.filename} already in the cache\n", _outcome(True, None)]),
                media_type="text/plain; charset=utf-8",
            )
        return StreamingResponse(
            _download_stream(services, variant, body.token),
            media_type="text/plain; charset=utf-8",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router


class FoundryApi:
    """The feature: these routes, and a download pool that stops with the app."""

    name = "foundry"

    def install(self, app: FastAPI, services: Services) -> None:
        app.include_router(create_router(services))
        pool = services.extras[_POOL_KEY] = DownloadPool()
        # Stop downloads when the app shuts down: wrap its lifespan rather than edit the app factory's.
        inner = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(a: Any) -> AsyncIterator[Any]:
            async with inner(a) as value:
                try:
                    yield value
                finally:
                    pool.close()

        app.router.lifespan_context = lifespan
