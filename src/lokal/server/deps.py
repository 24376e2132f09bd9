"""The one FastAPI dependency the server's routes take: the app's Services (create_app puts them on app.state)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from lokal.runtime.services import Services


async def get_services(request: Request) -> Services:
    # async: FastAPI runs a plain-def dependency on a worker thread, a hop every request would pay for
    services: Services = request.app.state.lokal
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
