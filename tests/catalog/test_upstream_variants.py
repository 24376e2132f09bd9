"""A catalog variant is a local artifact or an upstream: the upstream fields, and the mixes the catalog refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from lokal.catalog.cache import Cache
from lokal.catalog.catalog import Catalog
from lokal.catalog.download import download
from lokal.catalog.spec import Variant
from lokal.config import get_settings
from lokal.errors import DownloadError, InvalidRequest

UP = "http://gpu-a:8000/v1"


def _write(*entries: object) -> None:
    path = get_settings().user_catalog
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"models": list(entries)}))


def test_the_flat_form_of_today_still_reads_and_gets_the_pool_defaults() -> None:
    v = Variant(id="big:1", engine="remote", base_url=UP + "/", api_key_env="KEY", upstream_model="qwen-32b")
    assert v.is_upstream and not v.needs_artifact and v.upstream_urls == [UP]
    assert (v.max_concurrency, v.balance, v.health_check_s, v.eject_after, v.eject_cooldown_s) == (
        None,
        "least_outstanding",
        5.0,
        3,
        10.0,
    )
    local = Variant(id="small:1", repo="org/name", file="x.gguf")
    assert local.needs_artifact and not local.is_upstream and local.traits.label == "GGUF"


def test_replicas_serve_one_alias_from_several_upstreams(home: Path) -> None:
    entry = {
        "alias": "pool",
        "variants": [
            {
                "id": "pool:1",
                "engine": "remote",
                "base_url": UP,
                "replicas": ["http://gpu-b:8000/v1", "http://gpu-c:8000/v1/", UP],
                "max_concurrency": 16,
                "balance": "latency",
                "health_check_s": 0,
                "eject_after": 2,
                "eject_cooldown_s": 1.5,
            }
        ],
    }
    _write(entry)
    catalog = Catalog.load(get_settings())
    assert catalog.problems == []
    _, v = catalog.resolve("pool")
    assert v.upstream_urls == [UP, "http://gpu-b:8000/v1", "http://gpu-c:8000/v1"]  # each once, base_url first
    assert (v.max_concurrency, v.balance, v.health_check_s, v.eject_after) == (16, "latency", 0, 2)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"engine": "remote", "base_url": UP, "sha256": "a" * 64}, "downloads nothing: remove sha256"),
        ({"engine": "remote", "base_url": UP, "repo": "org/x", "file": "x.gguf"}, "remove repo, file"),
        ({"engine": "remote", "base_url": UP, "path": "/m/x.gguf"}, "remove path"),
        ({"engine": "remote", "base_url": UP, "size_bytes": 10}, "remove size_bytes"),
        ({"engine": "remote"}, "needs base_url"),
        ({"engine": "remote", "replicas": [UP]}, "needs base_url"),
        ({"repo": "org/x", "file": "x.gguf", "base_url": UP}, "base_url only apply to an upstream"),
        ({"engine": "onnx", "path": "/m/x", "replicas": [UP], "max_concurrency": 4}, "replicas, max_concurrency"),
        ({"path": "/m/x.gguf", "health_check_s": 1}, "health_check_s only apply"),
        ({"engine": "remote", "base_url": "gpu-box:8000"}, "must be an http:// or https:// URL"),
        ({"engine": "remote", "base_url": UP, "replicas": ["ftp://x/v1"]}, "must be an http:// or https:// URL"),
        ({"engine": "remote", "base_url": UP, "max_concurrency": 0}, "greater than or equal to 1"),
        ({"engine": "remote", "base_url": UP, "balance": "random"}, "least_outstanding"),
        ({"engine": "vllm", "base_url": UP}, "unknown engine 'vllm'; known: llamacpp, onnx, sentence"),
    ],
)
def test_mixed_or_misplaced_fields_are_refused_with_a_clear_message(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Variant(id="x:1", **fields)


def test_a_bad_upstream_entry_in_the_user_catalog_is_skipped_and_named(home: Path) -> None:
    entries = [
        {
            "alias": "mixed",
            "variants": [{"id": "mixed:1", "engine": "remote", "base_url": UP, "url": "http://h/x.gguf"}],
        },
        {"alias": "fine", "variants": [{"id": "fine:1", "engine": "remote", "base_url": UP}]},
    ]
    _write(*entries)
    catalog = Catalog.load(get_settings())
    assert catalog.get("fine") is not None and catalog.get("mixed") is None
    [problem] = catalog.problems
    assert problem.alias == "mixed" and "models[0].variants[0]" in str(problem) and "remove url" in str(problem)


def test_cache_and_download_refuse_an_upstream_rather_than_guess(home: Path) -> None:
    v = Variant(id="up:1", engine="remote", base_url=UP)
    cache = Cache(get_settings())
    for op in (cache.path_for, cache.is_cached, cache.remove, cache.managed_path, cache.partial_path):
        with pytest.raises(InvalidRequest, match="served by an upstream API"):
            op(v)
    with pytest.raises(DownloadError, match="nothing to download"):
        download(v)


def test_a_written_back_local_entry_carries_no_upstream_defaults(home: Path) -> None:
    """The catalog writes entries back with exclude_defaults: a local variant must not gain upstream fields (it
    would then be refused on the next read)."""
    v = Variant(id="small:1", repo="org/name", file="x.gguf")
    dumped = v.model_dump(mode="json", exclude_defaults=True)
    assert dumped == {"id": "small:1", "repo": "org/name", "file": "x.gguf"}
    assert Variant.model_validate(dumped) == v
