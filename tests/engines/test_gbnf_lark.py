"""GBNF to the Lark that ONNX Runtime GenAI's guidance reads (pure text; the onnx engine tests run the result)."""

from __future__ import annotations

import pytest

from lokal.engines.gbnf_lark import gbnf_to_lark
from lokal.errors import InvalidRequest


def test_rules_literals_and_operators_map_one_to_one() -> None:
    gbnf = """
    # a comment
    root   ::= greeting ( "," ws name )? "!"{1,3}
    greeting ::= "hi" | "hello"
    name ::= [A-Z] [a-z]*   # trailing comment
    ws ::= [ \\t\\n]+
    """
    assert gbnf_to_lark(gbnf) == (
        "start: r_root\n"
        'r_root: r_greeting ( "," r_ws r_name ) ? "!" {1,3}\n'
        'r_greeting: "hi" | "hello"\n'
        "r_name: /[A-Z]/ /[a-z]/ *\n"
        "r_ws: /[\\x{20}\\x{9}\\x{a}]/ +\n"
    )


def test_names_with_dashes_and_capitals_become_distinct_lark_rule_names() -> None:
    lark = gbnf_to_lark('root ::= item-1 Item_1\nitem-1 ::= "a"\nItem_1 ::= "b"')
    assert lark == 'start: r_root\nr_root: r_item_1 r_item_1_2\nr_item_1: "a"\nr_item_1_2: "b"\n'


def test_escapes_in_literals_and_classes() -> None:
    lark = gbnf_to_lark('root ::= "say \\"hi\\"\\n" [^"\\\\\\x00-\\x1F] "\\u00e9" .')
    assert lark.splitlines()[1] == 'r_root: "say \\"hi\\"\\n" /[^\\x{22}\\x{5c}\\x{0}-\\x{1f}]/ "é" /(?s:.)/'


def test_rules_continue_over_lines_inside_parentheses() -> None:
    lark = gbnf_to_lark('root ::= (\n  "a"\n  | "b"\n)\nnext ::= "c"')
    assert lark.splitlines()[1:] == ['r_root: ( "a" | "b" )', 'r_next: "c"']


@pytest.mark.parametrize(
    ("gbnf", "reason"),
    [
        ('start ::= "a"', "no `root` rule"),
        ("root ::= missing", "'missing' is not defined"),
        ('root ::= "open', "unterminated literal"),
        ("root ::= [a-z", "unterminated character class"),
        ('root ::= ("a"', "unbalanced"),
        ('root ::= "a" {2,x}', "malformed repetition"),
        ('root ::= "\\q"', "unknown escape"),
        ("root ::= <[42]>", "token references"),
        ("garbage", "expected ::="),
    ],
)
def test_what_is_not_gbnf_or_has_no_lark_form_is_a_400(gbnf: str, reason: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        gbnf_to_lark(gbnf)
    assert err.value.param == "grammar"
    assert reason in str(err.value)
