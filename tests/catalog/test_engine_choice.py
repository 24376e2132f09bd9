"""Resolution weighs which engines are installed: per device, the first variant whose engine can run here, and
why; a model none of whose variants can run still resolves (to show it) but refuses to serve, naming the fix."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from lokal.catalog.catalog import Catalog
from lokal.catalog.spec import ModelSpec
from lokal.config import Settings
from lokal.errors import EngineUnavailable
from lokal.runtime import engines
from lokal.runtime.engines import LLAMACPP_INSTALL

Missing = Callable[..., None]


@pytest.fixture
def missing(monkeypatch: pytest.MonkeyPatch) -> Missing:
    """Make these modules read as not installed (a base install lacks llama_cpp), whatever this machine has."""

    def make(*modules: str) -> None:
        real = engines.module_present
        monkeypatch.setattr(engines, "module_present", lambda m: m not in modules and real(m))

    return make


def spec(*variants: dict[str, object]) -> ModelSpec:
    return ModelSpec.model_validate({"alias": "m", "variants": list(variants)})


GGUF_CPU = {"id": "m-q4-cpu:1", "device": "cpu", "url": "http://127.0.0.1:9/m.gguf"}
GGUF_CUDA = {"id": "m-q8-cuda:1", "device": "cuda", "url": "http://127.0.0.1:9/m8.gguf"}
ONNX_CPU = {"id": "m-int4-onnx-cpu:1", "device": "cpu", "engine": "onnx", "repo": "org/m-onnx", "file": "cpu"}


def test_without_llama_cpp_the_onnx_variant_is_chosen_and_says_why(settings: Settings, missing: Missing) -> None:
    missing("llama_cpp")
    catalog = Catalog.load(settings)
    phi = catalog.get("phi-4-mini")
    assert phi is not None
    choice = catalog.choice(phi)
    assert choice.variant.id == "phi-4-mini-instruct-int4-onnx-cpu:1" and choice.installed
    assert choice.why == f"cpu; engine onnx (llama-cpp-python is not installed: {engines.install_hint('llamacpp')})"
    assert LLAMACPP_INSTALL in choice.why and "C/C++ compiler" in choice.why
    # The default model of `lokal serve` too: a base install serves its ONNX build.
    _, variant = catalog.resolve("qwen2.5-0.5b")
    assert variant.engine == "onnx"


def test_with_both_engines_gguf_stays_first(settings: Settings, missing: Missing) -> None:
    missing()  # nothing missing: both llama.cpp and ONNX GenAI read as installed
    catalog = Catalog.load(settings)
    spec_, choice = catalog.resolve_choice("phi-4-mini")
    assert choice.variant.id == "phi-4-mini-instruct-q4_k_m-cpu:1" and choice.why == "cpu; engine llamacpp"
    assert catalog.resolve_runnable("phi-4-mini") == (spec_, choice.variant)


def test_an_only_gguf_model_on_a_base_install_resolves_but_does_not_serve(settings: Settings, missing: Missing) -> None:
    missing("llama_cpp")
    catalog = Catalog.load(settings)
    _, choice = catalog.resolve_choice("mistral-7b")
    assert choice.variant.engine == "llamacpp" and not choice.installed  # `model info` can still show it
    assert choice.why.startswith("cpu; engine llamacpp, but llama-cpp-python is not installed: ")
    with pytest.raises(EngineUnavailable) as err:
        catalog.resolve_runnable("mistral-7b")
    assert LLAMACPP_INSTALL in err.value.message and "mistral-7b" in err.value.message
    assert err.value.status_code == 501 and err.value.code == "engine_unavailable"


def test_a_device_whose_variants_cannot_run_gives_way_to_one_that_can(missing: Missing) -> None:
    missing("llama_cpp")
    choice = spec(GGUF_CUDA, ONNX_CPU).choose(["cuda", "cpu"])  # the cuda GGUF is passed over, and said so
    assert choice.variant.id == "m-int4-onnx-cpu:1"
    assert choice.why.startswith("cpu; engine onnx (llama-cpp-python is not installed")
    # With llama.cpp, the GPU comes first again.
    assert spec(GGUF_CUDA, GGUF_CPU, ONNX_CPU).choose(["cuda", "cpu"], lambda e: True).variant.id == "m-q8-cuda:1"


def test_nothing_installed_falls_back_to_the_best_device_and_says_so(missing: Missing) -> None:
    missing("llama_cpp", "onnxruntime_genai")
    choice = spec(ONNX_CPU, GGUF_CPU).choose(["cpu"])
    assert choice.variant.id == "m-int4-onnx-cpu:1" and not choice.installed
    assert "onnxruntime-genai is not installed: pip install onnxruntime-genai" in choice.why


def test_a_variant_id_asked_for_is_taken_and_still_checked(settings: Settings, missing: Missing) -> None:
    missing("llama_cpp")
    catalog = Catalog.load(settings)
    _, choice = catalog.resolve_choice("phi-4-mini-instruct-q4_k_m-cpu:1")
    assert choice.variant.engine == "llamacpp" and not choice.installed
    assert choice.why.startswith("variant id asked for; cpu; engine llamacpp, but llama-cpp-python")
    with pytest.raises(EngineUnavailable, match="GGML_NATIVE=OFF"):
        catalog.resolve_runnable("phi-4-mini-instruct-q4_k_m-cpu:1")
    assert catalog.resolve_runnable("phi-4-mini-instruct-int4-onnx-cpu")[1].engine == "onnx"  # by name


def test_browser_builds_stay_out_of_the_servers_choice(settings: Settings, missing: Missing) -> None:
    missing("llama_cpp", "onnxruntime_genai")
    _, variant = Catalog.load(settings).resolve("qwen2.5-0.5b")
    assert variant.device == "cpu"  # not the webgpu build, although the browser needs nothing installed
