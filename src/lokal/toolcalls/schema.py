"""JSON schemas to GBNF through llama.cpp's converter, refusing what the converter cannot express.

llama-cpp-python's SchemaConverter (a port of llama.cpp's json_schema_to_grammar) handles types, properties,
required, additionalProperties, enum/const, anyOf/oneOf, local $ref, items/prefixItems with minItems/maxItems,
minLength/maxLength, anchored patterns and the date/time/uuid formats. Everything else it skips without a word,
so a grammar built from such a schema would let through output the schema rejects. Those keywords are refused
here, by name and place. Some shapes it misreads are first rewritten into ones it reads right: a type list
becomes anyOf, keywords beside anyOf/oneOf move into each alternative, allOf is merged into one schema, an
unanchored pattern is anchored (a stricter pattern: what it matches still validates), `true` becomes `{}`.

Tools that are not `strict` are checked leniently: keywords that only narrow values (minimum, uniqueItems, an
unknown format, ...) are left to the model, which sees them in the prompt, as OpenAI treats non-strict tools.
Keywords whose absence would change the JSON's shape (not, if/then/else, contains, ...) are refused either way.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from lokal.errors import InvalidRequest
from lokal.toolcalls.gbnf import compile_error, parse_rules

STRUCTURAL = (
    "not", "if", "then", "else", "dependentSchemas", "dependentRequired", "dependencies", "contains",
    "minContains", "maxContains", "unevaluatedProperties", "unevaluatedItems", "additionalItems", "$dynamicRef",
    "$recursiveRef",
)  # fmt: skip
NARROWING = (
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minProperties", "maxProperties",
    "uniqueItems", "patternProperties", "propertyNames",
)  # fmt: skip
ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly",
     "writeOnly", "$defs", "definitions", "nullable", "$anchor", "strict"}
)  # fmt: skip
FORMATS = frozenset({"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"})
TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
# Regular-expression syntax the converter translates wrongly or not at all.
# Any JSON value, spelled so the converter reads it so (it reads a bare {} as "an object").
ANY: dict[str, Any] = {"anyOf": [{"type": t} for t in ("string", "number", "boolean", "null", "object", "array")]}
BAD_PATTERN = re.compile(r"\(\?|\\[dDwWsSbBpPkK1-9]|(?<!^)\^|\$(?!$)")


class _Checker:
    def __init__(self, root: Mapping[str, Any], *, strict: bool) -> None:
        self.root = root
        self.strict = strict
        self.problems: list[str] = []
        self._seen_refs: set[str] = set()

    def problem(self, where: str, what: str) -> None:
        self.problems.append(f"{what} at {where or '/'}")

    def check(self, node: Any, where: str) -> Any:
        """A normalised copy of `node` the converter reads as JSON Schema means it."""
        if node is True:
            return {}
        if node is False:
            self.problem(where, "a `false` schema (nothing is valid)")
            return {}
        if not isinstance(node, Mapping):
            self.problem(where, f"a schema must be an object, not {type(node).__name__}")
            return {}
        node = dict(node)
        if not set(node) - ANNOTATIONS:
            return {**copy.deepcopy(ANY), **_annotations(node)}
        for key in STRUCTURAL:
            if key in node:
                self.problem(where, f"'{key}'")
        for key in NARROWING:
            if key in node:
                if self.strict:
                    self.problem(where, f"'{key}'")
                del node[key]
        if isinstance(node.get("type"), list):
            return self._type_list(node, where)
        if "allOf" in node:
            return self.check(self._merge_all_of(node, where), where)
        for key in ("anyOf", "oneOf"):
            if key in node:
                return self._alternatives(node, key, where)
        if "$ref" in node:
            return self._ref(node, where)
        return self._plain(node, where)

    def _type_list(self, node: dict[str, Any], where: str) -> Any:
        types = node.pop("type")
        if not types:
            self.problem(where, "an empty 'type' list")
            return {}
        return self.check({"anyOf": [{**node, "type": t} for t in types], **_annotations(node)}, where)

    def _alternatives(self, node: dict[str, Any], key: str, where: str) -> Any:
        alts = node[key]
        if not isinstance(alts, list) or not alts:
            self.problem(where, f"'{key}' must be a non-empty array of schemas")
            return {}
        shared = {k: v for k, v in node.items() if k != key and k not in ANNOTATIONS}
        merged = []
        for i, alt in enumerate(alts):
            alt = {} if alt is True else alt
            if shared and isinstance(alt, Mapping):
                clash = sorted(set(shared) & set(alt))
                if clash:
                    self.problem(f"{where}/{key}/{i}", f"'{clash[0]}' both beside and inside '{key}'")
                alt = {**shared, **alt}
            merged.append(self.check(alt, f"{where}/{key}/{i}"))
        out = {key: merged, **_annotations(node)}
        for defs in ("$defs", "definitions"):
            if defs in node:
                out[defs] = node[defs]
        return out

    def _ref(self, node: dict[str, Any], where: str) -> Any:
        ref = node["$ref"]
        extra = sorted(k for k in node if k != "$ref" and k not in ANNOTATIONS)
        if extra:
            self.problem(where, f"'{extra[0]}' beside '$ref'")
        if not isinstance(ref, str) or not ref.startswith("#/"):
            self.problem(where, f"'$ref' {ref!r} (only references inside the schema, '#/...', are supported)")
            return {}
        target = _resolve(self.root, ref)
        if target is None:
            self.problem(where, f"'$ref' {ref!r}, which points at nothing")
            return {}
        if ref not in self._seen_refs:  # a recursive schema is checked once; the converter handles recursion
            self._seen_refs.add(ref)
            checked = self.check(target, ref[1:])
            if checked != target:
                _replace(self.root, ref, checked)
        return {"$ref": ref, **_annotations(node)}

    def _plain(self, node: dict[str, Any], where: str) -> Any:
        kind = node.get("type")
        if kind is not None and kind not in TYPES:
            self.problem(where, f"unknown type {kind!r}")
        if "enum" in node and (not isinstance(node["enum"], list) or not node["enum"]):
            self.problem(where, "'enum' must be a non-empty array")
        fmt = node.get("format")
        if fmt is not None and fmt not in FORMATS:
            if self.strict:
                self.problem(where, f"format {fmt!r} (supported: {', '.join(sorted(FORMATS))})")
            del node["format"]
        if ("minLength" in node or "maxLength" in node) and kind != "string" and "enum" not in node:
            self.problem(where, "'minLength'/'maxLength' without \"type\": \"string\"")
        if "pattern" in node:
            node["pattern"] = self._pattern(node["pattern"], where)
        if "properties" in node:
            node["properties"] = self._properties(node, where)
        elif "required" in node and node["required"] and "enum" not in node and "const" not in node:
            self.problem(where, "'required' without 'properties'")
        extra = node.get("additionalProperties")
        if isinstance(extra, Mapping):
            node["additionalProperties"] = self.check(extra, f"{where}/additionalProperties")
        if kind == "array" or "items" in node or "prefixItems" in node:
            self._items(node, where)
        return node

    def _properties(self, node: dict[str, Any], where: str) -> dict[str, Any]:
        props = node["properties"]
        if not isinstance(props, Mapping):
            self.problem(where, "'properties' must be an object")
            return {}
        out = {}
        for name, sub in props.items():
            if sub is False:  # a property that must not appear: the grammar simply never writes it
                if name in (node.get("required") or []):
                    self.problem(f"{where}/properties/{name}", "a required property whose schema is `false`")
                continue
            out[name] = self.check(sub, f"{where}/properties/{name}")
        required = node.get("required") or []
        if not isinstance(required, list):
            self.problem(where, "'required' must be an array")
            return out
        missing = [r for r in required if r not in out]
        if missing:
            self.problem(where, f"'required' names {missing[0]!r}, which is not in 'properties'")
        return out

    def _items(self, node: dict[str, Any], where: str) -> None:
        items = node.get("items")
        if items is False:
            self.problem(where, "'items': false")
        elif isinstance(items, list):
            node["items"] = [self.check(s, f"{where}/items/{i}") for i, s in enumerate(items)]
        elif items is not None:
            node["items"] = self.check(items, f"{where}/items")
        if "prefixItems" in node:
            if isinstance(node["prefixItems"], list):
                node["prefixItems"] = [
                    self.check(s, f"{where}/prefixItems/{i}") for i, s in enumerate(node["prefixItems"])
                ]
            if items is not None and items is not False:
                self.problem(where, "'items' beside 'prefixItems'")
        elif items is None and ("minItems" in node or "maxItems" in node):
            node["items"] = copy.deepcopy(ANY)  # the converter reads minItems/maxItems only beside items
        if isinstance(node.get("items"), list) or "prefixItems" in node:
            for key in ("minItems", "maxItems"):
                if key in node:
                    self.problem(where, f"'{key}' on a tuple (items as an array)")

    def _pattern(self, pattern: Any, where: str) -> Any:
        if not isinstance(pattern, str):
            self.problem(where, "'pattern' must be a string")
            return pattern
        core = pattern.removeprefix("^").removesuffix("$") if len(pattern) > 1 else pattern
        if BAD_PATTERN.search(core) or re.search(r"[*+?}]\?", core):
            self.problem(
                where,
                f"pattern {pattern!r} (lookarounds, (?...) groups, \\d \\w \\s \\b classes, "
                "backreferences, lazy quantifiers and inner anchors are not supported; "
                "write classes out, e.g. [0-9])",
            )
        try:
            re.compile(core)
        except re.error as exc:
            self.problem(where, f"pattern {pattern!r} does not compile ({exc})")
        return f"^({core})$" if pattern != f"^{core}$" or "|" in core else pattern

    def _merge_all_of(self, node: dict[str, Any], where: str) -> dict[str, Any]:
        parts = node.pop("allOf")
        if not isinstance(parts, list) or not parts:
            self.problem(where, "'allOf' must be a non-empty array of schemas")
            return node
        merged: dict[str, Any] = {}
        for i, part in enumerate([node, *parts]):
            if isinstance(part, Mapping) and "$ref" in part and len(set(part) - ANNOTATIONS) == 1:
                part = _resolve(self.root, part["$ref"]) if isinstance(part["$ref"], str) else None
            if part is True:
                continue
            if not isinstance(part, Mapping):
                self.problem(f"{where}/allOf/{i - 1}", "an 'allOf' part that cannot be merged")
                continue
            for key, value in part.items():
                if key == "properties" and isinstance(value, Mapping):
                    props = merged.setdefault("properties", {})
                    for name, sub in value.items():
                        if name in props and props[name] != sub:
                            self.problem(where, f"'allOf' parts that define property {name!r} differently")
                        props[name] = sub
                elif key == "required" and isinstance(value, list):
                    merged["required"] = list(dict.fromkeys([*merged.get("required", []), *value]))
                elif key in merged and merged[key] != value and key not in ANNOTATIONS:
                    self.problem(where, f"'allOf' parts that disagree on '{key}'")
                else:
                    merged.setdefault(key, value)
        return merged


def _annotations(node: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in node.items() if k in ("title", "description")}


def _pointer(ref: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in ref[2:].split("/")]


def _resolve(root: Any, ref: str) -> Any:
    node = root
    for part in _pointer(ref):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _replace(root: Any, ref: str, value: Any) -> None:
    *parents, last = _pointer(ref)
    node = root
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def checked_schema(schema: Any, *, param: str, strict: bool = True, what: str = "the JSON schema") -> Any:
    """A copy of `schema` the converter reads faithfully; InvalidRequest(param) listing what it cannot."""
    root = copy.deepcopy(schema)
    checker = _Checker(root, strict=strict)
    out = checker.check(root, "")
    if isinstance(out, dict) and isinstance(root, Mapping):  # keep the (checked) definitions refs point into
        for defs in ("$defs", "definitions"):
            if defs in root and defs not in out:
                out[defs] = root[defs]
    if checker.problems:
        listed = "; ".join(dict.fromkeys(checker.problems))
        raise InvalidRequest(f"{what} uses features lokal cannot enforce while generating: {listed}", param=param)
    return out


def schema_rules(schema: Any, *, param: str, strict: bool = True, what: str = "the JSON schema") -> dict[str, str]:
    """GBNF rules ({name: body}, the value's rule is "root") for a JSON schema, after checked_schema."""
    try:
        from llama_cpp.llama_grammar import SchemaConverter
    except ImportError:
        raise InvalidRequest("grammar-constrained output needs llama-cpp-python", param=param) from None
    normalised = checked_schema(schema, param=param, strict=strict, what=what)
    if isinstance(normalised, dict) and "$ref" in normalised:
        # the converter's resolve_refs does not look inside a node that has a $ref: the root's definitions
        # would go unresolved, so the root's own $ref moves into a one-way union
        normalised = {"anyOf": [{"$ref": normalised.pop("$ref")}], **normalised}
    converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    try:
        resolved = converter.resolve_refs(normalised, "input")
        converter.visit(resolved, "")
        text = converter.format_grammar()
    except (AssertionError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise InvalidRequest(f"{what} cannot be turned into a grammar: {exc}", param=param) from None
    return parse_rules(text)


def json_schema_grammar(schema: Mapping[str, Any]) -> str:
    """GBNF for response_format json_schema (llama.cpp's converter), after checking the schema: unsupported
    features raise InvalidRequest naming them (param="response_format")."""
    from lokal.toolcalls.gbnf import format_rules

    grammar = format_rules(schema_rules(schema, param="response_format", what="response_format's json_schema"))
    error = compile_error(grammar)
    if error:
        raise InvalidRequest(f"response_format's json_schema: {error}", param="response_format")
    return grammar
