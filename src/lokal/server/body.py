"""Request-body parsing that tells malformed JSON apart from a well-formed body with bad fields."""

from __future__ import annotations

from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from lokal.errors import InvalidRequest
from lokal.protocol.decode import load_json

M = TypeVar("M", bound=BaseModel)


def validation_message(exc: ValidationError) -> tuple[str, str | None]:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    extra = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    return (f"{loc}: {msg}{extra}" if loc else msg + extra), (loc or None)


async def parse_body(request: Request, model: type[M]) -> M:
    data = load_json(await request.body())
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message, param = validation_message(exc)
        raise InvalidRequest(message, param=param) from None
