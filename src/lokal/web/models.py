"""Web models: the catalog's `webgpu` variants (and the MiniLM embedder), served read-only to the page.

The page's transformers.js fetches `<localModelPath><id>/<file>`; lokal answers from the variant's folder
in its cache and nowhere else. A folder must lie inside the models directory and a file inside its folder
(after resolving links), and only regular files are served, with Range support (FileResponse).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lokal.catalog.spec import ModelSpec, Variant
from lokal.config import Settings
from lokal.errors import LokalError, ModelNotFound

WEB_DEVICE = "webgpu"
WEB_ROOT = "web"  # under models_dir: MiniLM's web copy and downloaded web builds
# transformers.js names a graph onnx/model[_<dtype>].onnx; the page asks for one of the dtypes listed here.
_DTYPE_OF = {
    "model.onnx": "fp32",
    "model_fp16.onnx": "fp16",
    "model_quantized.onnx": "q8",
    "model_int8.onnx": "int8",
    "model_uint8.onnx": "uint8",
    "model_q4.onnx": "q4",
    "model_q4f16.onnx": "q4f16",
    "model_bnb4.onnx": "bnb4",
}
CONTENT_TYPES = {".json": "application/json", ".onnx": "application/octet-stream", ".txt": "text/plain"}
REQUIRED = ("config.json", "tokenizer.json", "tokenizer_config.json")


class WebFileMissing(LokalError):
    status_code = 404
    error_type = "not_found_error"
    code = "web_file_missing"


class NoWebVariant(LokalError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "no_web_variant"


@dataclass(frozen=True)
class WebModel:
    id: str  # the alias: what the page passes to from_pretrained
    task: str  # "chat-completion" or "embeddings"
    folder: Path
    variant: str
    synthetic: bool
    description: str
    source: Variant | None = None  # the catalog variant (None for MiniLM's local export)

    @property
    def downloadable(self) -> bool:
        return self.source is not None and bool(self.source.repo and self.source.file) and not self.source.path

    def missing(self) -> list[str]:
        need = [*REQUIRED, "generation_config.json"] if self.task == "chat-completion" else list(REQUIRED)
        gone = [name for name in need if not (self.folder / name).is_file()]
        if not self.dtypes():
            gone.append("onnx/model*.onnx")
        return gone

    def dtypes(self) -> list[str]:
        # A downloaded variant keeps its graph beside the JSON files (lokal.web.pull); brought ones in onnx/.
        return [dtype for name, dtype in _DTYPE_OF.items() if self.graph(name) is not None]

    def graph(self, name: str) -> Path | None:
        for path in (self.folder / "onnx" / name, self.folder / name):
            if path.is_file():
                return path
        return None

    def card(self) -> dict[str, Any]:
        missing = self.missing()
        external = False
        config = self.folder / "config.json"
        if config.is_file():
            try:
                external = bool(json.loads(config.read_text()).get("transformers.js_config", {}).get(
                    "use_external_data_format"))  # fmt: skip
            except (OSError, ValueError, AttributeError):
                missing.append("config.json (unreadable)")
        size = sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file()) if self.folder.is_dir() else 0
        return {"id": self.id, "task": self.task, "variant": self.variant, "synthetic": self.synthetic,
                "description": self.description, "dtypes": self.dtypes(), "external_data": external,
                "bytes": size, "ready": not missing, "missing": missing,
                "downloadable": self.downloadable}  # fmt: skip


def web_folder(settings: Settings, variant: Variant) -> Path:
    """Where a web variant's files are: its own folder (synth, brought) or lokal's download location."""
    from lokal.web.pull import web_download_folder

    if variant.path:
        return Path(variant.path).expanduser()
    return web_download_folder(settings, variant)


def web_variant(spec: ModelSpec) -> Variant | None:
    return next((v for v in spec.variants if v.device == WEB_DEVICE), None)


def minilm_folder(settings: Settings) -> Path:
    return settings.models_dir / WEB_ROOT / "all-minilm-l6-v2"


class WebModels:
    """Resolves page model ids to folders; writes MiniLM's web copy (an ONNX export) the first time."""

    def __init__(self, settings: Settings, specs: Any) -> None:
        self.settings = settings
        self._specs = specs  # () -> list[ModelSpec], read per request: the catalog can change under a server
        self._export_lock = threading.Lock()

    def listing(self) -> list[WebModel]:
        out = []
        for spec in self._specs():
            variant = web_variant(spec)
            if variant is not None:
                out.append(self._model(spec, variant))
        return [*out, self.minilm()]

    def _model(self, spec: ModelSpec, variant: Variant) -> WebModel:
        return WebModel(spec.alias, spec.task, web_folder(self.settings, variant), variant.id, spec.synthetic,
                        spec.description, variant)  # fmt: skip

    def minilm(self) -> WebModel:
        from lokal.embeddings.minilm import MINILM_ALIAS

        return WebModel(MINILM_ALIAS, "embeddings", minilm_folder(self.settings), f"{MINILM_ALIAS}-web",
                        False, "all-MiniLM-L6-v2 (the real weights) for retrieval in the page")  # fmt: skip

    def get(self, model_id: str) -> WebModel:
        from lokal.embeddings.minilm import MINILM_ALIAS

        if model_id == MINILM_ALIAS:
            return self.minilm()
        specs = {s.alias: s for s in self._specs()}
        spec = specs.get(model_id)
        if spec is None:
            raise ModelNotFound(f"model {model_id!r} is not in the catalog", param="model")
        variant = web_variant(spec)
        if variant is None:
            others = ", ".join(m.id for m in self.listing() if m.task == "chat-completion") or "none yet"
            raise NoWebVariant(
                f"model {model_id!r} has no browser (webgpu) variant, so it cannot run in this page; run it on "
                f"the server instead, or pick a web model ({others}); `lokal model synth --like tiny --format "
                "web` writes one",
                param="model",
            )
        return self._model(spec, variant)

    def ensure_minilm(self) -> Path:
        """MiniLM in transformers.js's layout, exported once from the packaged weights (a few seconds)."""
        folder = minilm_folder(self.settings)
        if (folder / "onnx" / "model.onnx").is_file():
            return folder
        with self._export_lock:
            if (folder / "onnx" / "model.onnx").is_file():
                return folder
            from lokal.embeddings.minilm import minilm_path
            from lokal.embeddings.onnx import export_minilm

            source = minilm_path()
            work = folder.with_name(folder.name + ".part")
            shutil.rmtree(work, ignore_errors=True)
            (work / "onnx").mkdir(parents=True)
            for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                         "vocab.txt"):  # fmt: skip
                if (source / name).is_file():
                    shutil.copy2(source / name, work / name)
            export_minilm(source, work / "onnx" / "model.onnx")
            if folder.exists():
                shutil.rmtree(folder)
            work.rename(folder)
        return folder

    async def pull(self, model_id: str) -> WebModel:
        """Downloads a catalog web variant's files into the cache (lokal's downloader, file by file)."""
        from lokal.web.pull import pull_web

        model = self.get(model_id)
        if not model.downloadable or model.source is None:
            raise NoWebVariant(f"web model {model_id!r} has no repo + file to download", param="model")
        await asyncio.to_thread(pull_web, model.source, self.settings)
        return model

    async def file(self, model_id: str, relative: str) -> Path:
        """The file the page asked for, checked to lie inside the model's folder inside the cache."""
        model = self.get(model_id)
        if model.id == self.minilm().id:
            await asyncio.to_thread(self.ensure_minilm)
        root = self.settings.models_dir.resolve()
        folder = model.folder.resolve()
        if not folder.is_relative_to(root):
            raise WebFileMissing(f"web model {model_id!r} lies outside lokal's models folder; it is not served")
        parts = [p for p in relative.replace("\\", "/").split("/") if p not in ("", ".")]
        if not parts or any(p == ".." or p.startswith(".") for p in parts):
            raise WebFileMissing(f"{relative!r} is not a file of web model {model_id!r}")
        path = folder.joinpath(*parts).resolve()
        if len(parts) == 2 and parts[0] == "onnx" and not path.is_file():
            path = folder.joinpath(parts[1]).resolve()  # a downloaded graph sits beside the JSON files
        if not path.is_relative_to(folder) or not path.is_file():
            raise WebFileMissing(
                f"web model {model_id!r} has no file {'/'.join(parts)!r} in the cache ({model.folder}); "
                f"re-create or re-download it (missing: {', '.join(model.missing()) or 'only this file'})"
            )
        return path


def content_type(path: Path) -> str:
    if path.name.endswith("_data"):
        return "application/octet-stream"
    return CONTENT_TYPES.get(path.suffix, "application/octet-stream")
