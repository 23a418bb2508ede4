"""Incremental detokenization, stop strings and the schema keyword policy."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from toolwire.constraints.schemas import unsupported_keywords
from toolwire.services.extractor.detokenizer import IncrementalDetokenizer
from toolwire.services.extractor.stop_strings import StopStrings

TEXT = 'Grüße aus Zürich ☕ — 東京 🌧️ {"a": "\\u00e9"}\n<tool_call>'


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_incremental_detokenization_equals_full_decode(tokenizer, data):
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(ids) - 1), max_size=len(ids)))))
    detok = IncrementalDetokenizer(tokenizer)
    pieces = [detok.add(ids[a:b]) for a, b in zip([0] + cuts, cuts + [len(ids)])]
    out = "".join(pieces) + detok.flush()
    assert out == tokenizer.decode(ids) == TEXT
    assert all("\ufffd" not in p for p in pieces)


def test_stop_strings_cut_at_the_first_match_across_pieces():
    s = StopStrings(["STOP", "xyz"])
    out = s.feed("hello ST") + s.feed("O") + s.feed("P and more")
    assert out == "hello " and s.hit
    s = StopStrings(["STOP"])
    assert s.feed("no ST") + s.feed("ORY") + s.flush() == "no STORY" and not s.hit


def test_keyword_policy():
    schema = {
        "type": "object",
        "title": "T",
        "properties": {
            "a": {"type": "array", "uniqueItems": True},
            "b": {"anyOf": [{"$ref": "#/$defs/X"}, {"type": "null"}]},
            "c": {"type": "string", "format": "email"},
            "d": {"type": "string", "format": "credit-card"},
        },
        "$defs": {"X": {"type": "object", "patternProperties": {"^x": {}}}},
    }
    found = sorted(unsupported_keywords(schema))
    assert found == [
        ("/$defs/X/patternProperties", "patternProperties"),
        ("/properties/a/uniqueItems", "uniqueItems"),
        ("/properties/d/format", "format: credit-card"),
    ]
