"""Reading catalog files: the built-in one strictly, the user's one entry by entry.

A broken built-in catalog is a bug in lokal and raises. The user's `catalog.yaml` is hand-edited: one bad entry
is reported (file, entry, alias, why) and skipped, so it can never take the other models, or the server, down.
Only a file that cannot be read as a whole (YAML syntax, not a mapping) raises, and the caller decides what to
keep instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from lokal.catalog.spec import ModelSpec
from lokal.errors import LokalError


class CatalogError(LokalError):
    """A catalog file is unreadable or does not match the schema; the message names file and field."""

    status_code = 500
    error_type = "server_error"
    code = "invalid_catalog"


class CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ModelSpec] = []


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in the user catalog, said once: where, which alias, why, and what lokal did about it."""

    text: str  # e.g. "~/.lokal/catalog.yaml: models[1].url [alias 'x']: must not contain '..'; entry skipped"
    alias: str | None = None

    def __str__(self) -> str:
        return self.text


@dataclass(slots=True)
class UserCatalog:
    specs: list[ModelSpec] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    # Entries that failed validation, verbatim: `lokal model add/remove` writes them back instead of dropping
    # a hand-written entry the user is still fixing.
    rejected: list[Any] = field(default_factory=list)


SKIPPED = "; entry skipped"


def _loc_to_str(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _error_line(err: Any, prefix: tuple[int | str, ...], alias: str | None) -> str:
    where = _loc_to_str(prefix + tuple(err["loc"])) or "(top level)"
    tag = f" [alias {alias!r}]" if alias else ""
    got = f" (got {err['input']!r})" if err["type"] != "missing" and not isinstance(err["input"], dict) else ""
    return f"{where}{tag}: {err['msg']}{got}"


def alias_of(entry: Any) -> str | None:
    alias = entry.get("alias") if isinstance(entry, dict) else None
    return alias if isinstance(alias, str) else None


def load_yaml(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise CatalogError(f"{source}:{where}: not valid YAML: {problem}") from exc
    except RecursionError as exc:  # deeply nested flow collections
        raise CatalogError(f"{source}: not valid YAML: nested too deeply") from exc


def parse_catalog(text: str, source: str) -> list[ModelSpec]:
    """Parse a catalog strictly (the built-in one): any problem becomes a CatalogError naming file and field."""
    raw = load_yaml(text, source)
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise CatalogError(f"{source}: expected a mapping with a 'models:' list at the top level")
    try:
        specs = CatalogFile.model_validate(raw).models
    except ValidationError as exc:
        models = raw.get("models")
        lines = []
        for err in exc.errors():  # name the alias of the entry each error is in
            i = err["loc"][1] if len(err["loc"]) >= 2 else None
            entry = models[i] if isinstance(i, int) and isinstance(models, list) and i < len(models) else None
            lines.append(_error_line(err, (), alias_of(entry)))
        raise CatalogError(f"{source}: invalid catalog:\n  " + "\n  ".join(lines)) from exc
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        key = spec.alias.lower()
        if key in seen:
            raise CatalogError(f"{source}: models[{i}].alias: {spec.alias!r} repeats models[{seen[key]}]")
        seen[key] = i
    return specs


def parse_user_catalog(text: str, source: str) -> UserCatalog:
    """Parse the user's catalog entry by entry. Raises CatalogError only when the file as a whole is unusable.

    An empty file, or one with only comments, holds no entries: that is a valid (empty) user catalog.
    """
    raw = load_yaml(text, source)
    if raw is None:
        return UserCatalog()
    if not isinstance(raw, dict):
        raise CatalogError(f"{source}: expected a mapping with a 'models:' list at the top level")
    out = UserCatalog()
    unknown = sorted(str(k) for k in raw if k != "models")
    if unknown:
        out.problems.append(Problem(f"{source}: unknown top-level key(s) {', '.join(unknown)}: ignored"))
    models = raw.get("models")
    if models is None:  # "models:" with nothing under it
        return out
    if not isinstance(models, list):
        raise CatalogError(f"{source}: 'models' must be a list of entries, not {type(models).__name__}")
    seen: dict[str, int] = {}
    for i, entry in enumerate(models):
        alias = alias_of(entry)
        try:
            spec = ModelSpec.model_validate(entry)
        except ValidationError as exc:
            lines = [_error_line(err, ("models", i), alias) for err in exc.errors()]
            out.problems.append(Problem(f"{source}: " + "; ".join(lines) + SKIPPED, alias))
            out.rejected.append(entry)
            continue
        key = spec.alias.lower()
        if key in seen:
            text = f"{source}: models[{i}].alias: {spec.alias!r} repeats models[{seen[key]}]{SKIPPED}"
            out.problems.append(Problem(text, spec.alias))
            out.rejected.append(entry)
            continue
        seen[key] = i
        out.specs.append(spec)
    return out


def read_user_catalog(path: Path) -> UserCatalog:
    """The user catalog at `path` (none there: empty). Raises CatalogError when the file is unusable as a whole."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return UserCatalog()
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read the user catalog: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{path}: the user catalog is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    return parse_user_catalog(text, str(path))
