"""What one running server holds, built once at start-up and handed to every feature that installs routes.

Features in other packages (router, RAG, playground) import this module, never lokal.server: the server
depends on them through the feature list it is given, and they depend only on what is here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lokal.catalog.spec import Choice, ModelSpec, Variant
from lokal.config import Settings
from lokal.protocol.chat import ChatCompletionRequest
from lokal.protocol.completions import CompletionRequest
from lokal.protocol.embeddings import EmbeddingRequest
from lokal.protocol.outcome import Outcome
from lokal.protocol.outputs import EmbeddingList
from lokal.runtime.manager import ModelManager
from lokal.runtime.metrics import Metrics

if TYPE_CHECKING:
    from fastapi import FastAPI


class CatalogView(Protocol):
    def specs(self) -> list[ModelSpec]: ...

    def resolve(self, name: str) -> tuple[ModelSpec, Variant]: ...

    def best_variant(self, spec: ModelSpec) -> Variant: ...

    def choice(self, spec: ModelSpec) -> Choice: ...

    def resolve_choice(self, name: str) -> tuple[ModelSpec, Choice]: ...


class ServingView(Protocol):
    """The server's serving path (lokal.server.serving.Serving): requests in, typed answers out."""

    async def chat(self, body: ChatCompletionRequest) -> Outcome: ...

    async def completion(self, body: CompletionRequest) -> Outcome: ...

    async def embeddings(self, body: EmbeddingRequest) -> EmbeddingList: ...


class VirtualModels(Protocol):
    """Model names that no catalog entry serves (the router's "auto" and presets): the chat routes hand a
    request for one of them here instead of to serving."""

    def handles(self, model: str) -> bool: ...

    def names(self) -> list[str]: ...

    async def chat(self, body: ChatCompletionRequest) -> tuple[Outcome, dict[str, str]]: ...


class Feature(Protocol):
    """One part of the HTTP surface: create_app installs each feature of its list, in order."""

    name: str

    def install(self, app: FastAPI, services: Services) -> None: ...


@dataclass
class Services:
    settings: Settings
    catalog: CatalogView
    manager: ModelManager
    metrics: Metrics
    serving: ServingView
    locate: Callable[[Variant], Path | None]
    virtual_models: VirtualModels | None = None
    ready: bool = False
    starting: bool = False  # start-up work (the default model) still running: API routes answer 503
    extras: dict[str, Any] = field(default_factory=dict)

    def is_cached(self, variant: Variant) -> bool:
        return variant.is_upstream or self.locate(variant) is not None

    def virtual(self, model: str) -> VirtualModels | None:
        """The virtual models that serve `model`, when they do (else serving does)."""
        vm = self.virtual_models
        return vm if vm is not None and vm.handles(model) else None
