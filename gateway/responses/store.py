"""The stored responses of the Responses API: SQLite (embedded, the default) or PostgreSQL.

A response created with `store` (true when omitted) is kept with this turn's input items, so
that `previous_response_id` can continue from it and `GET /v1/responses/{id}`, its `DELETE`
and `GET /v1/responses/{id}/input_items` can find it. A stored response belongs to the API key
that made it (`owner_of`): every read and delete names the owner, and another owner's response
reads as not found.

    store = open_store("sqlite:///var/lib/toolwire/responses.db", max_age_s=None, max_bytes=None)
    await store.open()   # optional: the schema, the connection; a bad URL fails here
    await store.put(StoredResponse(...))
    chain = await store.chain(previous_response_id, owner)   # root first, or None

Durability: `put` returns once the response is committed, so a gateway killed (`kill -9`)
after it loses nothing. SQLite runs in WAL mode with `synchronous=NORMAL`: a commit has been
written to the WAL file (in the OS's page cache) when it returns, which survives any death of
the process; only an OS crash or power loss may drop the last commits (never corrupting the
file). `sqlite://PATH?synchronous=full` fsyncs each commit instead, for power-loss durability,
at the cost of an fsync per turn. PostgreSQL commits with the server's own durability
(`synchronous_commit`, on by default).

Many gateways on one database: PostgreSQL for replicas (every replica gets the same URL; the
schema is created on first use under an advisory lock, so replicas may start together); two
gateway processes on one host may also share one SQLite file (WAL, a busy timeout).

Limits, both optional:
- `max_age_s`: a response older than this (by its `created_at`) reads as not found at once
  (so a chain through it is broken) and is deleted lazily: at most once a minute, after a
  `put`, in batches, off the turn's path (`sweep()` runs one now).
- `max_bytes`: the most one stored response may take, its input items, output and Response
  object as stored JSON together. A larger one is refused, loudly: `put` raises
  `ResponseTooLarge` (a 413 RequestError) and stores nothing. The total is bounded by
  retention, not by this limit.

Errors: a database that cannot be reached or written (PostgreSQL down, a locked or full disk)
raises `StoreUnavailable` (a 503 RequestError, retryable) from any method.

Each backend is one table, `toolwire_responses`, with the JSON as text (key order kept, so a
stored Response reads back as it was sent).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import orjson

from toolwire.errors import RequestError
from toolwire.vocabulary import ErrorCode

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

__all__ = [
    "ResponseStore",
    "ResponseTooLarge",
    "StoreUnavailable",
    "StoredResponse",
    "open_store",
    "owner_of",
]

TABLE = "toolwire_responses"
SWEEP_EVERY_S = 60.0  # the retention sweep runs at most this often (per store object)
SWEEP_BATCH = 1000  # rows deleted per statement, so that puts interleave with a long sweep
MAX_CHAIN = 10_000  # a previous_response_id chain longer than this reads as broken
SQLITE_BUSY_S = 5.0  # how long a SQLite write waits for another process's write lock
SQLITE_READERS = 4  # reader threads (WAL: reads never wait for the writer)
PG_POOL_MAX = 10  # connections per gateway
PG_WAIT_S = 5.0  # how long a request waits for a pooled connection before StoreUnavailable
PG_SCHEMA_LOCK = 0x746F6F6C77697265  # pg_advisory_xact_lock key ("toolwire") for the DDL

_T = TypeVar("_T")


@dataclass(frozen=True)
class StoredResponse:
    id: str  # resp_...
    owner: str  # who may read it: owner_of(the API key), never the key itself
    created_at: float  # epoch seconds, as in the Response object; retention counts from it
    previous_response_id: str | None
    input_items: list[dict[str, Any]]  # this turn's input items as the API lists them (with ids)
    output: list[dict[str, Any]]  # the response's output items
    response: dict[str, Any]  # the whole Response object as returned to the client


class ResponseTooLarge(RequestError):
    """`put` refused a response whose stored JSON exceeds `max_bytes`: nothing was stored."""

    def __init__(self, size: int, limit: int):
        super().__init__(
            f"The response is too large to store: {size} bytes of input items and output, "
            f"over this server's limit of {limit} bytes. Send it with store: false, or with "
            "less input.",
            param="store",
            code=ErrorCode.REQUEST_TOO_LARGE,
            status=413,
        )
        self.size = size
        self.limit = limit


class StoreUnavailable(RequestError):
    """The database could not be reached, read or written; the operation did not happen (a
    `put` may rarely have committed if the connection broke during its commit)."""

    def __init__(self, why: str):
        super().__init__(
            f"The response store is unavailable: {why}",
            code=ErrorCode.SERVICE_UNAVAILABLE,
            status=503,
            type="service_unavailable",
            retry_after=2,
        )


class ResponseStore(Protocol):
    async def open(self) -> None:
        """Create the schema and connect; first use does it too (call it at startup to fail
        there rather than on the first request)."""

    async def put(self, r: StoredResponse) -> None:
        """Store `r`, committed when this returns. Raises ResponseTooLarge, StoreUnavailable,
        or ValueError for an id already stored."""

    async def get(self, id: str, owner: str) -> StoredResponse | None: ...

    async def chain(self, id: str, owner: str) -> list[StoredResponse] | None:
        """`id` and the responses its previous_response_id links lead to, root first and `id`
        last; None when `id` is unknown, not `owner`'s, expired, or a link is missing (a
        deleted or expired ancestor breaks the chain)."""

    async def delete(self, id: str, owner: str) -> bool:
        """True if `owner`'s response `id` was there (now deleted). Its descendants stay, and
        their chains are broken."""

    async def list_input_items(
        self, id: str, owner: str, *, after: str | None, limit: int, order: str
    ) -> tuple[list[dict[str, Any]], bool] | None:
        """A page of `id`'s input items, OpenAI's list semantics: `order` "desc" (the API's
        default; last item first) or "asc"; the items after the item `after` in that order
        (an `after` that is no item of this response gives an empty page); at most `limit`
        (1-100). Returns (items, has_more), or None when the response is not found."""

    async def sweep(self) -> int:
        """Delete the responses older than max_age_s now; how many went."""

    async def close(self) -> None: ...


def owner_of(api_key: str | None) -> str:
    """Who a stored response belongs to: the SHA-256 (hex) of the API key that made it; ""
    for a gateway without keys. Stable across processes and replicas; the key is not kept."""
    if not api_key:
        return ""
    return hashlib.sha256(api_key.encode()).hexdigest()


def open_store(
    url: str | Path, *, max_age_s: float | None = None, max_bytes: int | None = None
) -> ResponseStore:
    """The store at `url`: "sqlite://PATH" (PATH after the two slashes, so
    "sqlite:///var/lib/x.db" is absolute; "?synchronous=full" fsyncs each commit), a plain
    file path (SQLite; an existing directory gets "responses.db" in it), or "postgresql://..."
    (a libpq URL, given to psycopg as it is; needs the `postgres` extra). Nothing is opened
    until `open()` or first use."""
    if max_age_s is not None and max_age_s <= 0:
        raise ValueError(f"max_age_s must be positive, not {max_age_s}")
    if max_bytes is not None and max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, not {max_bytes}")
    text = str(url)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresStore(text, max_age_s=max_age_s, max_bytes=max_bytes)
    synchronous = "NORMAL"
    if text.startswith("sqlite://"):
        text, _, query = text.removeprefix("sqlite://").partition("?")
        for pair in filter(None, query.split("&")):
            key, _, value = pair.partition("=")
            if key != "synchronous" or value.upper() not in ("NORMAL", "FULL", "EXTRA"):
                raise ValueError(f"unknown SQLite store option {pair!r} in {url}")
            synchronous = value.upper()
    elif "://" in text:
        raise ValueError(f"unknown response store URL {url}: sqlite://PATH or postgresql://...")
    if not text:
        raise ValueError(f"no path in response store URL {url}")
    path = Path(text).expanduser()
    if path.is_dir():
        path = path / "responses.db"
    return SqliteStore(path, max_age_s=max_age_s, max_bytes=max_bytes, synchronous=synchronous)


# -- shared by both backends -------------------------------------------------------------------

_COLUMNS = "id, owner, created_at, previous_response_id, input_items, output, response"
_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    " id TEXT PRIMARY KEY,"
    " owner TEXT NOT NULL,"
    " created_at DOUBLE PRECISION NOT NULL,"
    " previous_response_id TEXT,"
    " input_items TEXT NOT NULL,"  # JSON
    " output TEXT,"  # JSON; NULL when it is the Response's own `output` (stored once)
    " response TEXT NOT NULL,"  # JSON
    " size BIGINT NOT NULL)",  # bytes of the three JSON columns
    f"CREATE INDEX IF NOT EXISTS {TABLE}_created_at ON {TABLE} (created_at)",
)
_INSERT = f"INSERT INTO {TABLE} ({_COLUMNS}, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_GET = f"SELECT {_COLUMNS} FROM {TABLE} WHERE id = ? AND owner = ? AND created_at >= ?"
_INPUT_ITEMS = f"SELECT input_items FROM {TABLE} WHERE id = ? AND owner = ? AND created_at >= ?"
_DELETE = f"DELETE FROM {TABLE} WHERE id = ? AND owner = ? AND created_at >= ?"
# One statement (one snapshot): the response, then each previous one, newest first.
_CHAIN = (
    "WITH RECURSIVE c (id, prev, depth) AS ("
    f" SELECT id, previous_response_id, 0 FROM {TABLE}"
    "  WHERE id = ? AND owner = ? AND created_at >= ?"
    " UNION ALL"
    f" SELECT r.id, r.previous_response_id, c.depth + 1 FROM {TABLE} r JOIN c ON r.id = c.prev"
    "  WHERE r.owner = ? AND r.created_at >= ? AND c.depth < ?"
    f") SELECT {', '.join('r.' + c for c in _COLUMNS.split(', '))}"
    f" FROM c JOIN {TABLE} r ON r.id = c.id ORDER BY c.depth DESC"
)
_SWEEP = f"DELETE FROM {TABLE} WHERE id IN (SELECT id FROM {TABLE} WHERE created_at < ? LIMIT ?)"

Row = Sequence[Any]


def _decode(row: Row) -> StoredResponse:
    rid, owner, created_at, previous, input_items, output, response = row
    resp = orjson.loads(response)
    return StoredResponse(
        id=rid,
        owner=owner,
        created_at=float(created_at),
        previous_response_id=previous,
        input_items=orjson.loads(input_items),
        output=orjson.loads(output) if output is not None else list(resp.get("output") or []),
        response=resp,
    )


def _page(
    items: list[dict[str, Any]], after: str | None, limit: int, order: str
) -> tuple[list[dict[str, Any]], bool]:
    if order == "desc":
        items = items[::-1]
    if after is not None:
        at = next((i for i, item in enumerate(items) if item.get("id") == after), None)
        if at is None:
            return [], False
        items = items[at + 1 :]
    return items[:limit], len(items) > limit


class _SqlStore:
    """The API over four primitives a backend supplies: `_read_one`, `_read_all`, `_write`
    (rowcount) and `_open`. SQL is written with `?` placeholders."""

    _sweep_sql = _SWEEP

    def __init__(self, *, max_age_s: float | None, max_bytes: int | None):
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        self._opened = False
        self._open_lock: asyncio.Lock | None = None
        self._next_sweep = 0.0  # monotonic; the first put sweeps
        self._sweeping: asyncio.Task[int] | None = None

    # the backend's
    async def _open(self) -> None:
        raise NotImplementedError

    async def _read_one(self, sql: str, params: tuple[Any, ...]) -> Row | None:
        raise NotImplementedError

    async def _read_all(self, sql: str, params: tuple[Any, ...]) -> list[Row]:
        raise NotImplementedError

    async def _write(self, sql: str, params: tuple[Any, ...]) -> int:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError

    # the API
    async def open(self) -> None:
        if self._opened:
            return
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if not self._opened:
                await self._open()
                self._opened = True

    def _cutoff(self) -> float:
        """The oldest created_at still readable."""
        return time.time() - self.max_age_s if self.max_age_s is not None else float("-inf")

    async def put(self, r: StoredResponse) -> None:
        # Encoded here, on the caller's loop: the dicts as they are at the call.
        input_items = orjson.dumps(r.input_items)
        response = orjson.dumps(r.response)
        output = None if r.output == r.response.get("output") else orjson.dumps(r.output)
        size = len(input_items) + len(response) + (len(output) if output is not None else 0)
        if self.max_bytes is not None and size > self.max_bytes:
            raise ResponseTooLarge(size, self.max_bytes)
        row = (
            r.id,
            r.owner,
            float(r.created_at),
            r.previous_response_id,
            input_items.decode(),
            output.decode() if output is not None else None,
            response.decode(),
            size,
        )
        await self.open()
        await self._write(_INSERT, row)
        self._maybe_sweep()

    async def get(self, id: str, owner: str) -> StoredResponse | None:
        await self.open()
        row = await self._read_one(_GET, (id, owner, self._cutoff()))
        return _decode(row) if row is not None else None

    async def chain(self, id: str, owner: str) -> list[StoredResponse] | None:
        await self.open()
        cutoff = self._cutoff()
        rows = await self._read_all(_CHAIN, (id, owner, cutoff, owner, cutoff, MAX_CHAIN))
        if not rows or rows[0][3] is not None:  # unknown, or the root still names a previous
            return None
        return [_decode(row) for row in rows]

    async def delete(self, id: str, owner: str) -> bool:
        await self.open()
        return await self._write(_DELETE, (id, owner, self._cutoff())) > 0

    async def list_input_items(
        self, id: str, owner: str, *, after: str | None, limit: int, order: str
    ) -> tuple[list[dict[str, Any]], bool] | None:
        if not 1 <= limit <= 100:
            raise ValueError(f"limit must be 1 to 100, not {limit}")
        if order not in ("asc", "desc"):
            raise ValueError(f"order must be 'asc' or 'desc', not {order!r}")
        await self.open()
        row = await self._read_one(_INPUT_ITEMS, (id, owner, self._cutoff()))
        if row is None:
            return None
        return _page(orjson.loads(row[0]), after, limit, order)

    async def sweep(self) -> int:
        if self.max_age_s is None:
            return 0
        await self.open()
        cutoff, gone = self._cutoff(), 0
        while True:
            n = await self._write(self._sweep_sql, (cutoff, SWEEP_BATCH))
            gone += n
            if n < SWEEP_BATCH:
                return gone

    def _maybe_sweep(self) -> None:
        if self.max_age_s is None or self._sweeping is not None:
            return
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_EVERY_S
        self._sweeping = asyncio.get_running_loop().create_task(self._background_sweep())

    async def _background_sweep(self) -> int:
        try:
            return await self.sweep()
        except StoreUnavailable:
            return 0  # the next put's sweep tries again; the reads already hide them
        finally:
            self._sweeping = None

    async def close(self) -> None:
        sweeping = self._sweeping
        if sweeping is not None:
            await asyncio.gather(sweeping, return_exceptions=True)
        if self._opened:
            self._opened = False
            await self._close()


# -- SQLite ----------------------------------------------------------------------------------


def _while_locked(fn: Callable[[], _T]) -> _T:
    """Run `fn` again while another connection holds the lock, up to SQLITE_BUSY_S.

    SQLite does not call its busy handler for every lock it takes: two processes opening one
    fresh file at once can get "database is locked" at once from the switch to WAL or the
    first CREATE TABLE, though each would wait at a later write.
    """
    deadline = time.monotonic() + SQLITE_BUSY_S
    delay = 0.005
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as e:
            text = str(e)
            if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


class SqliteStore(_SqlStore):
    """stdlib sqlite3 in WAL mode, off the event loop: one writer thread (its connection does
    every write, in order) and a few reader threads (one connection each)."""

    def __init__(
        self,
        path: Path,
        *,
        max_age_s: float | None,
        max_bytes: int | None,
        synchronous: str = "NORMAL",
    ):
        super().__init__(max_age_s=max_age_s, max_bytes=max_bytes)
        self.path = path
        self.synchronous = synchronous
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="responses-sqlite-write")
        self._readers = ThreadPoolExecutor(
            SQLITE_READERS, thread_name_prefix="responses-sqlite-read"
        )
        self._wconn: sqlite3.Connection | None = None
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()

    def _connect(self, *, write: bool) -> sqlite3.Connection:
        # Autocommit (isolation_level=None): each statement is its own transaction, committed
        # when execute returns. timeout= is SQLite's busy timeout.
        conn = sqlite3.connect(
            self.path, timeout=SQLITE_BUSY_S, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        if not write:
            conn.execute("PRAGMA query_only=ON")
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    def _init(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect(write=True)
        mode = _while_locked(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        if str(mode).lower() != "wal":
            raise StoreUnavailable(f"{self.path} cannot be put in WAL mode (it is {mode})")
        for statement in _SCHEMA:
            _while_locked(functools.partial(conn.execute, statement))
        self._wconn = conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect(write=False)
        return conn

    async def _call(self, executor: ThreadPoolExecutor, fn: Callable[[], _T]) -> _T:
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn)
        except sqlite3.IntegrityError as e:
            raise ValueError(f"the response is already stored ({e})") from e
        except (sqlite3.ProgrammingError, sqlite3.InterfaceError):
            raise
        except (sqlite3.DatabaseError, OSError) as e:  # locked, full, not a database, I/O
            raise StoreUnavailable(f"SQLite {self.path}: {e}") from e

    async def _open(self) -> None:
        await self._call(self._writer, self._init)

    async def _read_one(self, sql: str, params: tuple[Any, ...]) -> Row | None:
        return await self._call(
            self._readers, lambda: self._reader().execute(sql, params).fetchone()
        )

    async def _read_all(self, sql: str, params: tuple[Any, ...]) -> list[Row]:
        return await self._call(
            self._readers, lambda: self._reader().execute(sql, params).fetchall()
        )

    async def _write(self, sql: str, params: tuple[Any, ...]) -> int:
        def run() -> int:
            assert self._wconn is not None
            return self._wconn.execute(sql, params).rowcount

        return await self._call(self._writer, run)

    async def _close(self) -> None:
        def shutdown() -> None:
            self._writer.shutdown(wait=True)
            self._readers.shutdown(wait=True)
            with self._conns_lock:
                for conn in self._conns:
                    conn.close()
                self._conns.clear()

        await asyncio.to_thread(shutdown)


# -- PostgreSQL -------------------------------------------------------------------------------


class PostgresStore(_SqlStore):
    """psycopg 3 (async) with psycopg-pool: autocommit connections, so that each statement is
    committed when it returns; each checked out connection is checked first (a server restart
    costs no failed turn)."""

    _sweep_sql = (
        f"DELETE FROM {TABLE} WHERE id IN"
        f" (SELECT id FROM {TABLE} WHERE created_at < ? LIMIT ? FOR UPDATE SKIP LOCKED)"
    )

    def __init__(self, url: str, *, max_age_s: float | None, max_bytes: int | None):
        super().__init__(max_age_s=max_age_s, max_bytes=max_bytes)
        self.url = url
        self._pool: AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]] | None = None

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("?", "%s")

    def _unavailable(self, e: Exception) -> StoreUnavailable:
        return StoreUnavailable(f"PostgreSQL: {str(e).strip() or type(e).__name__}")

    async def _open(self) -> None:
        try:
            import psycopg
            from psycopg_pool import AsyncConnectionPool, PoolTimeout
        except ImportError as e:
            raise RuntimeError(
                "a postgresql:// response store needs psycopg: pip install 'toolwire[postgres]'"
            ) from e
        try:
            # One connection first: a wrong URL or a server down fails here, with libpq's own
            # words, rather than as a pool timeout. It creates the schema: under an advisory
            # lock, since concurrent CREATE TABLE IF NOT EXISTS can collide in the catalog.
            async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (PG_SCHEMA_LOCK,))
                    for statement in _SCHEMA:
                        await conn.execute(statement)
            pool: AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]] = AsyncConnectionPool(
                self.url,
                min_size=1,
                max_size=PG_POOL_MAX,
                kwargs={"autocommit": True},
                check=AsyncConnectionPool.check_connection,
                timeout=PG_WAIT_S,
                open=False,
                name="toolwire-responses",
            )
            await pool.open(wait=True, timeout=PG_WAIT_S)
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as e:
            raise self._unavailable(e) from e
        self._pool = pool

    async def _execute(self, sql: str, params: tuple[Any, ...], fetch: str) -> Any:
        import psycopg
        from psycopg_pool import PoolTimeout

        assert self._pool is not None
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(self._sql(sql), params)
                if fetch == "one":
                    return await cur.fetchone()
                if fetch == "all":
                    return await cur.fetchall()
                return cur.rowcount
        except psycopg.errors.UniqueViolation as e:
            raise ValueError(f"the response is already stored ({e})") from e
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as e:
            raise self._unavailable(e) from e

    async def _read_one(self, sql: str, params: tuple[Any, ...]) -> Row | None:
        row: Row | None = await self._execute(sql, params, "one")
        return row

    async def _read_all(self, sql: str, params: tuple[Any, ...]) -> list[Row]:
        rows: list[Row] = await self._execute(sql, params, "all")
        return rows

    async def _write(self, sql: str, params: tuple[Any, ...]) -> int:
        n: int = await self._execute(sql, params, "count")
        return n

    async def _close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
