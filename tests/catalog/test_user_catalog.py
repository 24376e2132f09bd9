"""The user's catalog.yaml as people write it: bad entries, empty files, syntax errors, hot reloads."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import yaml

from lokal.catalog.cache import Cache
from lokal.catalog.catalog import Catalog
from lokal.catalog.live import LiveCatalog
from lokal.catalog.spec import ModelSpec, Variant
from lokal.config import get_settings

GOOD = {"alias": "good", "variants": [{"id": "good-cpu:1", "url": "http://127.0.0.1:9/good.gguf"}]}
# Each passed validation before and then broke every listing that computed its cache path (or its URL).
BAD_URLS = ["http://h/x/..", "http://h/x/.", "http://h/a/%2e%2e", "ftp://h/x.gguf", "http:///x.gguf"]


def _write(home: Path, *entries: object, text: str | None = None) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "catalog.yaml"
    path.write_text(text if text is not None else yaml.safe_dump({"models": list(entries)}, sort_keys=False))
    return path


def _bad(url: str) -> dict[str, object]:
    return {"alias": "bad", "variants": [{"id": "bad-cpu:1", "url": url}]}


def _listable(catalog: Catalog) -> None:
    """What /v1/models, /foundry/list and `model list` do for every variant: none of it may raise."""
    cache = Cache(catalog.settings)
    for _, variant in catalog.variants():
        cache.is_cached(variant)


@pytest.mark.parametrize("url", BAD_URLS)
def test_entry_whose_url_makes_no_safe_file_name_is_skipped_and_named(home: Path, url: str) -> None:
    path = _write(home, GOOD, _bad(url))
    catalog = Catalog.load(get_settings())
    assert catalog.get("good") is not None and catalog.get("bad") is None
    assert "qwen2.5-0.5b" in catalog.aliases()
    [problem] = catalog.problems
    assert problem.alias == "bad" and str(path) in str(problem) and "models[1].variants[0].url" in str(problem)
    _listable(catalog)


@pytest.mark.parametrize(
    "variant",
    [
        {"repo": "not a repo", "file": "x.gguf"},  # hf_hub_url raises on it: /foundry/list computes that URL
        {"repo": "a/b/c", "file": "x.gguf"},
        {"path": "/models/x\x00.gguf"},  # every os call on it raises ValueError
        {"path": "~no-such-user-here/x.gguf"},  # expanduser raises RuntimeError
    ],
)
def test_other_entries_that_would_break_listings_are_skipped(home: Path, variant: dict[str, str]) -> None:
    _write(home, GOOD, {"alias": "bad", "variants": [{"id": "bad-cpu:1", **variant}]})
    catalog = Catalog.load(get_settings())
    assert catalog.get("bad") is None and catalog.get("good") is not None
    assert [p.alias for p in catalog.problems] == ["bad"]
    _listable(catalog)


def test_skipped_override_leaves_the_builtin_visible(home: Path) -> None:
    _write(home, {"alias": "qwen2.5-0.5b", "variants": [{"id": "mine-cpu:1", "url": "http://h/x/.."}]})
    catalog = Catalog.load(get_settings())
    assert catalog.origin("qwen2.5-0.5b") == "builtin" and [p.alias for p in catalog.problems] == ["qwen2.5-0.5b"]


@pytest.mark.parametrize("text", ["", "# only a comment\n\n# and another\n", "models:\n", "models: []\n"])
def test_empty_user_catalog_means_no_user_entries(home: Path, text: str) -> None:
    _write(home, text=text)
    catalog = Catalog.load(get_settings())
    assert catalog.problems == [] and all(catalog.origin(a) == "builtin" for a in catalog.aliases())
    # and lokal can write into it
    catalog.add_user_model(ModelSpec(alias="mine", variants=[Variant(id="mine-cpu:1", path="/m.gguf")]))
    assert Catalog.load(get_settings()).get("mine") is not None


def test_editing_the_file_keeps_entries_that_do_not_validate(home: Path) -> None:
    path = _write(home, GOOD, _bad("http://h/x/.."))
    catalog = Catalog.load(get_settings())
    catalog.add_user_model(ModelSpec(alias="mine", variants=[Variant(id="mine-cpu:1", path="/m.gguf")]))
    aliases = [e["alias"] for e in yaml.safe_load(path.read_text())["models"]]
    assert aliases == ["good", "mine", "bad"]  # the user may still be fixing "bad": it is not dropped
    assert [p.alias for p in catalog.problems] == ["bad"]
    # replacing the bad entry under its alias is how it gets fixed
    catalog.add_user_model(ModelSpec(alias="bad", variants=[Variant(id="bad-cpu:1", path="/b.gguf")]))
    assert catalog.problems == [] and Catalog.load(get_settings()).get("bad") is not None


def test_syntax_error_in_the_file_is_never_overwritten(home: Path) -> None:
    path = _write(home, text="models: [\n")
    catalog = Catalog.load(get_settings())
    with pytest.raises(Exception, match="not valid YAML"):
        catalog.add_user_model(ModelSpec(alias="mine", variants=[Variant(id="mine-cpu:1", path="/m.gguf")]))
    assert path.read_text() == "models: [\n"


def test_hot_reload_skips_a_bad_entry_and_keeps_the_last_good_file_on_a_syntax_error(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write(home, GOOD)
    live = LiveCatalog(get_settings())
    assert live.get("good") is not None

    other = {"alias": "other", "variants": [{"id": "other-cpu:1", "url": "http://127.0.0.1:9/o.gguf"}]}
    with caplog.at_level(logging.WARNING, logger="lokal.catalog"):
        _write(home, GOOD, _bad("http://h/x/.."), other)
        assert {s.alias for s in live.specs()} >= {"good", "other", "qwen2.5-0.5b"}
    assert live.get("bad") is None and [p.alias for p in live.problems] == ["bad"]
    assert any("'bad'" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records)
    _listable(live.current())

    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="lokal.catalog"):
        _write(home, text="models:\n  - alias: [\n")
        assert live.get("good") is not None and live.get("other") is not None  # the last good user entries
    assert any("not valid YAML" in r.getMessage() and "keeping" in r.getMessage() for r in caplog.records)

    _write(home, text="")
    assert live.get("good") is None and "qwen2.5-0.5b" in {s.alias for s in live.specs()}


def test_bad_entries_at_start_up_are_logged_and_skipped(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write(home, GOOD, _bad("http://h/x/.."))
    with caplog.at_level(logging.WARNING, logger="lokal.catalog"):
        live = LiveCatalog(get_settings())
    assert live.get("good") is not None and live.get("bad") is None
    assert any("'bad'" in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)


def test_a_write_within_one_mtime_tick_after_a_truncation_is_noticed(home: Path) -> None:
    # An editor that truncates, then writes: a reload in between sees an empty file. If the write lands in
    # the same mtime tick, the mtime alone does not change; the user models must not stay hidden.
    path = _write(home, text="")
    live = LiveCatalog(get_settings())
    assert live.get("good") is None
    stamp = path.stat().st_mtime_ns
    with path.open("w") as fh:  # same inode, as an editor's in-place save
        fh.write(yaml.safe_dump({"models": [GOOD]}))
    os.utime(path, ns=(stamp, stamp))
    assert live.get("good") is not None
