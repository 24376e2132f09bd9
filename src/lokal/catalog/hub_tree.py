"""What files a folder of a Hugging Face repo holds: the hub's tree API, read the way huggingface_hub's
`HfApi.list_repo_tree(recursive=True)` reads it.

`GET {endpoint}/api/models/{repo}/tree/{revision}/{folder}?recursive=true` answers a JSON list of entries
(`type` "file" or "directory", `path` from the repo root, `size`, and for LFS files `lfs.oid`, the sha256 of
the content); long listings continue on the URL of the response's `Link: <...>; rel="next"` header.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from lokal.catalog.spec import Variant, is_safe_segment
from lokal.errors import DownloadError

MAX_PAGES = 100  # the hub sends 1000 entries a page; a model folder never needs this many


@dataclass(frozen=True, slots=True)
class RemoteFile:
    path: str  # from the repo root, as `file` of a one-file download
    rel: str  # inside the folder: where it lands under the variant's folder
    size: int | None
    sha256: str | None  # LFS files only; the others are checked by their exact size


def tree_url(variant: Variant, endpoint: str) -> str:
    assert variant.repo is not None
    folder = f"/{quote(variant.file, safe='')}" if variant.file else ""
    return f"{endpoint.rstrip('/')}/api/models/{variant.repo}/tree/{quote(variant.revision, safe='')}{folder}"


def _entry(raw: Any, prefix: str) -> RemoteFile | None:
    if not isinstance(raw, dict) or raw.get("type") != "file" or not isinstance(raw.get("path"), str):
        return None
    path: str = raw["path"]
    if prefix and not path.startswith(prefix + "/"):
        raise DownloadError(f"the hub listed {path!r} as part of folder {prefix!r}; refusing the listing")
    rel = path[len(prefix) + 1 :] if prefix else path
    if not rel or not all(is_safe_segment(p) for p in rel.split("/")):
        raise DownloadError(f"the hub listed a file named {path!r}, which cannot be stored safely; refusing it")
    size = raw.get("size")
    lfs: dict[str, Any] = raw["lfs"] if isinstance(raw.get("lfs"), dict) else {}
    sha = lfs.get("sha256") or lfs.get("oid")
    if isinstance(lfs.get("size"), int):
        size = lfs["size"]
    return RemoteFile(
        path=path,
        rel=rel,
        size=size if isinstance(size, int) and size >= 0 else None,
        sha256=sha.lower() if isinstance(sha, str) and len(sha) == 64 else None,
    )


def list_folder(http: httpx.Client, variant: Variant, endpoint: str, headers: dict[str, str]) -> list[RemoteFile]:
    """Every file under the variant's folder (`file`; the whole repo when it has none), sorted by path."""
    url: str | None = tree_url(variant, endpoint)
    where = f"{variant.repo}/{variant.file}" if variant.file else str(variant.repo)
    host = urlsplit(endpoint).netloc or endpoint
    params: dict[str, str] | None = {"recursive": "true", "expand": "false"}
    files: list[RemoteFile] = []
    for _ in range(MAX_PAGES):
        if url is None:
            break
        try:
            resp = http.get(url, params=params, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol) as exc:
            raise DownloadError(
                f"cannot reach the model hub at {host} to list the files of {where} ({exc or type(exc).__name__}); "
                "check your connection or LOKAL_HF_ENDPOINT"
            ) from exc
        except httpx.HTTPError as exc:
            raise DownloadError(f"listing the files of {where} at {host} failed: {exc or type(exc).__name__}") from exc
        if resp.status_code in (401, 403):
            raise DownloadError(
                f"the hub refused to list {where} (HTTP {resp.status_code}): it needs authentication or the repo is "
                "gated - accept its license on the model page, then set HF_TOKEN to a token of that account"
            )
        if resp.status_code == 404:
            raise DownloadError(
                f"{where} was not found (HTTP 404) at {resp.request.url}: check repo, file (the folder) and revision "
                "in the catalog entry"
            )
        if resp.status_code >= 400:
            raise DownloadError(f"listing the files of {where} failed: HTTP {resp.status_code} from {host}")
        try:
            page = resp.json()
        except ValueError:
            raise DownloadError(f"the hub's file list for {where} is not JSON (from {resp.request.url})") from None
        if not isinstance(page, list):
            raise DownloadError(f"the hub's file list for {where} is not a list (from {resp.request.url})")
        files.extend(f for f in (_entry(raw, variant.file or "") for raw in page) if f is not None)
        url = resp.links.get("next", {}).get("url")
        params = None  # the next-page URL carries its own query (the cursor)
    else:
        raise DownloadError(f"the hub's file list for {where} did not end after {MAX_PAGES} pages")
    if not files:
        raise DownloadError(f"the hub lists no files in {where}: check `file` (the folder) in the catalog entry")
    return sorted(files, key=lambda f: f.path)
