"""What a catalog entry is: one alias, several downloadable variants (per device), and what it can do."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Device = Literal["cpu", "cuda", "npu"]
EngineName = Literal["llamacpp", "onnx", "remote", "sentence-transformers"]
Task = Literal["chat-completion", "embeddings"]

# Aliases become file and URL path segments: refuse anything that could escape the cache folder.
ALIAS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$")


def is_safe_name(name: str) -> bool:
    base = name.split(":", 1)[0]
    return bool(ALIAS_RE.match(base)) and ".." not in name and "/" not in name and "\\" not in name


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str  # e.g. "qwen2.5-0.5b-instruct-q4_k_m-cpu:1" (Foundry-style: name ":" version)
    device: Device = "cpu"
    engine: EngineName = "llamacpp"
    repo: str | None = None  # Hugging Face repo id
    file: str | None = None  # file in the repo (GGUF) or folder (ONNX GenAI)
    revision: str = "main"
    url: str | None = None  # direct download URL; overrides repo/file
    path: str | None = None  # a local file or folder the user brought (model add / synth)
    size_bytes: int | None = None
    size_exact: bool = False  # size_bytes is the artifact's exact length (checked after download)
    sha256: str | None = None
    quant: str | None = None
    gpu_layers: int | None = None  # llama.cpp n_gpu_layers; -1 = all; None = engine default for the device
    base_url: str | None = None  # remote engine: OpenAI-compatible upstream, e.g. http://gpu-box:8000/v1
    api_key_env: str | None = None  # remote engine: env var holding the key
    upstream_model: str | None = None  # remote engine: model name at the upstream

    @field_validator("id")
    @classmethod
    def _safe_id(cls, v: str) -> str:
        if not is_safe_name(v):
            raise ValueError(f"variant id {v!r} must be letters, digits, '.', '_', '-' (and ':version')")
        return v

    @field_validator("file")
    @classmethod
    def _safe_file(cls, v: str | None) -> str | None:
        # The file name becomes part of a cache path; a ".." segment or an absolute path would escape it.
        if v is not None and (
            v.startswith("/") or "\\" in v or any(p in ("", ".", "..") for p in v.split("/"))
        ):
            raise ValueError(f"file {v!r} must be a relative path inside the repo without '..' segments")
        return v

    @field_validator("sha256")
    @classmethod
    def _hex_sha(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", v):
            raise ValueError("sha256 must be 64 hex characters")
        return v.lower() if v else v

    @property
    def name(self) -> str:
        return self.id.split(":", 1)[0]

    @property
    def version(self) -> int:
        _, _, v = self.id.partition(":")
        return int(v) if v.isdigit() else 1

    @property
    def filename(self) -> str:
        if self.path:
            return self.path.rsplit("/", 1)[-1]
        if self.file:
            return self.file.rsplit("/", 1)[-1]
        if self.url:
            return self.url.rsplit("/", 1)[-1].split("?", 1)[0] or "model.gguf"
        return "model.gguf"


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alias: str
    display_name: str | None = None
    publisher: str = "unknown"
    license: str = "unknown"
    license_url: str | None = None
    task: Task = "chat-completion"
    chat_template: str | None = None  # family, e.g. "chatml", "llama3", "phi3"; None = from GGUF metadata
    context_length: int = 4096
    max_output_tokens: int | None = None
    parameters_b: float | None = None
    capabilities: list[str] = Field(default_factory=lambda: ["general"])
    supports_tools: bool = False
    synthetic: bool = False
    description: str = ""
    variants: list[Variant]

    @field_validator("alias")
    @classmethod
    def _safe_alias(cls, v: str) -> str:
        if not is_safe_name(v) or ":" in v:
            raise ValueError(f"alias {v!r} must be letters, digits, '.', '_', '-'")
        return v

    def variant_for(self, devices: Sequence[str]) -> Variant:
        """Best variant for the devices present, in preference order (e.g. ["cuda", "cpu"])."""
        for dev in devices:
            for v in self.variants:
                if v.device == dev:
                    return v
        return self.variants[0]
