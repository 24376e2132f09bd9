"""Retrieval-augmented generation: ingest documents into SQLite collections, retrieve, answer with citations.

Modules: loaders (file -> blocks), chunk, index (SQLite), ingest, retrieve (BM25, dense, hybrid), answer,
eval, routes (HTTP), chat_app (Chainlit). Nothing heavy is imported here: the server imports this package.
"""
