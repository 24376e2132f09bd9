"""What a catalog entry is: one alias, several downloadable variants (per device), and what it can do."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lokal.engine_traits import EngineTraits
from lokal.hardware import Device

# A name in the engine registry (lokal.runtime.engines: lokal's own and installed plugins'); Variant checks it, so
# that a typo in a catalog is refused with the list of names.
EngineName = str
Balance = Literal["least_outstanding", "latency"]
Task = Literal["chat-completion", "embeddings"]

# Aliases become file and URL path segments: refuse anything that could escape the cache folder.
ALIAS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$")


# Hugging Face repo ids ("org/name"), as huggingface_hub.utils.validate_repo_id checks them: hf_hub_url raises
# on anything else, and it runs on every listing.
REPO_RE = re.compile(r"^(\b[\w\-.]+\b/)?\b[\w\-.]{1,96}\b$")
_URL_SCHEMES = ("http", "https")
FALLBACK_FILENAME = "model.gguf"  # a `url:` whose path ends in "/" (or has none) is stored under this name


def is_safe_name(name: str) -> bool:
    base = name.split(":", 1)[0]
    return bool(ALIAS_RE.match(base)) and ".." not in name and "/" not in name and "\\" not in name


def is_safe_segment(segment: str) -> bool:
    """A name that stays one path component: not empty, not "." or "..", no separators or NUL."""
    return segment not in ("", ".", "..") and not any(c in segment for c in "/\\\x00")


def url_filename(url: str) -> str:
    """The cache file name of a `url:` variant: the URL path's last segment (query and fragment dropped)."""
    return urlsplit(url).path.rsplit("/", 1)[-1] or FALLBACK_FILENAME


# A variant is a local artifact (these say where its file comes from) or an upstream (the fields after them).
ARTIFACT_FIELDS = ("repo", "file", "url", "path", "sha256", "size_bytes")
UPSTREAM_FIELDS = (
    "base_url",
    "api_key_env",
    "upstream_model",
    "replicas",
    "max_concurrency",
    "balance",
    "health_check_s",
    "eject_after",
    "eject_cooldown_s",
)
DEFAULT_MAX_CONCURRENCY = 64  # per replica, when the catalog does not say


def _no_nul(value: str, what: str) -> str:
    # A NUL byte makes every os call on the path raise ValueError: refuse it here, where the entry is named.
    if "\x00" in value:
        raise ValueError(f"{what} must not contain a NUL character")
    return value


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
    # -- an upstream (engine: remote): an OpenAI-compatible API, one or several replicas of it --
    base_url: str | None = None  # e.g. http://gpu-box:8000/v1
    api_key_env: str | None = None  # env var holding the key (the same for every replica)
    upstream_model: str | None = None  # model name at the upstream; default: the alias
    replicas: list[str] = Field(default_factory=list)  # more base URLs serving the same model
    max_concurrency: int | None = Field(default=None, ge=1)  # requests at once per replica; None: 64
    balance: Balance = "least_outstanding"  # or "latency": least outstanding, weighted by latency EWMA
    health_check_s: float = Field(default=5.0, ge=0)  # active health-check interval; 0 = off
    eject_after: int = Field(default=3, ge=1)  # consecutive failures before a replica rests
    eject_cooldown_s: float = Field(default=10.0, ge=0)  # how long it rests

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, v: str) -> str:
        from lokal.runtime.engines import entry_of  # the registry imports the engine layer, which imports this

        entry_of(v)  # its ValueError names the known engines
        return v

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
        if v is not None and (v.startswith("/") or not all(is_safe_segment(p) for p in v.split("/"))):
            raise ValueError(f"file {v!r} must be a relative path inside the repo without '..' segments")
        return v

    @field_validator("repo")
    @classmethod
    def _valid_repo(cls, v: str | None) -> str | None:
        if v is not None and (not REPO_RE.match(v) or ".." in v or "--" in v or v.endswith(".git")):
            raise ValueError(f"repo {v!r} must be a Hugging Face repo id such as 'org/name'")
        return v

    @field_validator("url")
    @classmethod
    def _valid_url(cls, v: str | None) -> str | None:
        """Only URLs whose cache file name is safe: the check runs here so that the bad entry is skipped,
        not every listing that later computes the variant's cache path."""
        if v is None:
            return v
        _no_nul(v, "url")
        try:
            parts = urlsplit(v)
            host = parts.hostname
        except ValueError as exc:  # e.g. an unclosed "[" in the host
            raise ValueError(f"url {v!r} is not a valid URL: {exc}") from None
        if parts.scheme.lower() not in _URL_SCHEMES or not host:
            raise ValueError(f"url {v!r} must be an http:// or https:// URL with a host name")
        if any(unquote(seg) in (".", "..") for seg in parts.path.split("/")):
            raise ValueError(f"url {v!r} must not contain '.' or '..' path segments")
        name = url_filename(v)
        if not is_safe_segment(name) or not is_safe_segment(unquote(name)):
            raise ValueError(f"url {v!r} does not end in a usable file name (got {name!r})")
        return v

    @field_validator("path")
    @classmethod
    def _usable_path(cls, v: str | None) -> str | None:
        if v is None:
            return v
        _no_nul(v, "path")
        if v.startswith("~"):
            try:
                Path(v).expanduser()
            except RuntimeError:  # "~someone/..." for a user this machine does not know
                raise ValueError(f"path {v!r} starts with '~' but that home folder is unknown") from None
        return v

    @field_validator("sha256")
    @classmethod
    def _hex_sha(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", v):
            raise ValueError("sha256 must be 64 hex characters")
        return v.lower() if v else v

    @field_validator("base_url", "replicas")
    @classmethod
    def _http_urls(cls, v: str | list[str] | None) -> str | list[str] | None:
        for url in [v] if isinstance(v, str) else v or []:
            try:
                parts = urlsplit(url)
                ok = parts.scheme.lower() in _URL_SCHEMES and bool(parts.hostname)
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"upstream URL {url!r} must be an http:// or https:// URL with a host name")
        return v

    @model_validator(mode="after")
    def _artifact_or_upstream(self) -> Variant:
        """Either a local artifact or an upstream, by what the engine is: a mix is a catalog mistake that would
        otherwise be half ignored (a sha256 nobody checks, a base_url nobody calls)."""
        written = self.model_fields_set
        if self.traits.needs_artifact:
            wrong = [f for f in UPSTREAM_FIELDS if f in written]
            if wrong:
                raise ValueError(
                    f"{', '.join(wrong)} only apply to an upstream (engine: remote); engine {self.engine!r} "
                    "loads a local file"
                )
            return self
        wrong = [f for f in ARTIFACT_FIELDS if f in written and getattr(self, f) is not None]
        if wrong:
            raise ValueError(
                f"engine {self.engine!r} serves an upstream API and downloads nothing: remove {', '.join(wrong)} "
                "(or use a local engine for a file)"
            )
        if not self.base_url:
            raise ValueError(
                f"engine {self.engine!r} needs base_url: the upstream's OpenAI API, e.g. http://host:8000/v1"
            )
        return self

    @property
    def traits(self) -> EngineTraits:
        from lokal.runtime.engines import traits_of  # the registry imports the engine layer, which imports this

        return traits_of(self.engine)

    @property
    def is_folder(self) -> bool:
        """`file` names a folder of the repo (every file in it is downloaded), not one file."""
        return self.traits.layout == "folder"

    @property
    def needs_artifact(self) -> bool:
        """A local file or folder must be present (downloaded or brought) before this variant loads."""
        return self.traits.needs_artifact

    @property
    def is_upstream(self) -> bool:
        """Served by an upstream API: nothing to download, nothing in the cache."""
        return not self.traits.needs_artifact

    @property
    def upstream_urls(self) -> list[str]:
        """Every replica's base URL, base_url first, each once."""
        urls = [u.rstrip("/") for u in ([self.base_url] if self.base_url else []) + self.replicas]
        return list(dict.fromkeys(urls))

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
            return url_filename(self.url)
        if self.repo and self.is_folder:  # a folder variant of a whole repo: the folder is named after it
            return self.repo.rsplit("/", 1)[-1]
        return FALLBACK_FILENAME


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

    def choose(self, devices: Sequence[str], installed: Callable[[str], bool] | None = None) -> Choice:
        """The variant to run here, and why: the first device (in preference order, e.g. ["cuda", "cpu"]) with
        a variant whose engine is installed, that device's first such variant in catalog order (so GGUF stays
        first where llama.cpp is installed). When no variant for these devices has its engine, the first one
        for the best device is still returned (`model info` shows it), marked not installed."""
        from lokal.runtime import engines as registry  # the registry imports the engine layer, which imports this

        ok = installed or registry.engine_installed
        where = registry.runs_on if installed is None else (lambda _engine, _device: None)
        passed: list[str] = []  # why better-placed variants were passed over
        degraded: Choice | None = None  # loadable, but not on the device it was made for
        for dev in devices:
            for v in (v for v in self.variants if v.device == dev):
                if not ok(v.engine):
                    passed.append(registry.missing_engine_note(v.engine))
                    continue
                cannot = where(v.engine, dev)
                if cannot is not None:
                    passed.append(f"{dev}: {cannot}")
                    degraded = degraded or Choice(v, f"{dev}; engine {v.engine}, but {cannot}", installed=True)
                    continue
                notes = list(dict.fromkeys(passed))
                why = f"{dev}; engine {v.engine}" + (f" ({'; '.join(notes)})" if notes else "")
                return Choice(v, why, installed=True)
        if degraded is not None:
            return degraded
        for dev in devices:
            for v in self.variants:
                if v.device == dev:
                    why = f"{dev}; engine {v.engine}, but {registry.missing_engine_note(v.engine)}"
                    return Choice(v, why, installed=False)
        first = self.variants[0]
        why = f"no variant for this machine's devices ({', '.join(devices)}); the catalog's first ({first.device})"
        if not ok(first.engine):
            why += f", but {registry.missing_engine_note(first.engine)}"
        return Choice(first, why, installed=ok(first.engine))

    def variant_for(self, devices: Sequence[str]) -> Variant:
        """Best variant for the devices present and the engines installed (see `choose`)."""
        return self.choose(devices).variant


@dataclass(frozen=True, slots=True)
class Choice:
    """A resolved variant and why it was picked ("cpu; engine onnx (llama-cpp-python is not installed: ...)")."""

    variant: Variant
    why: str
    installed: bool  # its engine's runtime is importable here; False: loading it raises EngineUnavailable
