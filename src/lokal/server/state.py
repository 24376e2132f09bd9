"""Everything one running server holds, built once at start-up and shared by the routes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lokal.catalog.spec import Choice, ModelSpec, Variant
from lokal.config import Settings
from lokal.protocol.chat import ChatCompletionRequest
from lokal.protocol.outputs import LokalModelInfo, LokalRouterInfo, ModelCard
from lokal.runtime.manager import ModelManager
from lokal.server.metrics import Metrics
from lokal.server.serving import Outcome, Serving


class CatalogView(Protocol):
    def specs(self) -> list[ModelSpec]: ...

    def resolve(self, name: str) -> tuple[ModelSpec, Variant]: ...

    def best_variant(self, spec: ModelSpec) -> Variant: ...

    def choice(self, spec: ModelSpec) -> Choice: ...

    def resolve_choice(self, name: str) -> tuple[ModelSpec, Choice]: ...


class RouterHook(Protocol):
    """The model router, when installed: claims model names like "auto" in chat requests."""

    def handles(self, model: str) -> bool: ...

    def names(self) -> list[str]: ...

    async def chat(self, body: ChatCompletionRequest) -> tuple[Outcome, dict[str, str]]: ...


@dataclass
class AppState:
    settings: Settings
    catalog: CatalogView
    manager: ModelManager
    metrics: Metrics
    serving: Serving
    locate: Callable[[Variant], Path | None]
    router: RouterHook | None = None
    ready: bool = False
    starting: bool = False  # start-up work (the default model) still running: API routes answer 503
    extras: dict[str, Any] = field(default_factory=dict)

    def is_cached(self, variant: Variant) -> bool:
        return variant.is_upstream or self.locate(variant) is not None

    def _card(self, spec: ModelSpec, choice: Choice) -> ModelCard:
        variant = choice.variant
        loaded = self.manager._loaded.get(variant.id)
        return ModelCard(
            id=spec.alias,
            owned_by=spec.publisher,
            lokal=LokalModelInfo(
                variant=variant.id,
                engine=variant.engine,
                device=variant.device,
                task=spec.task,
                synthetic=spec.synthetic,
                cached=self.is_cached(variant),
                loaded=loaded is not None,
                context_length=spec.context_length,
                capabilities=spec.capabilities,
                description=spec.description,
                engine_installed=choice.installed,
                why=choice.why,
            ),
        )

    def model_cards(self, include_all: bool = False) -> list[ModelCard]:
        cards = []
        for spec in self.catalog.specs():
            choice = self.catalog.choice(spec)
            if include_all or self.is_cached(choice.variant):
                cards.append(self._card(spec, choice))
        if self.router is not None:
            cards += [
                ModelCard(id=name, owned_by="lokal-router", lokal=LokalRouterInfo()) for name in self.router.names()
            ]
        return cards

    def model_card(self, name: str) -> ModelCard:
        if self.router is not None and self.router.handles(name):
            return ModelCard(id=name, owned_by="lokal-router")
        spec, choice = self.catalog.resolve_choice(name)
        return self._card(spec, choice)
