"""The strict-mode claims, checked against the JSON Schema Test Suite and the Glaive tool
schemas (../shared/conformance, or TOOLWIRE_CONFORMANCE_DATA): for every keyword toolwire lets a
strict tool use, no invalid instance gets through the compiled constraint."""

from __future__ import annotations

import os
import pathlib

import pytest

from bench.conformance import run

DATA = pathlib.Path(
    os.environ.get(
        "TOOLWIRE_CONFORMANCE_DATA",
        pathlib.Path(__file__).resolve().parents[3] / "shared" / "conformance",
    )
)


@pytest.fixture(scope="module")
def results():
    if not (DATA / "json-schema-test-suite").is_dir():
        pytest.skip(f"conformance data not found at {DATA}")
    return run(DATA)


def test_claimed_keywords_refuse_every_invalid_instance(results):
    rows, _, _ = results
    wider = {
        r.name: f"{r.invalid - r.invalid_refused} of {r.invalid}"
        for r in rows
        if r.invalid_refused != r.invalid
    }
    assert not wider, f"invalid instances accepted: {wider}"


def test_refused_keywords_are_refused_at_request_time(results):
    _, _, refused = results
    for r in refused:
        assert r.refused_schema + r.invalid_refused == r.cases - r.valid, r.name


def test_glaive_tool_schemas(results):
    _, glaive, _ = results
    assert glaive.valid_accepted == glaive.valid
    assert glaive.invalid_refused == glaive.invalid
    assert glaive.cases - glaive.refused_schema > 2000
