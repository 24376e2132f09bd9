"""Decoding a JSON request body so that every way it can be malformed is a 400, never a 500 later.

Three inputs pass `json.loads` or break it in unexpected ways: nesting deep enough to exhaust the decoder's
recursion, integers past Python's 4,300-digit conversion limit, and lone UTF-16 surrogates (valid JSON escapes
that no tokenizer or encoder accepts).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from lokal.errors import InvalidRequest


def load_json(raw: bytes) -> Any:
    """The decoded body, or InvalidRequest (code invalid_json) saying what is wrong with it."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"malformed JSON in request body: {exc}", code="invalid_json") from None
    except RecursionError:
        raise InvalidRequest("malformed JSON in request body: nested too deeply", code="invalid_json") from None
    except ValueError as exc:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise InvalidRequest(f"malformed JSON in request body: {exc}", code="invalid_json") from None
    _check_text(data)
    return data


def _check_text(data: Any) -> None:
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            _check_str(value, where)
        elif isinstance(value, dict):
            for k, v in value.items():
                _check_str(k, where)
                stack.append((v, f"{where}.{k}" if where else k))
        elif isinstance(value, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(value))


def _check_str(s: str, where: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(
            f"invalid text in request body{' at ' + where if where else ''}: a lone UTF-16 surrogate "
            "(\\ud800-\\udfff) is not a character",
            param=where or None,
            code="invalid_json",
        ) from None


def validation_message(exc: ValidationError) -> tuple[str, str | None]:
    """A body that decoded but has bad fields: one line naming the first problem, and its field (the param)."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    extra = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    return (f"{loc}: {msg}{extra}" if loc else msg + extra), (loc or None)


__all__ = ["load_json", "validation_message"]
