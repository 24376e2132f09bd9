"""Engines from other packages: an installed distribution's `lokal.engines` entry points join the registry.

The plugin here is a real distribution on sys.path (a module and its .dist-info folder), found by
importlib.metadata exactly as a pip-installed one would be.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lokal.catalog.spec import Variant
from lokal.runtime.engines import ENGINES, registry, traits_of
from tests.support.echo import echo_app, echo_entry, echo_settings

PLUGIN = '''
from lokal.engine_traits import EngineTraits
from lokal.engines.echo import EchoEngine
from lokal.runtime.engines import EngineEntry


class ShoutEngine(EchoEngine):
    def answer(self, req):
        return super().answer(req).upper()


ENTRY = EngineEntry(
    EngineTraits("Shout", "thread", frozenset({"chat-completion"}), needs_artifact=True),
    lambda settings, parallel: ShoutEngine(),
)
'''

ENTRY_POINTS = """
[lokal.engines]
shout = lokal_shout:ENTRY
broken = lokal_shout_missing:ENTRY
not-an-entry = lokal_shout:ShoutEngine
llamacpp = lokal_shout:ENTRY
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    site = tmp_path / "site"
    (site / "lokal_shout-0.1.dist-info").mkdir(parents=True)
    (site / "lokal_shout.py").write_text(PLUGIN)
    (site / "lokal_shout-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: lokal-shout\n"
                                                                  "Version: 0.1\n")  # fmt: skip
    (site / "lokal_shout-0.1.dist-info" / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(site))
    registry.cache_clear()
    yield
    monkeypatch.undo()
    registry.cache_clear()


def test_a_plugin_engine_joins_and_a_bad_one_is_left_out_with_a_warning(
    plugin: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="lokal.engines"):
        names = set(registry())
    assert names == {*ENGINES, "shout"}
    assert traits_of("shout").label == "Shout"
    assert registry()["llamacpp"] is ENGINES["llamacpp"]  # lokal's own names cannot be taken over
    said = caplog.text
    assert "'broken' from lokal_shout_missing:ENTRY (lokal-shout) is left out: ModuleNotFoundError" in said
    assert "'not-an-entry'" in said and "not a lokal EngineEntry" in said
    assert "lokal_shout:ENTRY (lokal-shout) is ignored: 'llamacpp' is one of lokal's own engines" in said
    assert Variant(id="s:1", engine="shout", path="/x").engine == "shout"
    with pytest.raises(ValueError, match="unknown engine 'broken'"):
        Variant(id="b:1", engine="broken", path="/x")


def test_a_catalog_model_on_a_plugin_engine_is_served(plugin: None, tmp_path: Path) -> None:
    entry = echo_entry(tmp_path, "loud")
    entry["variants"][0]["engine"] = "shout"

    async def main() -> dict[str, Any]:
        async with echo_app(echo_settings(tmp_path, [entry])) as (client, _):
            r = await client.post("/v1/chat/completions",
                                  json={"model": "loud", "messages": [{"role": "user", "content": "say hi"}]})
            assert r.status_code == 200, r.text
            listed = (await client.get("/foundry/list")).json()
            return {"answer": r.json()["choices"][0]["message"]["content"], "listed": listed}

    got = asyncio.run(main())
    assert got["answer"] == "SAY HI"
    assert [m["modelType"] for m in got["listed"] if m["alias"] == "loud"] == ["Shout"]


def test_without_plugins_the_registry_is_lokals_own() -> None:
    assert set(registry()) == set(ENGINES)
