"""Cache layout, what counts as cached, listing and removal, and refusing paths outside the cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from lokal.catalog.cache import Cache
from lokal.catalog.spec import Variant
from lokal.config import Settings
from lokal.errors import InvalidRequest


def _variant(**kw: object) -> Variant:
    fields: dict[str, object] = {"id": "demo-q4-cpu:2", "repo": "org/demo-GGUF", "file": "sub/demo-q4.gguf"}
    fields.update(kw)
    return Variant.model_validate(fields)


def test_layout_is_models_name_version_filename(settings: Settings) -> None:
    cache = Cache(settings)
    assert cache.path_for(_variant()) == settings.models_dir / "demo-q4-cpu" / "2" / "demo-q4.gguf"
    assert cache.partial_path(_variant()).name == "demo-q4.gguf.part"


def test_cached_only_when_the_final_file_exists(settings: Settings) -> None:
    cache, variant = Cache(settings), _variant()
    assert not cache.is_cached(variant)
    part = cache.partial_path(variant)
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 10)
    assert not cache.is_cached(variant)  # an interrupted download is not a model
    [entry] = cache.entries()
    assert not entry.complete and entry.size_bytes == 10 and entry.variant_id == "demo-q4-cpu:2"

    cache.path_for(variant).write_bytes(b"y" * 100)
    part.unlink()
    assert cache.is_cached(variant)
    [entry] = cache.entries()
    assert entry.complete and entry.size_bytes == 100 and entry.path == cache.path_for(variant)
    assert cache.total_bytes() == 100

    assert cache.remove(variant) == 100
    assert not cache.is_cached(variant) and cache.entries() == []
    assert not (settings.models_dir / "demo-q4-cpu").exists()  # emptied folders pruned
    assert settings.models_dir.exists()
    assert cache.remove(variant) == 0


def test_user_path_variant_is_cached_iff_the_path_exists(settings: Settings, tmp_path: Path) -> None:
    cache = Cache(settings)
    mine = tmp_path / "mine.gguf"
    variant = _variant(repo=None, file=None, path=str(mine))
    assert not cache.is_cached(variant)
    mine.write_bytes(b"GGUF")
    assert cache.is_cached(variant) and cache.path_for(variant) == mine
    with pytest.raises(InvalidRequest, match="not created by lokal"):
        cache.remove(variant)
    assert mine.exists()


def test_file_names_that_escape_the_cache_are_refused(settings: Settings, tmp_path: Path) -> None:
    for bad in ("../x.gguf", "a/../../x.gguf", "/etc/passwd", "a\\..\\x"):
        with pytest.raises(ValidationError):
            _variant(file=bad)
    for url in ("http://h/a/..", "http://h/a/%2E%2E", "http://h/a/../b.gguf", "http://h/x/.", "file:///x.gguf"):
        with pytest.raises(ValidationError):  # refused where the entry is parsed, so only it is skipped
            _variant(repo=None, file=None, url=url)
    # ... and the cache still refuses such a name should one get past validation
    unchecked = Variant.model_construct(id="demo-q4-cpu:2", url="http://h/a/..", path=None, engine="llamacpp")
    with pytest.raises(InvalidRequest):
        Cache(settings).path_for(unchecked)


def test_symlink_out_of_the_cache_is_not_followed(settings: Settings, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "2").mkdir(parents=True)
    (outside / "2" / "demo-q4.gguf").write_bytes(b"z" * 7)
    settings.models_dir.mkdir(parents=True)
    (settings.models_dir / "demo-q4-cpu").symlink_to(outside)
    cache = Cache(settings)
    with pytest.raises(InvalidRequest, match="outside"):
        cache.path_for(_variant())
    assert cache.entries() == []
    with pytest.raises(InvalidRequest):
        cache.remove(_variant())
    assert (outside / "2" / "demo-q4.gguf").exists()


def test_remote_variants_are_not_the_caches_business(settings: Settings) -> None:
    """An upstream has no file: handed one, the cache says so instead of "cached" or "0 bytes freed"."""
    remote = Variant(id="up-cpu:1", engine="remote", base_url="http://127.0.0.1:9/v1")
    cache = Cache(settings)
    for op in (cache.is_cached, cache.remove, cache.path_for):
        with pytest.raises(InvalidRequest, match="upstream"):
            op(remote)
