"""The tiny random-weight GGUF every engine test runs on, and catalogs that register it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lokal.gguf.synthetic import SHAPES, write_gguf


def build_tiny(directory: Path, quant: str = "f32") -> Path:
    return write_gguf(directory / f"tiny-{quant}.gguf", SHAPES["tiny"], quant, like="tiny", seed=0)


def tiny_entry(alias: str, path: Path, capabilities: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "alias": alias,
        "publisher": "lokal-tests",
        "license": "none",
        "context_length": 2048,
        "capabilities": capabilities,
        "synthetic": True,
        "description": "tiny random-weight test model (text is noise)",
        "variants": [{"id": f"{alias}-cpu:1", "device": "cpu", "engine": "llamacpp", "path": str(path)}],
        **extra,
    }


def write_catalog(home: Path, entries: list[dict[str, Any]]) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "catalog.yaml"
    path.write_text(yaml.safe_dump({"models": entries}, sort_keys=False))
    return path


def standard_entries(gguf: Path) -> list[dict[str, Any]]:
    return [
        tiny_entry("tiny", gguf, ["general", "summarize", "fast"]),
        tiny_entry("tiny-coder", gguf, ["code", "refactor"]),
    ]
