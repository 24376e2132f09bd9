"""The house rules that keep each room separate, as the greps a reader would run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import lokal

SRC = Path(lokal.__file__).parent


def _sources(package: str = "") -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


def _imported(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def _uses_os_environ(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    return any(
        isinstance(node, ast.Attribute) and node.attr == "environ" and getattr(node.value, "id", None) == "os"
        for node in ast.walk(tree)
    )


def test_the_environment_is_read_only_in_config() -> None:
    """Settings are handed down; env_value, child_env and library_default (config.py) are the only doors."""
    assert [p.relative_to(SRC).as_posix() for p in _sources() if _uses_os_environ(p)] == ["config.py"]


def test_the_catalog_does_not_import_the_engines() -> None:
    offenders = {
        p.relative_to(SRC).as_posix(): sorted(m for m in _imported(p) if m.startswith("lokal.engines"))
        for p in _sources("catalog")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_test_double_ships_in_the_package() -> None:
    names = {p.stem for p in _sources()}
    assert not names & {"scripted_server", "fakes", "fake_server"}


def test_optional_rooms_import_the_server_nowhere_but_their_feature() -> None:
    """embeddings, gguf and onnxgen are libraries: nothing of the server, the CLI or the features reaches them."""
    for package in ("embeddings", "gguf", "onnxgen"):
        for path in _sources(package):
            wrong = sorted(
                m
                for m in _imported(path)
                if m.split(".")[:2] in (["lokal", "server"], ["lokal", "cli"], ["lokal", "router"], ["lokal", "rag"])
            )
            assert wrong == [], f"{path.relative_to(SRC)} imports {wrong}"


@pytest.mark.parametrize("package", ["router", "rag", "web", "runtime", "protocol", "foundry"])
def test_features_and_services_do_not_import_the_server(package: str) -> None:
    offenders = {}
    for path in _sources(package):
        server = sorted(m for m in _imported(path) if m == "lokal.server" or m.startswith("lokal.server."))
        if server:
            offenders[path.relative_to(SRC).as_posix()] = server
    assert offenders == {}
