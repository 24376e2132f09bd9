"""The catalog: built-in entries (packaged models.yaml) merged with the user's LOKAL_HOME/catalog.yaml.

Resolution follows Foundry Local: an exact variant id, then a variant name without ":version" (highest
version wins), then an alias (the best variant for this machine's devices).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from filelock import FileLock
from pydantic import BaseModel, ConfigDict, ValidationError

from lokal import hardware
from lokal.catalog.durable import atomic_write_text
from lokal.catalog.spec import Device, ModelSpec, Variant, is_safe_name
from lokal.config import Settings, get_settings
from lokal.errors import InvalidRequest, LokalError, ModelNotFound

Origin = Literal["builtin", "user"]
BUILTIN_RESOURCE = "models.yaml"
_PACKAGE_PREFIX = "package:"  # a variant path inside an installed Python package (the embedder)


class CatalogError(LokalError):
    """A catalog file is unreadable or does not match the schema; the message names file and field."""

    status_code = 500
    error_type = "server_error"
    code = "invalid_catalog"


class CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ModelSpec] = []


def _loc_to_str(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _describe(exc: ValidationError, raw: Any, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = _loc_to_str(loc) or "(top level)"
        alias = None
        if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int) and isinstance(raw, dict):
            models = raw.get("models")
            if isinstance(models, list) and loc[1] < len(models) and isinstance(models[loc[1]], dict):
                alias = models[loc[1]].get("alias")
        got = (
            f" (got {err['input']!r})"
            if err["type"] != "missing" and not isinstance(err["input"], dict)
            else ""
        )
        lines.append(f"{where}{f' [alias {alias!r}]' if alias else ''}: {err['msg']}{got}")
    return f"{source}: invalid catalog:\n  " + "\n  ".join(lines)


def parse_catalog(text: str, source: str) -> list[ModelSpec]:
    """Parse one catalog file; any problem becomes a CatalogError naming `source` and the field."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise CatalogError(f"{source}:{where}: not valid YAML: {problem}") from exc
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise CatalogError(f"{source}: expected a mapping with a 'models:' list at the top level")
    try:
        specs = CatalogFile.model_validate(raw).models
    except ValidationError as exc:
        raise CatalogError(_describe(exc, raw, source)) from exc
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        key = spec.alias.lower()
        if key in seen:
            raise CatalogError(f"{source}: models[{i}].alias: {spec.alias!r} repeats models[{seen[key]}]")
        seen[key] = i
    return specs


def _resolve_package_path(variant: Variant) -> Variant:
    if not variant.path or not variant.path.startswith(_PACKAGE_PREFIX):
        return variant
    module_name = variant.path.removeprefix(_PACKAGE_PREFIX)
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return variant  # not installed: the path does not exist, so the variant reads as not cached
    getter = getattr(module, "get_model_path", None)
    path = Path(getter()) if callable(getter) else Path(module.__file__ or "").parent
    return variant.model_copy(update={"path": str(path)})


def _with_package_paths(spec: ModelSpec) -> ModelSpec:
    if not any(v.path and v.path.startswith(_PACKAGE_PREFIX) for v in spec.variants):
        return spec
    return spec.model_copy(update={"variants": [_resolve_package_path(v) for v in spec.variants]})


def builtin_specs() -> list[ModelSpec]:
    text = resources.files("lokal.catalog").joinpath(BUILTIN_RESOURCE).read_text(encoding="utf-8")
    return parse_catalog(text, f"lokal/catalog/{BUILTIN_RESOURCE} (built-in)")


_USER_HEADER = (
    "# lokal user catalog: entries here override built-in models of the same alias.\n"
    "# Schema: see docs/catalog.md. `lokal model add` and `lokal model remove` rewrite this file.\n"
)


class Catalog:
    def __init__(self, settings: Settings, builtin: list[ModelSpec], user: list[ModelSpec]) -> None:
        self.settings = settings
        self.devices: list[Device] = hardware.devices(settings)
        self._builtin = builtin
        self._user = user
        self._merge()

    @classmethod
    def load(cls, settings: Settings | None = None) -> Catalog:
        settings = settings or get_settings()
        return cls(settings, builtin_specs(), cls._read_user(settings))

    @staticmethod
    def _read_user(settings: Settings) -> list[ModelSpec]:
        path = settings.user_catalog
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise CatalogError(f"{path}: cannot read the user catalog: {exc.strerror or exc}") from exc
        return parse_catalog(text, str(path))

    def _merge(self) -> None:
        user_by_alias = {s.alias.lower(): s for s in self._user}
        merged: list[ModelSpec] = []
        origin: dict[str, Origin] = {}
        for spec in self._builtin:
            key = spec.alias.lower()
            if key in user_by_alias:
                merged.append(user_by_alias.pop(key))
                origin[key] = "user"
            else:
                merged.append(spec)
                origin[key] = "builtin"
        for key, spec in user_by_alias.items():
            merged.append(spec)
            origin[key] = "user"
        merged = [_with_package_paths(s) for s in merged]

        by_id: dict[str, tuple[ModelSpec, Variant]] = {}
        for spec in merged:
            for variant in spec.variants:
                key = variant.id.lower()
                if key in by_id:
                    other = by_id[key][0].alias
                    where = self.settings.user_catalog if origin[spec.alias.lower()] == "user" else "built-in"
                    raise CatalogError(
                        f"{where}: variant id {variant.id!r} of alias {spec.alias!r} is already used by "
                        f"alias {other!r}; variant ids must be unique"
                    )
                by_id[key] = (spec, variant)
        self._specs = merged
        self._origin = origin
        self._by_alias = {s.alias.lower(): s for s in merged}
        self._by_id = by_id

    # -- reading -------------------------------------------------------------------------------------------

    def specs(self) -> list[ModelSpec]:
        return list(self._specs)

    def aliases(self) -> list[str]:
        return [s.alias for s in self._specs]

    def get(self, alias: str) -> ModelSpec | None:
        return self._by_alias.get(alias.lower())

    def origin(self, alias: str) -> Origin:
        if alias.lower() not in self._origin:
            raise self._not_found(alias)
        return self._origin[alias.lower()]

    def overrides_builtin(self, alias: str) -> bool:
        return self.origin(alias) == "user" and any(s.alias.lower() == alias.lower() for s in self._builtin)

    def variants(self) -> Iterator[tuple[ModelSpec, Variant]]:
        for spec in self._specs:
            for variant in spec.variants:
                yield spec, variant

    def best_variant(self, spec: ModelSpec) -> Variant:
        return spec.variant_for(self.devices)

    def resolve(self, name: str) -> tuple[ModelSpec, Variant]:
        """Exact variant id, then variant name (highest version), then alias (best for the devices)."""
        name = name.strip()
        if not name or not is_safe_name(name):
            raise InvalidRequest(
                f"model name {name!r} is not valid: use a catalog alias or variant id "
                "(letters, digits, '.', '_', '-'; no '/', '\\' or '..')",
                param="model",
            )
        key = name.lower()
        if key in self._by_id:
            return self._by_id[key]
        if ":" not in key:
            same_name = [(s, v) for s, v in self._by_id.values() if v.name.lower() == key]
            if same_name:
                return max(same_name, key=lambda sv: sv[1].version)
            spec = self._by_alias.get(key)
            if spec is not None:
                return spec, self.best_variant(spec)
        raise self._not_found(name)

    def _not_found(self, name: str) -> ModelNotFound:
        return ModelNotFound(
            f"model {name!r} is not in the catalog. Known aliases: {', '.join(self.aliases())}. "
            "Bring your own GGUF with `lokal model add PATH --alias NAME`.",
            param="model",
        )

    # -- the user file -------------------------------------------------------------------------------------

    def _edit_user(self, edit: Any) -> None:
        path = self.settings.user_catalog
        path.parent.mkdir(parents=True, exist_ok=True)
        # Two CLI calls (or the CLI and the server) editing at once must not lose each other's entries.
        with FileLock(str(path) + ".lock", timeout=30):
            current = self._read_user(self.settings)
            updated: list[ModelSpec] = edit(current)
            data = {"models": [s.model_dump(mode="json", exclude_defaults=True) for s in updated]}
            trial = Catalog(self.settings, self._builtin, updated)  # refuse edits that break the catalog
            atomic_write_text(path, _USER_HEADER + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        self._user = trial._user
        self._merge()

    def add_user_model(self, spec: ModelSpec) -> None:
        """Add or replace (same alias) an entry in LOKAL_HOME/catalog.yaml."""

        def edit(current: list[ModelSpec]) -> list[ModelSpec]:
            kept = [s for s in current if s.alias.lower() != spec.alias.lower()]
            return [*kept, spec]

        try:
            self._edit_user(edit)
        except CatalogError as exc:
            raise InvalidRequest(f"cannot add {spec.alias!r}: {exc.message}", param="alias") from exc

    def remove_user_model(self, alias: str) -> ModelSpec | None:
        """Drop the user entry for `alias`; returns it, or None when the user catalog has no such alias."""
        removed: list[ModelSpec] = []

        def edit(current: list[ModelSpec]) -> list[ModelSpec]:
            removed.extend(s for s in current if s.alias.lower() == alias.lower())
            return [s for s in current if s.alias.lower() != alias.lower()]

        if not any(s.alias.lower() == alias.lower() for s in self._read_user(self.settings)):
            return None
        self._edit_user(edit)
        return removed[0] if removed else None
