"""Settings shared by the server, the CLI and the library, read from LOKAL_* environment variables.

Every LOKAL_* knob is a field here; the rest of the package gets them from a Settings it is given (or
get_settings()), never from os.environ. The other uses of the environment are here too: env_value() (secrets
and URLs that a catalog or a config file names by variable, read when they are used), child_env() (what a child
process is started with) and library_default() (variables third-party libraries read instead of arguments).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import psutil
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORT = 5273  # Foundry Local's port: clients written for it find us without changes.
# Engine knobs: the engines default to these when made without Settings (tests, benchmarks), so the two agree.
DEFAULT_MAX_CONTEXT = 8192  # KV cache grows with it; most chats fit
# A prompt is read in chunks sized to take about this long each, so a cancel (client gone, forced unload) is
# seen between two chunks well within a second, on any machine and model, while chunks stay large enough that
# reading the prompt costs about what one big decode would.
DEFAULT_PREFILL_SECONDS = 0.25
# Prompt tokens per batched step while others are generating: their pause per step stays short (~0.25 s for a
# 0.5b model on 2 cores) and a long prompt still advances. docs/batching.md has the measurements.
DEFAULT_PREFILL_CHUNK = 64
# Copying another slot's cache copies that slot's whole KV buffer (llama.cpp cannot copy part of a stream):
# ~100 MB for a 0.5b model at 8k cells per slot, ~20 ms on a 2-core CPU, where 32 prompt tokens take ~200 ms.
DEFAULT_MIN_SHARED_PREFIX = 32


def _default_budget_mb() -> int:
    # Half of physical memory leaves room for the OS, the server and the user's other programs.
    return int(psutil.virtual_memory().total / 2**20 / 2)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOKAL_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".lokal")
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_loaded_models: int = 2
    memory_budget_mb: int = Field(default_factory=_default_budget_mb)
    ttl_seconds: float = 600.0
    api_key: str | None = None
    cors_origins: list[str] = Field(default_factory=list)
    # Host names the server answers besides loopback names and IP literals (DNS-rebinding guard); "*" = any.
    allowed_hosts: list[str] = Field(default_factory=list)
    max_body_mb: float = 8.0  # request bodies above this get 413 before they are parsed
    metrics_public: bool = False  # with an API key set, /metrics needs it too unless this is on
    queue_size: int = 32
    parallel: int | None = None  # requests decoded together per llama.cpp model; None = from context and budget
    n_threads: int | None = None
    hf_endpoint: str = "https://huggingface.co"
    download_read_timeout: float = 30.0  # seconds without a byte before a download stops (its .part is kept)
    offline: bool = False
    device: str | None = None  # force "cpu" or "cuda"; None = detect
    max_context: int = DEFAULT_MAX_CONTEXT  # most context a model is loaded with (llama.cpp and ONNX GenAI)
    prefill_seconds: float = DEFAULT_PREFILL_SECONDS  # llama.cpp: time one prompt chunk is paced to
    prefill_chunk: int = DEFAULT_PREFILL_CHUNK  # llama.cpp batching: prompt tokens per step beside decoding
    min_shared_prefix: int = DEFAULT_MIN_SHARED_PREFIX  # llama.cpp batching: least prefix worth a cache copy
    router_encoder: str = "onnx"  # the router's MiniLM: "torch" uses the shared torch embedder instead of ONNX
    router_warm: bool = False  # load the router's MiniLM at start-up instead of on the first request

    @field_validator("home", mode="before")
    @classmethod
    def _expand(cls, v: object) -> object:
        return Path(v).expanduser() if isinstance(v, str | Path) else v

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def user_catalog(self) -> Path:
        return self.home / "catalog.yaml"

    @property
    def traces_dir(self) -> Path:
        return self.home / "traces"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


_chosen: Settings | None = None  # set by use_settings(); None: get_settings() reads the environment


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings: those `lokal serve` built from its options, else read from LOKAL_* variables
    (once; tests that change the variables call get_settings.cache_clear())."""
    return _chosen if _chosen is not None else Settings()


def use_settings(settings: Settings) -> Settings:
    """Make `settings` what get_settings() returns in this process from now on, and return them."""
    global _chosen
    _chosen = settings
    get_settings.cache_clear()
    return settings


def env_value(name: str, default: str | None = None) -> str | None:
    """The environment variable `name`, read now: an API key named by a catalog's `api_key_env`, HF_TOKEN, a
    server URL. Read at use rather than kept in Settings, so a key is in no settings dump and the name can be
    any variable the user picked."""
    return os.environ.get(name, default)


def child_env(**values: str) -> dict[str, str]:
    """This process's environment plus `values`, for a child process (a detached server, Chainlit, a model
    builder): it reads its settings from LOKAL_* variables and its libraries' from theirs."""
    return {**os.environ, **values}


def library_default(name: str, value: str) -> str:
    """Set a third-party library's variable unless the user did (HF_HUB_OFFLINE, CHAINLIT_APP_ROOT): those
    libraries read only the environment, some of them at import. Returns the value in effect."""
    return os.environ.setdefault(name, value)
