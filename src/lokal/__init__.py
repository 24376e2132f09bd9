"""lokal: local models behind an OpenAI-compatible server, and `Client` to use them from Python.

Importing lokal imports no engine, server or HTTP client: `Client` loads them when it is made.
"""

from lokal.client import Client, ModelInfo
from lokal.config import Settings
from lokal.errors import (
    ContextLengthExceeded,
    EngineUnavailable,
    InvalidRequest,
    LokalError,
    ModelNotDownloaded,
    ModelNotFound,
    Overloaded,
    UpstreamError,
)

__all__ = [
    "Client",
    "ContextLengthExceeded",
    "EngineUnavailable",
    "InvalidRequest",
    "LokalError",
    "ModelInfo",
    "ModelNotDownloaded",
    "ModelNotFound",
    "Overloaded",
    "Settings",
    "UpstreamError",
]
