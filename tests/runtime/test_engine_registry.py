"""The engine registry: every catalog engine name has traits, and the runtime picks workers from them."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

import lokal
from lokal.catalog.spec import ModelSpec, Variant
from lokal.config import Settings
from lokal.engines.base import AsyncEngine, EngineInfo, GenerationEvent, GenerationRequest
from lokal.engines.remote import RemoteEngine
from lokal.runtime.async_worker import AsyncWorker
from lokal.runtime.engines import ENGINES, make_engine, registry, traits_of
from lokal.runtime.worker import ModelWorker
from lokal.runtime.workers import make_worker


class ThreadEngine:
    """An engine with only the sync interface."""

    info = EngineInfo()

    def load(self, spec: ModelSpec, variant: Variant, path: Path | None) -> None:
        pass

    def count_tokens(self, req: GenerationRequest) -> int:
        return 1

    def generate(self, req: GenerationRequest, cancel: threading.Event) -> Iterator[GenerationEvent]:
        yield GenerationEvent(finish_reason="stop")

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return []

    def unload(self) -> None:
        pass


def test_the_catalogs_engine_names_are_the_registrys() -> None:
    assert set(ENGINES) <= set(registry())
    labels = {name: traits_of(name).label for name in ENGINES}  # Foundry's modelType
    assert labels == {"llamacpp": "GGUF", "onnx": "ONNX", "sentence-transformers": "SentenceTransformers",
                      "remote": "Remote", "echo": "Echo", "web": "Web"}  # fmt: skip
    with pytest.raises(ValueError, match="unknown engine 'vllm'"):
        traits_of("vllm")
    with pytest.raises(ValueError, match="unknown engine 'lamacpp'; known: llamacpp, onnx"):
        Variant(id="x:1", engine="lamacpp")


def test_traits_say_what_each_engine_is() -> None:
    remote, llama = traits_of("remote"), traits_of("llamacpp")
    assert (remote.concurrency, remote.needs_artifact) == ("async", False)
    assert remote.tasks == {"chat-completion", "embeddings"}
    assert (llama.concurrency, llama.needs_artifact) == ("batch", True)
    assert (traits_of("onnx").concurrency, traits_of("onnx").tasks) == ("batch", {"chat-completion"})
    assert traits_of("sentence-transformers").tasks == {"embeddings"}
    assert all(e.traits.needs_artifact for name, e in ENGINES.items() if name != "remote")


def test_the_worker_comes_from_the_traits(tmp_path: Path) -> None:
    engine = make_engine(Variant(id="up:1", engine="remote", base_url="http://127.0.0.1:9/v1"), Settings(home=tmp_path))
    assert isinstance(engine, RemoteEngine) and isinstance(engine, AsyncEngine)
    assert isinstance(make_worker(engine, "up", concurrency="async"), AsyncWorker)
    with pytest.raises(TypeError, match="registered as an async engine"):
        make_worker(ThreadEngine(), "x", concurrency="async")
    for concurrency in ("thread", "batch"):  # a batch engine loaded with one slot works one request at a time
        worker = make_worker(ThreadEngine(), "x", concurrency=concurrency)
        assert isinstance(worker, ModelWorker)
        worker.close()


def test_no_engine_name_checks_outside_the_registry_and_the_engines() -> None:
    """Code asks what a variant is (is_upstream, needs_artifact, traits), never which engine it names."""
    root = Path(lokal.__file__).parent
    allowed = {root / "catalog" / "spec.py", root / "runtime" / "engines.py"}
    hits = [
        f"{path.relative_to(root)}:{n}: {line.strip()}"
        for path in root.rglob("*.py")
        if path not in allowed and root / "engines" not in path.parents
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"""\.engine\s*(==|!=|in\b)|==\s*["']remote["']""", line)
    ]
    assert hits == []


def test_each_engine_says_whether_it_is_installed_and_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lokal.embeddings import minilm
    from lokal.engines import llamacpp, ortgenai
    from lokal.errors import EngineUnavailable
    from lokal.runtime import engines

    assert engines.module_present("json") and not engines.module_present("lokal_no_such_module")
    assert all(engines.engine_installed(e) for e in ("remote", "web", "echo"))  # nothing to install
    assert engines.install_hint("llamacpp").startswith(
        'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --no-cache-dir "lokal[llamacpp]"'
    )
    assert engines.install_hint("onnx") == "pip install onnxruntime-genai"
    assert engines.install_hint("sentence-transformers") == 'pip install "lokal[embed]"'
    # The engines' own "not installed" errors quote the registry: each command is written once.
    assert engines.install_hint("llamacpp") == llamacpp.INSTALL_HINT
    assert engines.install_hint("onnx") == ortgenai.INSTALL_HINT
    assert engines.install_hint("sentence-transformers") == minilm.INSTALL_HINT

    monkeypatch.setattr(engines, "module_present", lambda module: module != "llama_cpp")
    assert not engines.engine_installed("llamacpp") and engines.engine_installed("onnx")
    variant = Variant(id="m-q4-cpu:1", url="http://127.0.0.1:9/m.gguf")
    with pytest.raises(EngineUnavailable, match=r"m-q4-cpu:1 runs on engine llamacpp, and llama-cpp-python is not"):
        make_engine(variant, Settings(home=tmp_path))


def test_engine_knobs_come_from_settings(tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOKAL_MAX_CONTEXT", "512")
    monkeypatch.setenv("LOKAL_PREFILL_CHUNK", "8")
    settings = Settings(home=tmp_path, min_shared_prefix=5, prefill_seconds=0.5)
    assert (settings.max_context, settings.prefill_chunk) == (512, 8)  # the same LOKAL_* names as before
    variant = Variant(id="m:1", path=str(tiny_gguf))
    engine = make_engine(variant, settings, parallel=2)
    engine.load(ModelSpec(alias="m", context_length=2048, variants=[variant]), variant, tiny_gguf)
    try:
        assert engine.info.context_length == 512
        assert (engine._prefill_chunk, engine._min_shared_prefix, engine._pacer.seconds) == (8, 5, 0.5)  # type: ignore[attr-defined]
    finally:
        engine.unload()
