"""The catalog: built-in entries (packaged models.yaml) merged with the user's LOKAL_HOME/catalog.yaml.

Resolution follows Foundry Local: an exact variant id, then a variant name without ":version" (highest
version wins), then an alias (the best variant for this machine's devices).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from filelock import FileLock

from lokal import hardware
from lokal.catalog.cache import Cache
from lokal.catalog.demo import DEMO_ALIAS, demo_spec
from lokal.catalog.durable import atomic_write_text
from lokal.catalog.parse import (
    SKIPPED,
    CatalogError,
    Problem,
    UserCatalog,
    alias_of,
    parse_catalog,
    parse_user_catalog,
    read_user_catalog,
)
from lokal.catalog.spec import Choice, ModelSpec, Variant, is_safe_name
from lokal.config import Settings, get_settings
from lokal.errors import EngineUnavailable, InvalidRequest, LokalError, ModelNotFound
from lokal.hardware import Device

__all__ = ["Catalog", "CatalogError", "Problem", "builtin_specs", "parse_catalog"]

log = logging.getLogger("lokal.catalog")

Origin = Literal["builtin", "user"]
BUILTIN_RESOURCE = "models.yaml"
_PACKAGE_PREFIX = "package:"  # a variant path inside an installed Python package (the embedder)


def _resolve_package_path(variant: Variant) -> Variant:
    if not variant.path or not variant.path.startswith(_PACKAGE_PREFIX):
        return variant
    module_name = variant.path.removeprefix(_PACKAGE_PREFIX)
    try:
        module = importlib.import_module(module_name)
        getter = getattr(module, "get_model_path", None)
        path = Path(getter()) if callable(getter) else Path(module.__file__ or "").parent
    except Exception as exc:  # noqa: BLE001 - not installed, or broken: the variant reads as not cached
        log.debug("package path %s unavailable: %s", variant.path, exc)
        return variant
    return variant.model_copy(update={"path": str(path)})


def _with_package_paths(spec: ModelSpec) -> ModelSpec:
    if not any(v.path and v.path.startswith(_PACKAGE_PREFIX) for v in spec.variants):
        return spec
    return spec.model_copy(update={"variants": [_resolve_package_path(v) for v in spec.variants]})


def _unusable(spec: ModelSpec, taken: dict[str, tuple[ModelSpec, Variant]], cache: Cache) -> str | None:
    """Why a (schema-valid) user entry cannot join the catalog, or None when it can."""
    for variant in spec.variants:
        other = taken.get(variant.id.lower())
        if other is not None:
            return f"variant id {variant.id!r} is already used by alias {other[0].alias!r}; variant ids must be unique"
        if variant.needs_artifact and not variant.path:
            try:  # every listing computes this path: an entry it fails for would break them all
                cache.managed_path(variant)
            except LokalError as exc:
                return exc.message
    return None


def _named(variant: Variant, how: str) -> Choice:
    """A variant the request named itself: no choice was made, but whether it can run here still matters."""
    from lokal.runtime import engines as registry

    installed = registry.engine_installed(variant.engine)
    why = f"{how}; {variant.device}; engine {variant.engine}"
    if not installed:
        why += f", but {registry.missing_engine_note(variant.engine)}"
    return Choice(variant, why, installed=installed)


def builtin_specs() -> list[ModelSpec]:
    text = resources.files("lokal.catalog").joinpath(BUILTIN_RESOURCE).read_text(encoding="utf-8")
    return parse_catalog(text, f"lokal/catalog/{BUILTIN_RESOURCE} (built-in)")


def _with_demo(settings: Settings, builtin: list[ModelSpec]) -> list[ModelSpec]:
    """Built-ins plus the offline demo model while its file exists (it never goes into catalog.yaml)."""
    demo = demo_spec(settings)
    rest = [s for s in builtin if s.alias != DEMO_ALIAS]
    return [*rest, demo] if demo is not None else rest


_USER_HEADER = (
    "# lokal user catalog: entries here override built-in models of the same alias.\n"
    "# Schema: see docs/catalog.md. `lokal model add` and `lokal model remove` rewrite this file.\n"
)


class Catalog:
    def __init__(
        self,
        settings: Settings,
        builtin: list[ModelSpec],
        user: list[ModelSpec],
        problems: Sequence[Problem] = (),
    ) -> None:
        self.settings = settings
        self.devices: list[Device] = hardware.devices(settings)
        self._builtin = builtin
        self._user = user
        self._file_problems = list(problems)
        self._merge()

    @classmethod
    def load(cls, settings: Settings | None = None) -> Catalog:
        """Built-in plus user entries. Never fails because of the user file: its problems land in `problems`."""
        settings = settings or get_settings()
        try:
            user = read_user_catalog(settings.user_catalog)
        except CatalogError as exc:
            user = UserCatalog(problems=[Problem(exc.message + "; no user entries loaded")])
        return cls(settings, _with_demo(settings, builtin_specs()), user.specs, user.problems)

    def with_user(self, user: UserCatalog) -> Catalog:
        """The same built-in entries with another user catalog (a hot reload); the demo as its file says."""
        return Catalog(self.settings, _with_demo(self.settings, self._builtin), user.specs, user.problems)

    @property
    def problems(self) -> list[Problem]:
        """What is wrong with the user catalog (entries skipped, file unreadable). `model list` and the server
        log show these, so a bad entry is never silently missing."""
        return [*self._file_problems, *self._merge_problems]

    def _merge(self) -> None:
        """Built-ins, with user entries replacing those of the same alias and adding new ones.

        Built-ins claim their variant ids first; then each user entry joins only if its ids are free and its
        cache path can be computed (every listing computes it); otherwise it is reported and skipped, and a
        built-in it meant to replace stays visible.
        """
        user_keys = {s.alias.lower() for s in self._user}
        by_id: dict[str, tuple[ModelSpec, Variant]] = {}

        def claim(spec: ModelSpec) -> None:
            for variant in spec.variants:
                by_id[variant.id.lower()] = (spec, variant)

        for spec in self._builtin:
            if spec.alias.lower() not in user_keys:
                for variant in spec.variants:
                    if variant.id.lower() in by_id:  # the packaged file's bug, not the user's
                        raise CatalogError(
                            f"built-in catalog: variant id {variant.id!r} of alias {spec.alias!r} is already "
                            f"used by alias {by_id[variant.id.lower()][0].alias!r}; variant ids must be unique"
                        )
                claim(spec)
        cache = Cache(self.settings)
        problems: list[Problem] = []
        accepted: dict[str, ModelSpec] = {}
        for spec in self._user:
            why = _unusable(spec, by_id, cache)
            if why:
                text = f"{self.settings.user_catalog}: alias {spec.alias!r}: {why}{SKIPPED}"
                problems.append(Problem(text, spec.alias))
                continue
            claim(spec)
            accepted[spec.alias.lower()] = spec

        merged: list[ModelSpec] = []
        origin: dict[str, Origin] = {}
        for spec in self._builtin:
            key = spec.alias.lower()
            if key in accepted:
                merged.append(accepted.pop(key))
                origin[key] = "user"
            elif key not in user_keys or _unusable(spec, by_id, cache) is None:
                if key in user_keys:  # its replacement was skipped: the built-in comes back
                    claim(spec)
                merged.append(spec)
                origin[key] = "builtin"
        for key, spec in accepted.items():
            merged.append(spec)
            origin[key] = "user"
        merged = [_with_package_paths(s) for s in merged]
        self._specs = merged
        self._origin = origin
        self._by_alias = {s.alias.lower(): s for s in merged}
        # Built from the merged specs: their variants carry resolved package paths.
        self._by_id = {v.id.lower(): (spec, v) for spec in merged for v in spec.variants}
        # Resolved on every request: a name's variants, highest version first, looked up rather than scanned.
        self._by_name: dict[str, list[tuple[ModelSpec, Variant]]] = {}
        for spec, v in self._by_id.values():
            self._by_name.setdefault(v.name.lower(), []).append((spec, v))
        for same in self._by_name.values():
            same.sort(key=lambda sv: sv[1].version, reverse=True)
        self._merge_problems = problems

    def problems_for(self, alias: str) -> list[Problem]:
        return [p for p in self.problems if p.alias and p.alias.lower() == alias.lower()]

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

    def choice(self, spec: ModelSpec) -> Choice:
        """The variant of `spec` for this machine's devices and installed engines, and why."""
        return spec.choose(self.devices)

    def best_variant(self, spec: ModelSpec) -> Variant:
        return self.choice(spec).variant

    def resolve(self, name: str) -> tuple[ModelSpec, Variant]:
        """Exact variant id, then variant name (highest version), then alias (best for the devices)."""
        spec, choice = self.resolve_choice(name)
        return spec, choice.variant

    def resolve_runnable(self, name: str) -> tuple[ModelSpec, Variant]:
        """`resolve` for serving: a variant whose engine is not installed raises EngineUnavailable, naming the
        command that installs it, before anything is downloaded or loaded for it."""
        spec, choice = self.resolve_choice(name)
        if not choice.installed:
            raise EngineUnavailable(
                f"model {spec.alias!r} resolves to {choice.variant.id}: {choice.why}", param="model"
            )
        return spec, choice.variant

    def resolve_choice(self, name: str) -> tuple[ModelSpec, Choice]:
        """`resolve`, with why that variant (and whether its engine is installed)."""
        name = name.strip()
        if not name or not is_safe_name(name):
            raise InvalidRequest(
                f"model name {name!r} is not valid: use a catalog alias or variant id "
                "(letters, digits, '.', '_', '-'; no '/', '\\' or '..')",
                param="model",
            )
        key = name.lower()
        if key in self._by_id:
            spec, variant = self._by_id[key]
            return spec, _named(variant, "variant id asked for")
        if ":" not in key:
            same_name = self._by_name.get(key)
            if same_name:
                spec, variant = same_name[0]
                return spec, _named(variant, "highest version of the variant name asked for")
            by_alias = self._by_alias.get(key)
            if by_alias is not None:
                return by_alias, self.choice(by_alias)
        raise self._not_found(name)

    def _not_found(self, name: str) -> ModelNotFound:
        return ModelNotFound(
            f"model {name!r} is not in the catalog. Known aliases: {', '.join(self.aliases())}. "
            "Bring your own GGUF with `lokal model add PATH --alias NAME`.",
            param="model",
        )

    # -- the user file -------------------------------------------------------------------------------------

    def _edit_user(self, alias: str, edit: Callable[[list[ModelSpec]], list[ModelSpec]]) -> None:
        path = self.settings.user_catalog
        path.parent.mkdir(parents=True, exist_ok=True)
        # Two CLI calls (or the CLI and the server) editing at once must not lose each other's entries.
        with FileLock(str(path) + ".lock", timeout=30):
            current = read_user_catalog(path)  # unreadable as a whole: raise rather than overwrite it
            updated = edit(current.specs)
            # Hand-written entries that do not validate are written back as they were (the user may be fixing
            # them), except those under the alias this edit replaces or removes.
            kept_raw = [r for r in current.rejected if (alias_of(r) or "").lower() != alias.lower()]
            data = {"models": [s.model_dump(mode="json", exclude_defaults=True) for s in updated] + kept_raw}
            text = _USER_HEADER + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
            fresh = self.with_user(parse_user_catalog(text, str(path)))
            refused = fresh.problems_for(alias)
            if refused:  # refuse edits that would leave their own entry skipped
                raise CatalogError(refused[0].text.removesuffix(SKIPPED))
            atomic_write_text(path, text)
        self._user, self._file_problems = fresh._user, fresh._file_problems
        self._merge()

    def add_user_model(self, spec: ModelSpec) -> None:
        """Add or replace (same alias) an entry in LOKAL_HOME/catalog.yaml."""

        def edit(current: list[ModelSpec]) -> list[ModelSpec]:
            kept = [s for s in current if s.alias.lower() != spec.alias.lower()]
            return [*kept, spec]

        try:
            self._edit_user(spec.alias, edit)
        except CatalogError as exc:
            raise InvalidRequest(f"cannot add {spec.alias!r}: {exc.message}", param="alias") from exc

    def remove_user_model(self, alias: str) -> ModelSpec | None:
        """Drop the user entry for `alias`; returns it, or None when the user catalog has no such alias."""
        removed: list[ModelSpec] = []

        def edit(current: list[ModelSpec]) -> list[ModelSpec]:
            removed.extend(s for s in current if s.alias.lower() == alias.lower())
            return [s for s in current if s.alias.lower() != alias.lower()]

        if not any(s.alias.lower() == alias.lower() for s in read_user_catalog(self.settings.user_catalog).specs):
            return None
        self._edit_user(alias, edit)
        return removed[0] if removed else None
