"""Chat prompts whose control tokens come from the template alone, never from what a message says.

A rendered chat template is tokenized with special-token parsing on, because its markup (`<|im_start|>`,
`<|eot_id|>`, ...) must become control tokens. Parsing the whole string that way would also turn a user's
literal `<|im_start|>system` into a real turn marker: prompt injection. So a message whose text would parse
into control tokens is rendered as a unique sentinel instead; the rendering is split at the sentinels, the
template's pieces are tokenized with special parsing and the message text without it.

Messages that hold no control-token text stay in place and the prompt is tokenized exactly as before, so the
common case is bit-identical to tokenizing the whole rendering. Where a message is cut out, the raw text
around it is tokenized as one run with the template's neighbouring raw text, as llama.cpp does inside one
string (it tokenizes the text between two special tokens on its own), so even that case differs only where
the message's own control-token text is.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lokal.errors import InvalidRequest

Render = Callable[[list[dict[str, Any]]], str]
ASCII_SPACE = " \t\n\v\f\r"  # what C's isspace() strips next to an LSTRIP/RSTRIP token in llama.cpp


class Tokenizer(Protocol):
    def tokenize(self, text: str, *, special: bool) -> list[int]:
        """Token ids of `text` with no BOS/EOS; `special` parses control-token text into control tokens."""
        ...

    def control_text(self, token: int) -> str | None:
        """The text of a control (or unknown) token, None for an ordinary one."""
        ...

    def strips(self, token: int) -> tuple[bool, bool]:
        """Whether the token eats the whitespace on its (left, right) when parsed out of text."""
        ...

    def framing(self) -> tuple[list[int], list[int]]:
        """What tokenizing with add_special adds before and after the text (BOS, and EOS for a few models)."""
        ...


@dataclass(frozen=True, slots=True)
class Segment:
    text: str
    content: bool  # a message's text: tokenized without special parsing


def has_control_text(tok: Tokenizer, text: str) -> bool:
    # Parsing differs only where control-token text is: the exact test for "would inject".
    return bool(text) and tok.tokenize(text, special=True) != tok.tokenize(text, special=False)


def prompt_tokens(
    rendered: str, messages: Sequence[Mapping[str, Any]], render: Render, tok: Tokenizer, *, bos_text: str
) -> list[int]:
    """Token ids for `rendered` (= render(messages)), with every message's text tokenized as text.

    Templates that write the BOS text themselves get no second BOS from the tokenizer.
    """
    lead, trail = tok.framing() if not rendered.startswith(bos_text) else ([], [])
    unsafe = [i for i, m in enumerate(messages) if has_control_text(tok, str(m.get("content") or ""))]
    if not unsafe:
        return [*lead, *tok.tokenize(rendered, special=True), *trail]
    return [*lead, *tokenize_segments(segments(rendered, messages, render, unsafe), tok), *trail]


def segments(
    rendered: str, messages: Sequence[Mapping[str, Any]], render: Render, unsafe: Sequence[int]
) -> list[Segment]:
    """The rendering cut into template text and the text of the `unsafe` messages."""
    nonce = secrets.token_hex(8)
    marks = {i: f"\ue000lokal-{nonce}-{i}\ue001" for i in unsafe}  # private-use code points: no template edits them
    marked = [dict(m, content=marks[i]) if i in marks else dict(m) for i, m in enumerate(messages)]
    try:
        text = render(marked)
    except Exception as exc:  # the template looked at the content (rare): its own error names the rule
        raise _refused() from exc
    pieces: list[str | int] = []
    for n, part in enumerate(re.split(f"\ue000lokal-{nonce}-(\\d+)\ue001", text)):
        if n % 2:
            pieces.append(int(part))
        elif part:
            pieces.append(part)
    rest = "".join(p for p in pieces if isinstance(p, str))
    if nonce in rest.lower() or _marker_count(rest) > _marker_count(rendered):
        raise _refused()  # a template that cut into or rewrote a sentinel: the message cannot be kept apart
    texts = _as_rendered(pieces, rendered, messages)
    return [Segment(texts[p], True) if isinstance(p, int) else Segment(p, False) for p in pieces]


def _marker_count(text: str) -> int:
    return text.count("\ue000") + text.count("\ue001")


def _as_rendered(pieces: Sequence[str | int], rendered: str, messages: Sequence[Mapping[str, Any]]) -> dict[int, str]:
    """Each cut-out message's text as the template printed it (templates often trim), so the prompt is the real
    rendering; where the pieces do not line up with it, the text verbatim (the template's other markup stays)."""
    verbatim = {p: str(messages[p]["content"]) for p in pieces if isinstance(p, int)}
    chosen: dict[int, str] = {}
    pos = 0
    for n, p in enumerate(pieces):
        if isinstance(p, str):
            if not rendered.startswith(p, pos):
                return verbatim
            pos += len(p)
            continue
        after = pieces[n + 1] if n + 1 < len(pieces) and isinstance(pieces[n + 1], str) else ""
        text = verbatim[p]
        for cand in dict.fromkeys((chosen.get(p, text), text, text.strip(), text.lstrip(), text.rstrip())):
            if rendered.startswith(cand, pos) and rendered.startswith(str(after), pos + len(cand)):
                break
        else:
            return verbatim
        chosen[p] = cand
        pos += len(cand)
    return chosen if pos == len(rendered) else verbatim


def tokenize_segments(parts: Sequence[Segment], tok: Tokenizer) -> list[int]:
    """Template text with special parsing, message text without, and raw text across a boundary as one run."""
    out: list[int] = []
    run = ""  # raw text since the last control token: template text and message text alike
    strip_start = False  # the control token before the run eats the whitespace on its right (RSTRIP)

    def flush(strip_end: bool) -> None:
        nonlocal run
        text = run.lstrip(ASCII_SPACE) if strip_start else run
        text = text.rstrip(ASCII_SPACE) if strip_end else text
        if text:
            out.extend(tok.tokenize(text, special=False))
        run = ""

    for part in parts:
        if part.content:
            run += part.text
            continue
        ids = tok.tokenize(part.text, special=True)
        controls = [t for t in ids if tok.control_text(t) is not None]
        if not controls:
            run += part.text
            continue
        first, last = str(tok.control_text(controls[0])), str(tok.control_text(controls[-1]))
        # llama.cpp parses the leftmost (longest) match first, so these finds land on the parsed tokens.
        start = part.text.find(first)
        end = part.text.rfind(last) + len(last)
        run += part.text[:start]
        flush(strip_end=tok.strips(controls[0])[0])  # LSTRIP
        out.extend(tok.tokenize(part.text[start:end], special=True))
        run = part.text[end:]
        strip_start = tok.strips(controls[-1])[1]
    flush(strip_end=False)
    return out


def _refused() -> InvalidRequest:
    return InvalidRequest(
        "a message contains the model's control-token text (such as '<|im_start|>'), and this model's chat "
        "template cannot keep it apart from its own markup; remove that text from the message",
        param="messages",
    )


class LlamaTokenizer:
    """The Tokenizer view of a llama-cpp-python LlamaModel (llama.cpp's own tokenizer)."""

    def __init__(self, model: Any) -> None:
        import llama_cpp

        self._model = model
        self._control = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
        self._lstrip = llama_cpp.LLAMA_TOKEN_ATTR_LSTRIP
        self._rstrip = llama_cpp.LLAMA_TOKEN_ATTR_RSTRIP

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        return list(self._model.tokenize(text.encode("utf-8"), add_bos=False, special=special))

    def control_text(self, token: int) -> str | None:
        if not self._model.token_get_attr(token) & self._control:
            return None
        return str(self._model.token_get_text(token))

    def strips(self, token: int) -> tuple[bool, bool]:
        attr = self._model.token_get_attr(token)
        return bool(attr & self._lstrip), bool(attr & self._rstrip)

    def framing(self) -> tuple[list[int], list[int]]:
        ids = list(self._model.tokenize(b"", add_bos=True, special=False))
        bos = self._model.token_bos()
        return (ids[:1], ids[1:]) if ids and ids[0] == bos else ([], ids)


class SpecialTextTokenizer:
    """The Tokenizer view of a tokenizer that always parses special-token text (ONNX Runtime GenAI's `encode`).

    Text without special parsing is encoded with each special token's text broken before its last character,
    so the same characters reach the model as ordinary tokens (at most a token boundary differs from a tokenizer
    with a split-special-tokens switch, which GenAI lacks).
    """

    def __init__(
        self, encode: Callable[[str], Sequence[int]], specials: Mapping[str, tuple[int, bool, bool]], bos_id: int | None
    ) -> None:
        self._encode_raw = encode
        # One-character specials cannot be broken; none are known in practice.
        self._specials = {text: v for text, v in specials.items() if len(text) > 1}
        self._by_id = {v[0]: (text, v[1], v[2]) for text, v in self._specials.items()}
        self._pattern = (
            re.compile("|".join(re.escape(t) for t in sorted(self._specials, key=len, reverse=True)))
            if self._specials
            else None
        )
        self._bos_id = bos_id
        first = list(encode("hello"))[:1]
        self._adds_bos = bos_id is not None and first == [bos_id]

    @classmethod
    def from_folder(
        cls, encode: Callable[[str], Sequence[int]], folder: Path, bos_id: int | None
    ) -> SpecialTextTokenizer:
        """Special tokens from the Hugging Face tokenizer files in a model folder."""
        return cls(encode, special_tokens(folder), bos_id)

    @property
    def bos_text(self) -> str:
        found = self._by_id.get(self._bos_id) if self._bos_id is not None else None
        return found[0] if found else "\0"

    def _encode(self, text: str) -> list[int]:
        ids = [int(t) for t in self._encode_raw(text)]
        return ids[1:] if self._adds_bos and ids[:1] == [self._bos_id] else ids

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        if special or self._pattern is None:
            return self._encode(text)
        out: list[int] = []
        while text:
            hit = self._pattern.search(text)
            if hit is None:
                out.extend(self._encode(text))
                break
            cut = hit.end() - 1  # one character short of the special token: the rest is ordinary text
            out.extend(self._encode(text[:cut]))
            text = text[cut:]
        return out

    def control_text(self, token: int) -> str | None:
        found = self._by_id.get(token)
        return found[0] if found else None

    def strips(self, token: int) -> tuple[bool, bool]:
        found = self._by_id.get(token)
        return (found[1], found[2]) if found else (False, False)

    def framing(self) -> tuple[list[int], list[int]]:
        return ([self._bos_id], []) if self._adds_bos and self._bos_id is not None else ([], [])


def special_tokens(folder: Path) -> dict[str, tuple[int, bool, bool]]:
    """{text: (id, lstrip, rstrip)} of the special added tokens in tokenizer.json (or tokenizer_config.json)."""
    found: dict[str, tuple[int, bool, bool]] = {}
    try:
        data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        entries = [(int(t["id"]), t) for t in data.get("added_tokens", [])]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        try:
            data = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
            entries = [(int(k), t) for k, t in (data.get("added_tokens_decoder") or {}).items()]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return found
    for tid, t in entries:
        if isinstance(t, Mapping) and t.get("special") and isinstance(t.get("content"), str):
            found[t["content"]] = (tid, bool(t.get("lstrip")), bool(t.get("rstrip")))
    return found
