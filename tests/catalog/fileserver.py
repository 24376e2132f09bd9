"""A real HTTP file server on 127.0.0.1 that behaves like the Hugging Face hub where it matters.

It serves bytes with Range support (or without, like some mirrors), redirects `/<repo>/resolve/<rev>/<file>`
to a "CDN" path carrying X-Linked-Etag / X-Linked-Size the way huggingface.co does, can cut the first
transfer of a file midway (or every one), can trickle bytes slowly so a test can kill a downloader mid-file,
can send a body without Content-Length that ends when the connection closes, and can stall mid-body until
the server stops. `add_hub_folder` also answers the hub's tree API (`/api/models/<repo>/tree/<rev>/<folder>`)
for the folder, in pages linked by `Link: <...>; rel="next"` as huggingface.co sends them.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

_RANGE_RE = re.compile(r"bytes=(\d+)-$")
CHUNK = 64 * 1024


@dataclass
class Served:
    data: bytes
    range_ok: bool = True
    cut_first: int | None = None  # the first GET of this file stops after this many body bytes
    cut: int | None = None  # every GET stops after this many body bytes (until a test sets it to None)
    length: bool = True  # False: no Content-Length; the body ends when the server closes the connection
    stall_after: int | None = None  # after this many body bytes, send nothing more until the server stops
    delay: float = 0.0  # seconds to sleep between 64 KiB chunks
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    gets: int = 0

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    status: int = 0


class FileServer:
    def __init__(self) -> None:
        self.files: dict[str, Served] = {}
        self.redirects: dict[str, tuple[str, dict[str, str]]] = {}
        self.trees: dict[str, list[dict[str, Any]]] = {}  # unquoted tree API path -> its entries
        self.page_size = 1000
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()  # releases stalled transfers
        self._httpd: ThreadingHTTPServer | None = None

    # -- set-up ---------------------------------------------------------------------------------------------

    def add(self, path: str, data: bytes, **opts: Any) -> Served:
        served = Served(data=data, **opts)
        self.files[path] = served
        return served

    def add_hub_file(self, repo: str, filename: str, data: bytes, revision: str = "main", **opts: Any) -> Served:
        """Like huggingface.co: the resolve URL answers 302 with the LFS sha256 and size, the CDN serves."""
        cdn = f"/cdn/{repo}/{filename}"
        served = self.add(cdn, data, **opts)
        self.redirects[f"/{repo}/resolve/{revision}/{filename}"] = (
            cdn,
            {"X-Linked-Etag": f'"{served.sha256}"', "X-Linked-Size": str(len(data))},
        )
        return served

    def add_hub_folder(
        self, repo: str, folder: str, files: dict[str, bytes], revision: str = "main", *, lfs: bool = True, **opts: Any
    ) -> dict[str, Served]:
        """Every file of `files` (name inside `folder` -> bytes) served like add_hub_file, and listed by the tree
        API the way the hub lists them: LFS files (all but *.json when `lfs`) carry `lfs.oid`, their sha256."""
        served: dict[str, Served] = {}
        entries: list[dict[str, Any]] = []
        if folder:
            entries.append({"type": "directory", "oid": "0" * 40, "size": 0, "path": folder})
        for name, data in files.items():
            path = f"{folder}/{name}" if folder else name
            served[name] = self.add_hub_file(repo, path, data, revision, **opts.get(name, {}))
            entry: dict[str, Any] = {"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data),
                                     "path": path}  # fmt: skip
            if lfs and not name.endswith(".json"):
                entry["lfs"] = {"oid": served[name].sha256, "size": len(data), "pointerSize": 134}
            entries.append(entry)
        self.trees[f"/api/models/{repo}/tree/{revision}" + (f"/{folder}" if folder else "")] = entries
        return served

    @property
    def url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def gets(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.path == path]

    # -- running --------------------------------------------------------------------------------------------

    def __enter__(self) -> FileServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                seen = Seen(self.path, {k.lower(): v for k, v in self.headers.items()})
                with server._lock:
                    server.requests.append(seen)
                parts = urlsplit(self.path)
                if unquote(parts.path) in server.trees:
                    self._tree(unquote(parts.path), parts.path, parse_qs(parts.query), seen)
                    return
                if self.path in server.redirects:
                    target, extra = server.redirects[self.path]
                    seen.status = 302
                    self.send_response(302)
                    self.send_header("Location", target)
                    for k, v in extra.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                served = server.files.get(self.path)
                if served is None or served.status != 200:
                    seen.status = served.status if served else 404
                    self.send_response(seen.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with server._lock:
                    served.gets += 1
                    first = served.gets == 1
                data, total = served.data, len(served.data)
                start = 0
                m = _RANGE_RE.match(self.headers.get("Range", ""))
                if served.range_ok and m:
                    start = int(m.group(1))
                    if start >= total:
                        seen.status = 416
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{total}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    seen.status = 206
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
                else:
                    seen.status = 200
                    self.send_response(200)
                if served.range_ok:
                    self.send_header("Accept-Ranges", "bytes")
                for k, v in served.headers.items():
                    self.send_header(k, v)
                body = data[start:]
                if served.length:
                    self.send_header("Content-Length", str(len(body)))
                else:  # HTTP/1.0 style: the end of the connection is the end of the body
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                limit = len(body)
                if first and served.cut_first is not None:
                    limit = served.cut_first
                elif served.cut is not None:
                    limit = min(limit, served.cut)
                try:
                    sent = 0
                    while sent < limit:
                        if served.stall_after is not None and sent >= served.stall_after:
                            server._stopping.wait()  # a server that stops sending but keeps the line open
                            return
                        n = min(CHUNK, limit - sent)
                        if served.stall_after is not None:
                            n = min(n, max(1, served.stall_after - sent))
                        self.wfile.write(body[sent : sent + n])
                        self.wfile.flush()
                        sent += n
                        if served.delay:
                            time.sleep(served.delay)
                except (BrokenPipeError, ConnectionResetError):
                    return
                if limit < len(body):
                    self.close_connection = True  # the client sees a body shorter than it should be

            def _tree(self, key: str, raw_path: str, query: dict[str, list[str]], seen: Seen) -> None:
                entries = server.trees[key]  # recursive: tests check that lokal asks for it (seen.path)
                start = int(query.get("cursor", ["0"])[0])
                page = entries[start : start + server.page_size]
                body = json.dumps(page).encode()
                seen.status = 200
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if start + server.page_size < len(entries):
                    nxt = f"{server.url}{raw_path}?recursive=true&cursor={start + server.page_size}"
                    self.send_header("Link", f'<{nxt}>; rel="next"')
                self.end_headers()
                self.wfile.write(body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._httpd is not None
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
