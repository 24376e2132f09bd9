"""GBNF (llama.cpp's grammar format, which lokal builds for JSON schemas and tool calls) rewritten as the Lark
grammar that ONNX Runtime GenAI's guidance (llguidance) reads, so both engines take the same grammars.

The rewrite is one to one: rules stay rules, string literals stay literals, a character class becomes a
one-character regex, `.` any character, and the operators (| * + ? {m,n} and grouping) mean the same in both.
What Lark cannot say (llama.cpp's token references `<[id]>`) is refused, never approximated.
"""

from __future__ import annotations

import json
import re

from lokal.errors import InvalidRequest

_NAME = re.compile(r"[A-Za-z0-9_-]+")
_SPACE = re.compile(r"(?:\s|#[^\n]*)+")
_REPEAT = re.compile(r"\{\s*(\d+)\s*(?:(,)\s*(\d*)\s*)?\}")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "[": "[", "]": "]", "-": "-", "/": "/"}


class GrammarError(ValueError):
    pass


def gbnf_to_lark(text: str) -> str:
    """The Lark text for a GBNF grammar whose start rule is `root`; InvalidRequest when it cannot be read."""
    try:
        rules = _Reader(text).rules()
    except GrammarError as exc:
        raise InvalidRequest(f"the grammar is not valid GBNF: {exc}", param="grammar") from exc
    if "root" not in rules:
        raise InvalidRequest("the grammar is not valid GBNF: it has no `root` rule", param="grammar")
    names = _lark_names(rules)
    lines = [f"start: {names['root']}"]
    for name, body in rules.items():
        out = []
        for kind, value in body:
            if kind == "ref":
                if value not in names:
                    raise InvalidRequest(
                        f"the grammar is not valid GBNF: rule {value!r} is not defined", param="grammar"
                    )
                out.append(names[value])
            else:
                out.append(value)
        lines.append(f"{names[name]}: {' '.join(out)}")
    return "\n".join(lines) + "\n"


def _lark_names(rules: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
    """Lark rule names are lower case (upper case ones are terminals there) and have no dashes."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for name in rules:
        base = "r_" + re.sub(r"[^a-z0-9_]", "_", name.lower())
        lark, n = base, 1
        while lark in taken:
            n += 1
            lark = f"{base}_{n}"
        taken.add(lark)
        names[name] = lark
    return names


class _Reader:
    """A scanner over GBNF text; each rule body comes out as (kind, Lark text) pieces."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def rules(self) -> dict[str, list[tuple[str, str]]]:
        out: dict[str, list[tuple[str, str]]] = {}
        self._space()
        while self.i < len(self.s):
            name = self._name()
            self._space()
            if not self.s.startswith("::=", self.i):
                raise GrammarError(f"expected ::= after {name!r} at character {self.i}")
            self.i += 3
            body = self._body()
            out[name] = out.get(name, []) + ([("op", "|")] if name in out else []) + body  # a rule defined twice
            self._space()
        if not out:
            raise GrammarError("there are no rules")
        return out

    def _space(self) -> None:
        m = _SPACE.match(self.s, self.i)
        if m:
            self.i = m.end()

    def _name(self) -> str:
        m = _NAME.match(self.s, self.i)
        if not m:
            raise GrammarError(f"expected a rule name at character {self.i}: {self.s[self.i : self.i + 20]!r}")
        self.i = m.end()
        return m.group()

    def _at_rule_start(self) -> bool:
        """A name followed by ::= begins the next rule (GBNF separates rules by nothing but that)."""
        m = _NAME.match(self.s, self.i)
        if not m:
            return False
        rest = _SPACE.match(self.s, m.end())
        j = rest.end() if rest else m.end()
        return self.s.startswith("::=", j)

    def _body(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        depth = 0
        while True:
            self._space()
            if self.i >= len(self.s):
                break
            c = self.s[self.i]
            if depth == 0 and self._at_rule_start():
                break
            if c == '"':
                out.append(("lit", json.dumps(self._literal(), ensure_ascii=False)))
            elif c == "[":
                out.append(("lit", self._char_class()))
            elif c == ".":
                self.i += 1
                out.append(("lit", "/(?s:.)/"))
            elif c == "(":
                depth += 1
                self.i += 1
                out.append(("op", "("))
            elif c == ")":
                depth -= 1
                if depth < 0:
                    raise GrammarError(f"unbalanced ) at character {self.i}")
                self.i += 1
                out.append(("op", ")"))
            elif c in "|*+?":
                self.i += 1
                out.append(("op", c))
            elif c == "{":
                m = _REPEAT.match(self.s, self.i)
                if not m:
                    raise GrammarError(f"malformed repetition at character {self.i}")
                self.i = m.end()
                low, comma, high = m.groups()
                out.append(("op", "{" + low + ("," + high if comma else "") + "}"))
            elif c in "<!":
                raise GrammarError("token references (<[id]>) have no equivalent in ONNX Runtime GenAI's grammars")
            else:
                out.append(("ref", self._name()))
        if depth:
            raise GrammarError("unbalanced (")
        if not out:
            raise GrammarError("a rule has an empty body")
        return out

    def _char(self, closing: str) -> str:
        """One (possibly escaped) character inside a literal or class."""
        if self.i >= len(self.s):
            raise GrammarError(f"unterminated {'literal' if closing == chr(34) else 'character class'}")
        c = self.s[self.i]
        if c != "\\":
            self.i += 1
            return c
        if self.i + 1 >= len(self.s):
            raise GrammarError("a lone backslash ends the grammar")
        e = self.s[self.i + 1]
        width = {"x": 2, "u": 4, "U": 8}.get(e)
        if width:
            digits = self.s[self.i + 2 : self.i + 2 + width]
            if len(digits) != width or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise GrammarError(f"malformed escape \\{e}{digits} at character {self.i}")
            self.i += 2 + width
            return chr(int(digits, 16))
        if e not in _ESCAPES:
            raise GrammarError(f"unknown escape \\{e} at character {self.i}")
        self.i += 2
        return _ESCAPES[e]

    def _literal(self) -> str:
        self.i += 1  # the opening quote
        out: list[str] = []
        while True:
            if self.i < len(self.s) and self.s[self.i] == '"':
                self.i += 1
                return "".join(out)
            out.append(self._char('"'))

    def _char_class(self) -> str:
        self.i += 1  # the opening bracket
        negated = self.i < len(self.s) and self.s[self.i] == "^"
        if negated:
            self.i += 1
        items = []
        while True:
            if self.i < len(self.s) and self.s[self.i] == "]":
                self.i += 1
                break
            low = self._char("]")
            if self.s.startswith("-", self.i) and not self.s.startswith("-]", self.i):
                self.i += 1
                high = self._char("]")
                items.append(_regex_char(low) + "-" + _regex_char(high))
            else:
                items.append(_regex_char(low))
        if not items:
            raise GrammarError("an empty character class")
        return "/[" + ("^" if negated else "") + "".join(items) + "]/"


def _regex_char(c: str) -> str:
    """A character as it may stand in a regex class between slashes: plain when alphanumeric, else by code."""
    return c if c.isascii() and c.isalnum() else f"\\x{{{ord(c):x}}}"
