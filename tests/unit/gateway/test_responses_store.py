"""The stored responses (gateway/responses/store.py) on real databases: SQLite files in
tmp_path, and a real PostgreSQL server started for the session (tests/postgres.py). Each test
runs on both, except where it names one."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from bench.store_write import realistic, turn_bytes
from tests.postgres import postgres_server, postgres_url  # noqa: F401 (fixtures)
from toolwire.errors import RequestError
from toolwire.gateway.responses.store import (
    ResponseTooLarge,
    SqliteStore,
    StoredResponse,
    StoreUnavailable,
    open_store,
    owner_of,
)
from toolwire.stack.launcher import free_port

ALICE, BOB = owner_of("sk-alice"), owner_of("sk-bob")


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path) -> str:
    """One empty database: a SQLite file, or a new database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'state' / 'responses.db'}"
    return request.getfixturevalue("postgres_url")


def turn(
    rid: str,
    previous: str | None = None,
    *,
    owner: str = ALICE,
    created_at: float | None = None,
    n_items: int = 1,
    pad: int = 0,
) -> StoredResponse:
    """A stored response with `n_items` input messages (ids msg_<rid>_<i>) and one output
    message; `pad` characters of text in each input message."""
    items = [
        {
            "id": f"msg_{rid}_{i}",
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": f"question {i} " + "x" * pad}],
        }
        for i in range(n_items)
    ]
    output = [
        {
            "id": f"msg_out_{rid}",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": f"answer of {rid}", "annotations": []}],
        }
    ]
    created = time.time() if created_at is None else created_at
    response = {
        "id": rid,
        "object": "response",
        "created_at": int(created),
        "status": "completed",
        "model": "gpt-4o-mini",
        "output": output,
        "previous_response_id": previous,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }
    return StoredResponse(rid, owner, created, previous, items, output, response)


def run(coro):
    return asyncio.run(coro)


# -- put, get, chain, delete, ownership ----------------------------------------------------------


def test_put_get_and_ownership(url):
    async def go():
        store = open_store(url)
        try:
            r = turn("resp_a", n_items=2)
            await store.put(r)
            got = await store.get("resp_a", ALICE)
            other = await store.get("resp_a", BOB)
            unknown = await store.get("resp_nope", ALICE)
            # An output that is not the Response's own `output` is kept as given.
            odd = StoredResponse(
                "resp_odd", ALICE, time.time(), None, [], [{"id": "x", "type": "message"}], {}
            )
            await store.put(odd)
            got_odd = await store.get("resp_odd", ALICE)
            with pytest.raises(ValueError, match="already stored"):
                await store.put(r)
            return r, got, other, unknown, odd, got_odd
        finally:
            await store.close()

    r, got, other, unknown, odd, got_odd = run(go())
    assert got == r
    assert other is None and unknown is None  # another key's response reads as not found
    assert got_odd == odd


def test_json_reads_back_as_written(url):
    """Key order, unicode, a NUL in a string, big and float numbers: the Response object a
    GET returns is the one the create returned."""

    async def go():
        store = open_store(url)
        try:
            r = turn("resp_u")
            response = {"z": 1, "a": [1.5, -2, 2**53], "id": "resp_u", "text": "é 日本 🌧 \x00 \n"}
            r = StoredResponse(r.id, r.owner, r.created_at, None, r.input_items, [], response)
            await store.put(r)
            return r, await store.get("resp_u", ALICE)
        finally:
            await store.close()

    r, got = run(go())
    assert got == r
    assert list(got.response) == ["z", "a", "id", "text"]


def test_chain_and_delete(url):
    async def go():
        store = open_store(url)
        try:
            await store.put(turn("resp_1", n_items=2))
            await store.put(turn("resp_2", "resp_1"))
            await store.put(turn("resp_3", "resp_2"))
            await store.put(turn("resp_b", "resp_1", owner=BOB))  # names another's response
            out: dict[str, Any] = {
                "whole": await store.chain("resp_3", ALICE),
                "root": await store.chain("resp_1", ALICE),
                "bob's view": await store.chain("resp_3", BOB),
                "bob's through alice's": await store.chain("resp_b", BOB),
                "unknown": await store.chain("resp_nope", ALICE),
                "bob deletes": await store.delete("resp_2", BOB),
                "still there": await store.get("resp_2", ALICE),
                "alice deletes": await store.delete("resp_2", ALICE),
                "again": await store.delete("resp_2", ALICE),
                "broken": await store.chain("resp_3", ALICE),
                "above the gap": await store.chain("resp_1", ALICE),
                "after the gap": await store.get("resp_3", ALICE),
            }
            return out
        finally:
            await store.close()

    out = run(go())
    whole = out["whole"]
    assert [r.id for r in whole] == ["resp_1", "resp_2", "resp_3"]
    assert whole[0].previous_response_id is None and whole[2].previous_response_id == "resp_2"
    # What the handler rebuilds the conversation from: each turn's input items, then output.
    history = [item["id"] for r in whole for item in r.input_items + r.output]
    assert history == [
        "msg_resp_1_0",
        "msg_resp_1_1",
        "msg_out_resp_1",
        "msg_resp_2_0",
        "msg_out_resp_2",
        "msg_resp_3_0",
        "msg_out_resp_3",
    ]
    assert [r.id for r in out["root"]] == ["resp_1"]
    assert out["bob's view"] is None
    assert out["bob's through alice's"] is None  # a chain never crosses owners
    assert out["unknown"] is None
    assert out["bob deletes"] is False and out["still there"] is not None
    assert out["alice deletes"] is True and out["again"] is False
    assert out["broken"] is None  # a deleted ancestor breaks the chain
    assert [r.id for r in out["above the gap"]] == ["resp_1"]
    assert out["after the gap"] is not None  # descendants stay


# -- input items, paginated as OpenAI's list endpoints -------------------------------------------


def test_input_items_pages(url):
    async def go():
        store = open_store(url)
        try:
            await store.put(turn("resp_p", n_items=5))
            await store.put(turn("resp_1item"))

            async def page(rid="resp_p", owner=ALICE, **kw):
                kw.setdefault("after", None)
                kw.setdefault("limit", 20)
                kw.setdefault("order", "desc")
                found = await store.list_input_items(rid, owner, **kw)
                if found is None:
                    return None
                items, has_more = found
                return [i["id"].rsplit("_", 1)[1] for i in items], has_more

            walks = {}
            for order in ("asc", "desc"):
                for limit in range(1, 8):
                    # The SDK's auto-pagination: after = the last id of the page before.
                    seen, after = [], None
                    while True:
                        items, has_more = (
                            await store.list_input_items(
                                "resp_p", ALICE, after=after, limit=limit, order=order
                            )
                        ) or ([], False)
                        seen += [i["id"] for i in items]
                        if not has_more:
                            break
                        after = items[-1]["id"]
                    walks[order, limit] = seen
            with pytest.raises(ValueError):
                await store.list_input_items("resp_p", ALICE, after=None, limit=0, order="desc")
            with pytest.raises(ValueError):
                await store.list_input_items("resp_p", ALICE, after=None, limit=101, order="asc")
            with pytest.raises(ValueError):
                await store.list_input_items("resp_p", ALICE, after=None, limit=5, order="up")
            return {
                "default": await page(),
                "desc 2": await page(limit=2),
                "desc 2 after 3": await page(limit=2, after="msg_resp_p_3"),
                "desc 2 after 1": await page(limit=2, after="msg_resp_p_1"),
                "asc 2": await page(limit=2, order="asc"),
                "asc 2 after 1": await page(limit=2, order="asc", after="msg_resp_p_1"),
                "asc 2 after 3": await page(limit=2, order="asc", after="msg_resp_p_3"),
                "exactly 5": await page(limit=5),
                "after the last": await page(after="msg_resp_p_0"),
                "unknown after": await page(after="msg_nope"),
                "another's": await page(owner=BOB),
                "unknown": await page(rid="resp_nope"),
                "one item": await page(rid="resp_1item", limit=1),
                "walks": walks,
            }
        finally:
            await store.close()

    out = run(go())
    assert out["default"] == (["4", "3", "2", "1", "0"], False)  # desc: the last item first
    assert out["desc 2"] == (["4", "3"], True)
    assert out["desc 2 after 3"] == (["2", "1"], True)
    assert out["desc 2 after 1"] == (["0"], False)
    assert out["asc 2"] == (["0", "1"], True)
    assert out["asc 2 after 1"] == (["2", "3"], True)
    assert out["asc 2 after 3"] == (["4"], False)
    assert out["exactly 5"] == (["4", "3", "2", "1", "0"], False)  # no more: has_more false
    assert out["after the last"] == ([], False)
    assert out["unknown after"] == ([], False)
    assert out["another's"] is None and out["unknown"] is None
    assert out["one item"] == (["0"], False)
    everything = [f"msg_resp_p_{i}" for i in range(5)]
    for (order, limit), seen in out["walks"].items():
        expected = everything if order == "asc" else everything[::-1]
        assert seen == expected, (order, limit)


# -- retention and the size limit ----------------------------------------------------------------


def test_retention_by_age(url):
    async def go():
        kept = open_store(url, max_age_s=60)
        raw = open_store(url)  # the same database, without retention: what is really there
        old = time.time() - 3600
        try:
            await raw.put(turn("resp_old", created_at=old))
            await raw.put(turn("resp_new", "resp_old"))
            out: dict[str, Any] = {
                "get old": await kept.get("resp_old", ALICE),
                "get new": await kept.get("resp_new", ALICE),
                "chain": await kept.chain("resp_new", ALICE),
                "items": await kept.list_input_items(
                    "resp_old", ALICE, after=None, limit=20, order="desc"
                ),
                "delete": await kept.delete("resp_old", ALICE),
                "still stored": await raw.get("resp_old", ALICE),  # lazily deleted
                "swept": await kept.sweep(),
                "gone": await raw.get("resp_old", ALICE),
                "new stays": await raw.get("resp_new", ALICE),
            }
            # A put sweeps by itself (in the background; close waits for it).
            await raw.put(turn("resp_old2", created_at=old))
            await kept.put(turn("resp_fresh"))
            await kept.close()
            out["swept by a put"] = await raw.get("resp_old2", ALICE)
            out["fresh"] = await raw.get("resp_fresh", ALICE)
            return out
        finally:
            await kept.close()
            await raw.close()

    out = run(go())
    assert out["get old"] is None and out["get new"] is not None
    assert out["chain"] is None  # an expired ancestor breaks the chain
    assert out["items"] is None and out["delete"] is False
    assert out["still stored"] is not None
    assert out["swept"] == 1 and out["gone"] is None and out["new stays"] is not None
    assert out["swept by a put"] is None and out["fresh"] is not None


def test_size_limit(url):
    async def go():
        store = open_store(url, max_bytes=2000)
        try:
            small = turn("resp_small", n_items=2)
            await store.put(small)
            big = turn("resp_big", n_items=3, pad=1000)
            with pytest.raises(ResponseTooLarge) as refused:
                await store.put(big)
            return (
                refused.value,
                await store.get("resp_small", ALICE),
                await store.get("resp_big", ALICE),
            )
        finally:
            await store.close()

    e, small, big = run(go())
    assert isinstance(e, RequestError) and e.status == 413 and e.param == "store"
    assert e.limit == 2000 and e.size > 3000
    assert f"{e.size} bytes" in e.message and "2000 bytes" in e.message
    assert small is not None and big is None  # a refused response is not stored


# -- several gateways on one database ------------------------------------------------------------


def test_two_gateways_share_one_database(url):
    async def go():
        a, b = open_store(url), open_store(url)
        try:
            await asyncio.gather(a.open(), b.open())
            await a.put(turn("resp_1"))
            seen_by_b = await b.chain("resp_1", ALICE)
            await b.put(turn("resp_2", "resp_1"))  # B continues A's conversation
            seen_by_a = await a.chain("resp_2", ALICE)
            # Both writing at once.
            await asyncio.gather(
                *(a.put(turn(f"resp_a{i}")) for i in range(40)),
                *(b.put(turn(f"resp_b{i}")) for i in range(40)),
            )
            everything = [await a.get(f"resp_{g}{i}", ALICE) for g in "ab" for i in range(40)]
            deleted = await b.delete("resp_1", ALICE)
            after_delete = await a.chain("resp_2", ALICE)
            return seen_by_b, seen_by_a, everything, deleted, after_delete
        finally:
            await a.close()
            await b.close()

    seen_by_b, seen_by_a, everything, deleted, after_delete = run(go())
    assert [r.id for r in seen_by_b] == ["resp_1"]
    assert [r.id for r in seen_by_a] == ["resp_1", "resp_2"]
    assert all(r is not None for r in everything)
    assert deleted and after_delete is None


def test_schema_created_by_many_at_once(url):
    """Replicas starting together all create the schema (CREATE TABLE IF NOT EXISTS alone can
    collide in PostgreSQL's catalog)."""

    async def go():
        stores = [open_store(url) for _ in range(6)]
        try:
            await asyncio.gather(*(s.open() for s in stores))
            await stores[0].put(turn("resp_1"))
            return [await s.get("resp_1", ALICE) for s in stores]
        finally:
            for s in stores:
                await s.close()

    assert all(r is not None for r in run(go()))


# -- durability across a kill ---------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    sys.path.insert(0, sys.argv[2])
    from tests.unit.gateway.test_responses_store import turn
    from toolwire.gateway.responses.store import open_store

    async def main():
        store = open_store(sys.argv[1])
        await store.put(turn("resp_k1", n_items=3))
        await store.put(turn("resp_k2", "resp_k1"))
        os.kill(os.getpid(), signal.SIGKILL)  # right after put returned: no close, no atexit

    asyncio.run(main())
    """
)


def test_nothing_lost_when_the_gateway_is_killed(url):
    repo = str(Path(__file__).resolve().parents[3])
    child = subprocess.run(
        [sys.executable, "-c", CHILD, url, repo], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    if url.startswith("sqlite://"):
        # The commits are in the WAL, never checkpointed into the database by a clean close.
        wal = Path(url.removeprefix("sqlite://") + "-wal")
        assert wal.stat().st_size > 0

    async def go():
        store = open_store(url)  # the next gateway, after the restart
        try:
            before = await store.chain("resp_k2", ALICE)
            await store.put(turn("resp_k3", "resp_k2"))  # the next turn continues
            return before, await store.chain("resp_k3", ALICE)
        finally:
            await store.close()

    before, after = run(go())
    assert [r.id for r in before] == ["resp_k1", "resp_k2"]
    assert [i["id"] for i in before[0].input_items] == [f"msg_resp_k1_{i}" for i in range(3)]
    assert before[1].response["output"] == before[1].output == turn("resp_k2").output
    assert [r.id for r in after] == ["resp_k1", "resp_k2", "resp_k3"]


# -- a realistic turn ------------------------------------------------------------------------------


def test_a_realistic_turn_round_trips(url):
    """The turn bench/store_write.py times (5 input items, 2 output items, about 3 KB) comes
    back from the store as it went in, on both backends."""

    async def go():
        store = open_store(url)
        try:
            await store.open()
            r = realistic("resp_real")
            await store.put(r)
            return r, await store.get("resp_real", r.owner)
        finally:
            await store.close()

    put, got = run(go())
    assert 2500 <= len(turn_bytes(put)) <= 4000
    assert got is not None
    assert (got.input_items, got.output, got.response) == (
        put.input_items,
        put.output,
        put.response,
    )


# -- URLs, owners, failures ------------------------------------------------------------------------


def test_open_store_urls(tmp_path):
    s = open_store(f"sqlite://{tmp_path}/a.db")
    assert isinstance(s, SqliteStore) and s.path == tmp_path / "a.db"
    assert s.synchronous == "NORMAL"
    s = open_store(f"sqlite://{tmp_path}/b.db?synchronous=full")
    assert isinstance(s, SqliteStore) and s.synchronous == "FULL"
    s = open_store(tmp_path / "c.db")
    assert isinstance(s, SqliteStore) and s.path == tmp_path / "c.db"
    s = open_store(str(tmp_path))  # a state directory: responses.db in it
    assert isinstance(s, SqliteStore) and s.path == tmp_path / "responses.db"
    for bad in ("mysql://x/y", f"sqlite://{tmp_path}/d.db?journal=off", "sqlite://"):
        with pytest.raises(ValueError):
            open_store(bad)
    with pytest.raises(ValueError):
        open_store(tmp_path / "e.db", max_age_s=0)
    with pytest.raises(ValueError):
        open_store(tmp_path / "e.db", max_bytes=-1)

    async def go():
        store = open_store(f"sqlite://{tmp_path}/new/dirs/f.db")
        await store.put(turn("resp_1"))
        await store.close()

    run(go())
    with sqlite3.connect(tmp_path / "new/dirs/f.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT id FROM toolwire_responses").fetchall() == [("resp_1",)]


def test_owner_of():
    assert owner_of("sk-alice") == owner_of("sk-alice") != owner_of("sk-bob")
    assert "sk-alice" not in owner_of("sk-alice") and len(owner_of("sk-alice")) == 64
    assert owner_of(None) == owner_of("") == ""


def test_unavailable_sqlite(tmp_path):
    (tmp_path / "a-file").write_text("")
    (tmp_path / "garbage.db").write_bytes(os.urandom(4096))

    async def go(path):
        store = open_store(path)
        try:
            with pytest.raises(StoreUnavailable) as e:
                await store.get("resp_1", ALICE)
            return e.value
        finally:
            await store.close()

    for path in (tmp_path / "a-file" / "x.db", tmp_path / "garbage.db"):
        e = run(go(path))
        assert e.status == 503 and str(path) in e.message


def test_unavailable_postgres(postgres_server):  # noqa: F811 (a fixture)
    async def go(u):
        store = open_store(u)
        try:
            t = time.monotonic()
            with pytest.raises(StoreUnavailable) as e:
                await store.put(turn("resp_1"))
            return e.value, time.monotonic() - t
        finally:
            await store.close()

    e, took = run(go(f"postgresql://postgres@127.0.0.1:{free_port()}/x?connect_timeout=5"))
    assert e.status == 503 and "PostgreSQL" in e.message and took < 10
    e, took = run(go(postgres_server.url("no_such_database")))
    assert e.status == 503 and "no_such_database" in e.message


def test_postgres_crash_and_restart(postgres_server, postgres_url):  # noqa: F811
    """The database server itself dies (an immediate shutdown: no checkpoint, crash recovery
    at the next start): what put committed is there after, and the gateway's pool, which
    checks a connection before lending it, carries on without a failed turn."""

    async def go():
        store = open_store(postgres_url)
        try:
            await store.put(turn("resp_1"))
            postgres_server.restart(crash=True)
            await store.put(turn("resp_2", "resp_1"))
            return await store.chain("resp_2", ALICE)
        finally:
            await store.close()

    assert [r.id for r in run(go())] == ["resp_1", "resp_2"]
