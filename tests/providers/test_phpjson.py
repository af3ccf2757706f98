"""PHP json_encode emulation: the MonetaPay vectors' J strings, PHP's escapes, JSON round trips."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers import phpjson
from sandbox.wire import monetapay as wire
from tests.providers import vectors

SIGNED_CASES = [c for c in vectors.load("monetapay")["callbacks"] if "j" in c["expect"]]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@pytest.mark.parametrize("case", SIGNED_CASES, ids=[c["name"] for c in SIGNED_CASES])
def test_vector_j(case: dict[str, Any]) -> None:
    """The key-sorted encoding of each vector's unsigned fields equals the vector's `j` exactly."""
    fields = {k: v for k, v in case["expect"]["fields"].items() if k not in ("sign", "timestamp")}
    assert phpjson.encode(fields) == case["expect"]["j"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a/b", '"a\\/b"'),
        ("é", '"\\u00e9"'),
        ("😀", '"\\ud83d\\ude00"'),
        ('"\\', '"\\"\\\\"'),
        ("\n\t\b\f\r", '"\\n\\t\\b\\f\\r"'),
        ("\x01\x1f", '"\\u0001\\u001f"'),
        ("\x7f", '"\x7f"'),
        (True, "true"),
        (None, "null"),
        (10**15, "1000000000000000"),
        ([1, "x"], '[1,"x"]'),
    ],
)
def test_escapes_like_php(value: Any, expected: str) -> None:
    """Each scalar and escape comes out as PHP's json_encode writes it with default flags."""
    assert phpjson.encode(value) == expected


def test_only_top_level_keys_are_sorted() -> None:
    """`ksort` sorts the top level; nested objects keep their order, and sorting can be off."""
    value = {"b": {"z": 1, "a": 2}, "a": 0}
    assert phpjson.encode(value) == '{"a":0,"b":{"z":1,"a":2}}'
    assert phpjson.encode(value, sort_keys=False) == '{"b":{"z":1,"a":2},"a":0}'


@pytest.mark.parametrize("value", [1.5, {1: "x"}, b"bytes", object()])
def test_refuses_what_it_cannot_encode_faithfully(value: Any) -> None:
    """Floats, non-string keys and foreign types raise ValueError rather than guess PHP's output."""
    with pytest.raises(ValueError, match=r"\w"):
        phpjson.encode(value)


def test_refuses_nesting_deeper_than_php() -> None:
    """Nesting past PHP's depth limit raises ValueError instead of overflowing the stack."""
    value: Any = "leaf"
    for _ in range(phpjson.MAX_DEPTH + 2):
        value = {"k": value}
    with pytest.raises(ValueError, match="deeper"):
        phpjson.encode(value)


@settings(max_examples=300, deadline=None, database=None)
@given(json_values)
def test_decodes_back_to_the_same_value(value: Any) -> None:
    """Whatever it writes, json.loads reads back as the same value, in ASCII only."""
    text = phpjson.encode(value, sort_keys=False)
    assert text.isascii()
    assert json.loads(text) == value


@settings(max_examples=300, deadline=None, database=None)
@given(st.dictionaries(st.text(), json_values, max_size=6))
def test_agrees_with_the_sandbox_encoder(value: dict[str, Any]) -> None:
    """The hand-written encoder and the sandbox's json.dumps-based one write identical bytes."""
    assert phpjson.encode(value) == wire.php_json(value, sort_keys=True)
