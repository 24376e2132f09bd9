"""Settings shared by the server, the CLI and the library, read from LOKAL_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import psutil
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORT = 5273  # Foundry Local's port: clients written for it find us without changes.


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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
