"""Exception tree. Each class maps to one OpenAI error type and HTTP status, so serving returns them as values."""

from __future__ import annotations

from typing import Any


class LokalError(Exception):
    status_code: int = 500
    error_type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(LokalError):
    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class AuthenticationError(LokalError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class ModelNotFound(LokalError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class ModelNotDownloaded(LokalError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_downloaded"


class NotFound(LokalError):
    """An object the request names by id (a stored response) that does not exist."""

    status_code = 404
    error_type = "invalid_request_error"


class Overloaded(LokalError):
    status_code = 503
    error_type = "server_error"
    code = "overloaded"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Starting(Overloaded):
    code = "starting"


class Forbidden(LokalError):
    """A request the server refuses by policy: a foreign Host header, a cross-site browser request."""

    status_code = 403
    error_type = "permission_error"


class PayloadTooLarge(InvalidRequest):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(InvalidRequest):
    status_code = 415
    code = "unsupported_media_type"


class ModelUnloaded(LokalError):
    """The model was unloaded (forced, or the server stopping) while this request was queued or running."""

    status_code = 503
    error_type = "server_error"
    code = "model_unloaded"


class EngineError(LokalError):
    status_code = 500
    error_type = "server_error"
    code = "engine_error"


class EngineUnavailable(LokalError):
    """The engine's optional dependency is not installed."""

    status_code = 501
    error_type = "server_error"
    code = "engine_unavailable"


class DownloadError(LokalError):
    status_code = 502
    error_type = "server_error"
    code = "download_failed"


class ChecksumMismatch(DownloadError):
    code = "checksum_mismatch"


class UpstreamError(LokalError):
    status_code = 502
    error_type = "server_error"
    code = "upstream_error"
