"""What a GGUF file says about itself (architecture, context length, quantization), read with `gguf`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lokal.errors import InvalidRequest

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True, slots=True)
class GgufInfo:
    architecture: str | None
    name: str | None
    context_length: int | None
    quant: str | None  # e.g. "Q4_K_M", from general.file_type
    parameters: int  # sum of tensor elements
    has_chat_template: bool


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return None
    try:
        return field.contents()
    except (IndexError, ValueError, UnicodeDecodeError):
        return None


def _quant_name(file_type: Any) -> str | None:
    import gguf

    if not isinstance(file_type, int):
        return None
    try:
        name = gguf.LlamaFileType(file_type).name
    except ValueError:
        return None
    # LlamaFileType names look like MOSTLY_Q4_K_M or ALL_F32; the quant is what follows the prefix.
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def read_gguf(path: Path) -> GgufInfo:
    """Parse the header (the tensors stay memory-mapped, unread); InvalidRequest when it is no GGUF."""
    if not path.is_file():
        raise InvalidRequest(f"{path} is not a file", param="path")
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise InvalidRequest(
            f"{path} is not a GGUF file (it starts with {magic!r}, not b'GGUF'); lokal runs GGUF models - "
            "convert with llama.cpp's convert_hf_to_gguf.py",
            param="path",
        )
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # the reader raises assorted errors on truncated or damaged files
        raise InvalidRequest(f"{path} is a damaged GGUF file: {exc}", param="path") from exc
    arch = _field(reader, "general.architecture")
    ctx = _field(reader, f"{arch}.context_length") if isinstance(arch, str) else None
    name = _field(reader, "general.name")
    return GgufInfo(
        architecture=arch if isinstance(arch, str) else None,
        name=name if isinstance(name, str) else None,
        context_length=int(ctx) if isinstance(ctx, int) else None,
        quant=_quant_name(_field(reader, "general.file_type")),
        parameters=sum(int(t.n_elements) for t in reader.tensors),
        has_chat_template="tokenizer.chat_template" in reader.fields,
    )
