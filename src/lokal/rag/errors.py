"""RAG errors. They are lokal errors, so the server's handler renders them in OpenAI's error shape."""

from __future__ import annotations

from lokal.errors import InvalidRequest, LokalError


class CollectionNotFound(LokalError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "collection_not_found"


class EmptyCollection(InvalidRequest):
    code = "collection_empty"


class InvalidCollectionName(InvalidRequest):
    code = "invalid_collection_name"


class IndexMismatch(InvalidRequest):
    """The collection was built with another embedding model: its vectors cannot be compared with ours."""

    code = "index_mismatch"
