from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lokal.router.catalog import (
    CatalogError,
    CatalogStore,
    catalog_from_local_models,
    load_catalog,
    parse_catalog,
)

WriteCatalog = Callable[[Path, dict[str, Any]], Path]


def _base() -> dict[str, Any]:
    return {
        "endpoints": {"gpu": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "GPU_KEY"}},
        "models": {
            "small": {"capabilities": ["general", "fast"], "priority": 1, "fallbacks": ["big"]},
            "coder": {"capabilities": ["code", "refactor"], "priority": 1, "fallbacks": ["small"]},
            "big": {
                "capabilities": ["general", "reasoning"],
                "priority": 3,
                "tier": 2,
                "endpoint": "gpu",
                "cost_per_1m": 2.5,
            },
        },
        "presets": {"auto-local": {"local_only": True}},
    }


def test_a_valid_catalog_loads_with_its_fields(tmp_path: Path, write_catalog: WriteCatalog) -> None:
    cat = load_catalog(write_catalog(tmp_path / "router.yaml", _base()))
    assert cat.models["big"].endpoint == "gpu"
    assert cat.is_local("small") and not cat.is_local("big")
    assert cat.endpoint_for("big", "http://unused/v1").base_url == "http://127.0.0.1:9/v1"
    assert cat.endpoint_for("small", "http://127.0.0.1:5273/v1").kind == "lokal"
    assert cat.with_capability("code") == ["coder"]
    assert cat.models["big"].cost(1_000_000, 0) == pytest.approx(2.5)


def test_json_catalogs_load_too(tmp_path: Path) -> None:
    import json

    p = tmp_path / "router.json"
    p.write_text(json.dumps(_base()))
    assert set(load_catalog(p).models) == {"small", "coder", "big"}


def test_unknown_capability_is_named_with_the_known_ones() -> None:
    data = _base()
    data["models"]["coder"]["capabilities"] = ["cod"]
    with pytest.raises(CatalogError) as err:
        parse_catalog(data, "x.yaml")
    assert "models.coder.capabilities: unknown capability 'cod'" in err.value.message
    assert "code" in err.value.problems[0]  # the list of known capabilities helps the fix


def test_custom_capabilities_can_be_declared() -> None:
    data = _base()
    data["capabilities"] = ["sql-tuning"]
    data["models"]["coder"]["capabilities"] = ["code", "sql-tuning"]
    assert "sql-tuning" in parse_catalog(data).models["coder"].capabilities


def test_fallback_cycles_are_reported_as_a_path() -> None:
    data = _base()
    data["models"]["big"]["fallbacks"] = ["coder"]  # small -> big -> coder -> small
    with pytest.raises(CatalogError) as err:
        parse_catalog(data)
    cycles = [p for p in err.value.problems if "cycle" in p]
    assert len(cycles) == 1
    path = cycles[0].split("cycle ", 1)[1].split(" -> ")
    assert path[0] == path[-1] and set(path) == {"small", "big", "coder"}


def test_missing_endpoint_unknown_fallback_and_self_fallback_are_all_reported() -> None:
    data = _base()
    data["models"]["big"]["endpoint"] = "nowhere"
    data["models"]["small"]["fallbacks"] = ["ghost", "small"]
    with pytest.raises(CatalogError) as err:
        parse_catalog(data)
    text = "\n".join(err.value.problems)
    assert "models.big.endpoint: endpoint 'nowhere' is not declared" in text
    assert "models.small.fallbacks: 'ghost' is not a model" in text
    assert "cannot fall back to itself" in text


def test_structural_errors_name_the_field(tmp_path: Path) -> None:
    data = _base()
    data["models"]["small"]["priorty"] = 2
    data["models"]["coder"]["priority"] = "high"
    with pytest.raises(CatalogError) as err:
        parse_catalog(data)
    text = "\n".join(err.value.problems)
    assert "models.small.priorty: unknown field" in text
    assert "models.coder.priority" in text
    bad = tmp_path / "router.yaml"
    bad.write_text("models: [unclosed")
    with pytest.raises(CatalogError, match="not valid yaml"):
        load_catalog(bad)


def test_hot_reload_picks_up_edits_and_keeps_the_last_good_catalog(tmp_path: Path, write_catalog: WriteCatalog) -> None:
    path = write_catalog(tmp_path / "router.yaml", _base())
    store = CatalogStore(path)
    assert store.get().models["small"].priority == 1
    data = _base()
    data["models"]["small"]["priority"] = 7
    write_catalog(path, data)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # coarse mtime clocks: force a change
    assert store.get().models["small"].priority == 7
    assert store.reloads == 2
    path.write_text("models: {small: {capabilities: [nonsense]}}")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000))
    assert store.get().models["small"].priority == 7  # the broken edit is not served
    assert store.last_error is not None and "nonsense" in store.last_error.message


def test_store_uses_the_default_without_a_file_and_fails_loudly_without_either(tmp_path: Path) -> None:
    default = catalog_from_local_models([("tiny", ["general", "summarize"], 2048), ("tiny-coder", ["code"], 2048)])
    store = CatalogStore(tmp_path / "router.yaml", default)
    assert store.using_default and set(store.get().models) == {"tiny", "tiny-coder"}
    assert store.get().models["tiny"].priority < store.get().models["tiny-coder"].priority
    with pytest.raises(CatalogError, match="file not found"):
        CatalogStore(tmp_path / "missing.yaml")


def test_default_keeps_capabilities_the_router_does_not_know() -> None:
    cat = catalog_from_local_models([("m", ["general", "poetry"], 4096)])
    assert cat.models["m"].capabilities == ["general", "poetry"] and "poetry" in cat.all_capabilities
