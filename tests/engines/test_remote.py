"""The remote engine: lokal in front of another OpenAI-compatible server (here, a second lokal)."""

from __future__ import annotations

from pathlib import Path

import httpx
from openai import OpenAI

from tests.support.models import write_catalog
from tests.support.server import LokalServer, free_port


def test_remote_variant_proxies_to_the_upstream(lokal_server: LokalServer, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    write_catalog(
        tmp_path,
        [
            {
                "alias": "far",
                "variants": [
                    {
                        "id": "far-remote:1",
                        "engine": "remote",
                        "base_url": lokal_server.base_url,
                        "upstream_model": "tiny",
                    }
                ],
            },
            {"alias": "gone", "variants": [{"id": "gone-remote:1", "engine": "remote", "base_url": dead}]},
        ],
    )
    with LokalServer(tmp_path, args=["--model", "far"]) as front:
        msgs = [{"role": "user", "content": "hello"}]
        direct = OpenAI(base_url=lokal_server.base_url, api_key="x").chat.completions.create(
            model="tiny", messages=msgs, max_tokens=9, temperature=0
        )  # type: ignore[arg-type]
        client = OpenAI(base_url=front.base_url, api_key="x", max_retries=0)
        via = client.chat.completions.create(model="far", messages=msgs, max_tokens=9, temperature=0)  # type: ignore[arg-type]
        assert via.choices[0].message.content == direct.choices[0].message.content
        assert via.usage is not None and via.usage.completion_tokens == 9
        streamed = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                model="far",
                messages=msgs,
                max_tokens=9,
                temperature=0,  # type: ignore[arg-type]
                stream=True,
            )
            if c.choices
        )
        assert streamed == direct.choices[0].message.content
        assert "far" in [m.id for m in client.models.list().data]
        r = httpx.post(
            front.base_url + "/chat/completions",
            timeout=30,
            json={"model": "gone", "messages": msgs, "max_tokens": 3},
        )
        assert r.status_code == 502
        assert r.json()["error"]["code"] == "upstream_error"
