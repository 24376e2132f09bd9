"""ONNX GenAI folder variants: the hub's tree API lists the folder, each file goes through the one-file
downloader, and the folder counts as cached only once every file is in and its manifest is written."""

from __future__ import annotations

import json

import pytest

from lokal.catalog.cache import MANIFEST, Cache
from lokal.catalog.catalog import Catalog
from lokal.catalog.download import fetch
from lokal.catalog.spec import Variant
from lokal.config import Settings, get_settings
from lokal.errors import ChecksumMismatch, DownloadError
from lokal.web.pull import pull_web
from tests.catalog.fileserver import FileServer

REPO = "org/Tiny-onnx"
FOLDER = "cpu_and_mobile/cpu-int4"
WEIGHTS = bytes(range(256)) * 2048  # 512 KiB: several chunks, so a transfer can be cut midway
FILES = {
    "genai_config.json": b'{"model": {"type": "qwen2"}}',
    "tokenizer.json": b'{"version": "1.0"}',
    "model.onnx": b"graph" * 100,
    "model.onnx.data": WEIGHTS,
}


def folder_variant(file: str | None = FOLDER, **extra: object) -> Variant:
    return Variant.model_validate(
        {"id": "tiny-int4-onnx-cpu:1", "engine": "onnx", "repo": REPO, "size_bytes": 500_000, **extra}
        | ({"file": file} if file else {})
    )


def test_every_file_lands_in_the_folder_and_the_load_path_is_the_folder(hub: FileServer, settings: Settings) -> None:
    hub.add_hub_folder(REPO, FOLDER, FILES)
    variant = folder_variant()
    seen: list[tuple[int, int | None]] = []
    result = fetch(variant, settings, progress=lambda done, total: seen.append((done, total)))

    cache = Cache(settings)
    folder = settings.models_dir / "tiny-int4-onnx-cpu" / "1" / "cpu-int4"
    assert result.path == folder == cache.path_for(variant) and result.verified
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name != MANIFEST} == FILES
    assert cache.is_cached(variant) and cache.locate(variant) == folder
    assert not folder.with_name("cpu-int4.part").exists()
    manifest = json.loads((folder / MANIFEST).read_text())
    assert {f["path"]: f["size"] for f in manifest["files"]} == {k: len(v) for k, v in FILES.items()}
    assert all(f["verified"] for f in manifest["files"])
    # The listing asked for the whole folder, and progress counts the bytes of all files, up to their sum.
    tree = [r for r in hub.requests if r.path.startswith("/api/models/")]
    assert len(tree) == 1 and "recursive=true" in tree[0].path
    total = sum(len(v) for v in FILES.values())
    assert seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    # One entry for the folder in the cache listing, named by its variant.
    [entry] = cache.entries()
    assert (entry.variant_id, entry.path, entry.complete) == ("tiny-int4-onnx-cpu:1", folder, True)
    # A second call finds it cached and moves nothing.
    before = len(hub.requests)
    assert fetch(variant, settings).path == folder and len(hub.requests) == before


def test_a_whole_repo_is_a_folder_named_after_the_repo(hub: FileServer, settings: Settings) -> None:
    hub.add_hub_folder(REPO, "", FILES)
    result = fetch(folder_variant(file=None), settings)
    assert result.path.name == "Tiny-onnx" and (result.path / "model.onnx.data").read_bytes() == WEIGHTS


def test_a_wrong_sha256_fails_that_file_and_leaves_no_cached_folder(hub: FileServer, settings: Settings) -> None:
    served = hub.add_hub_folder(REPO, FOLDER, FILES)
    served["model.onnx.data"].data = WEIGHTS[::-1]  # same length, other bytes than the listing's sha256
    variant = folder_variant()
    with pytest.raises(ChecksumMismatch, match=r"file model\.onnx\.data: sha256 of .* expected"):
        fetch(variant, settings)
    cache = Cache(settings)
    folder = cache.path_for(variant)
    assert not cache.is_cached(variant) and not folder.exists() and cache.locate(variant) is None
    staging = folder.with_name(folder.name + ".part")
    assert not (staging / "model.onnx.data").exists() and not (staging / "model.onnx.data.part").exists()
    assert [e.complete for e in cache.entries()] == [False]  # what did arrive is kept for the next run


def test_an_interrupted_file_resumes_on_the_next_run(hub: FileServer, settings: Settings) -> None:
    served = hub.add_hub_folder(REPO, FOLDER, FILES)
    served["model.onnx.data"].stall_after = 200_000  # the weights stop coming midway: the run gives up
    variant = folder_variant()
    with pytest.raises(DownloadError, match=r"file model\.onnx\.data: no data for 0\.3 s"):
        fetch(variant, settings, timeout=0.3)
    cache = Cache(settings)
    staging = cache.path_for(variant).with_name("cpu-int4.part")
    assert (staging / "model.onnx.data.part").stat().st_size == 200_000 and not cache.is_cached(variant)

    served["model.onnx.data"].stall_after = None
    result = fetch(variant, settings)
    assert (result.path / "model.onnx.data").read_bytes() == WEIGHTS and cache.is_cached(variant)
    weights = hub.gets(f"/cdn/{REPO}/{FOLDER}/model.onnx.data")
    assert weights[-1].headers.get("range") == "bytes=200000-"
    assert served["model.onnx"].gets == 1  # files finished in the first run were not fetched again


def test_a_listing_in_pages_is_followed_to_the_end(hub: FileServer, settings: Settings) -> None:
    hub.page_size = 2  # the directory entry and one file per page
    hub.add_hub_folder(REPO, FOLDER, FILES)
    result = fetch(folder_variant(), settings)
    assert sorted(p.name for p in result.path.iterdir() if p.name != MANIFEST) == sorted(FILES)
    assert len([r for r in hub.requests if r.path.startswith("/api/models/")]) == 3


def test_unreachable_hub_is_a_clear_error(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOKAL_HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    get_settings.cache_clear()
    with pytest.raises(DownloadError, match=r"cannot reach the model hub at 127\.0\.0\.1:9 to list the files of"):
        fetch(folder_variant(), get_settings())


def test_a_missing_folder_and_a_hostile_listing_are_refused(hub: FileServer, settings: Settings) -> None:
    with pytest.raises(DownloadError, match=r"org/Tiny-onnx/cpu_and_mobile/cpu-int4 was not found \(HTTP 404\)"):
        fetch(folder_variant(), settings)
    hub.trees[f"/api/models/{REPO}/tree/main/{FOLDER}"] = [{"type": "file", "path": f"{FOLDER}/../../x", "size": 1}]
    with pytest.raises(DownloadError, match="cannot be stored safely"):
        fetch(folder_variant(), settings)
    assert not Cache(settings).root.joinpath("x").exists()


def test_offline_forbids_a_folder_download(hub: FileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOKAL_OFFLINE", "1")
    get_settings.cache_clear()
    with pytest.raises(DownloadError, match="offline mode"):
        fetch(folder_variant(), get_settings())
    assert hub.requests == []


def test_builtin_onnx_variants_are_folders_of_real_repos(settings: Settings) -> None:
    catalog = Catalog.load(settings)
    onnx = {v.id: v for _, v in catalog.variants() if v.is_folder}
    assert {v.repo for v in onnx.values()} == {
        "amd/Qwen2.5-0.5B-Instruct-quantized_int4-float16-cpu-onnx",
        "microsoft/Phi-4-mini-instruct-onnx",
        "microsoft/Phi-3.5-mini-instruct-onnx",
    }
    cache = Cache(settings)
    for variant in onnx.values():  # each has its own folder in the cache, nothing cached yet
        assert cache.path_for(variant).parent.name == "1" and not cache.is_cached(variant)


def test_web_pull_shares_the_loop_and_reports_all_files(hub: FileServer, settings: Settings) -> None:
    repo = "onnx-community/Tiny"
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        hub.add_hub_file(repo, name, b"{}")
    hub.add_hub_file(repo, "onnx/model_q4f16.onnx", WEIGHTS)
    variant = Variant(id="tiny-q4f16-webgpu:1", device="webgpu", engine="web", repo=repo, file="onnx/model_q4f16.onnx")
    seen: list[tuple[int, int | None]] = []
    folder = pull_web(variant, settings, progress=lambda done, total: seen.append((done, total)))
    assert (folder / "model_q4f16.onnx").read_bytes() == WEIGHTS and (folder / "config.json").exists()
    assert seen[-1] == (8 + len(WEIGHTS), 8 + len(WEIGHTS))
