"""The /v1/models cards: each catalog entry with lokal's own fields, then the names of the virtual models."""

from __future__ import annotations

from lokal.catalog.spec import Choice, ModelSpec
from lokal.protocol.outputs import LokalModelInfo, LokalRouterInfo, ModelCard
from lokal.runtime.services import Services


def _card(services: Services, spec: ModelSpec, choice: Choice) -> ModelCard:
    variant = choice.variant
    loaded = services.manager.loaded_variant(variant.id)
    return ModelCard(
        id=spec.alias,
        owned_by=spec.publisher,
        lokal=LokalModelInfo(
            variant=variant.id,
            engine=variant.engine,
            device=variant.device,
            task=spec.task,
            synthetic=spec.synthetic,
            cached=services.is_cached(variant),
            loaded=loaded is not None,
            context_length=spec.context_length,
            capabilities=spec.capabilities,
            description=spec.description,
            engine_installed=choice.installed,
            why=choice.why,
        ),
    )


def model_cards(services: Services, include_all: bool = False) -> list[ModelCard]:
    cards = []
    for spec in services.catalog.specs():
        choice = services.catalog.choice(spec)
        if include_all or services.is_cached(choice.variant):
            cards.append(_card(services, spec, choice))
    if services.virtual_models is not None:
        cards += [
            ModelCard(id=name, owned_by="lokal-router", lokal=LokalRouterInfo())
            for name in services.virtual_models.names()
        ]
    return cards


def model_card(services: Services, name: str) -> ModelCard:
    if services.virtual_models is not None and services.virtual_models.handles(name):
        return ModelCard(id=name, owned_by="lokal-router")
    spec, choice = services.catalog.resolve_choice(name)
    return _card(services, spec, choice)
