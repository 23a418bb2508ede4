"""A real PostgreSQL server for the tests, started once per session (`postgres_server`), and a
fresh database on it for each test (`postgres_url`).

The server is Debian's (`postgresql`: `make install` installs it where it is missing; the
fixture installs it too, as root, like the Prometheus test does), or any PostgreSQL whose bin
directory TOOLWIRE_PG_BINDIR names, or whose `initdb` is on PATH. It runs from a temporary
directory on 127.0.0.1 and a free port, with trust authentication, and is stopped at the end.
PostgreSQL refuses to run as root: as root, the server runs as the `postgres` system user (or
`nobody`). The tests that need it are skipped, with the reason, only where no server binary
can be had.

Use it from a test module: `from tests.postgres import postgres_server, postgres_url  # noqa:
F401 (fixtures)`.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from toolwire.stack.launcher import free_port


def find_bindir() -> Path | None:
    """A directory with PostgreSQL's initdb and postgres, the newest version first."""
    candidates = []
    if os.environ.get("TOOLWIRE_PG_BINDIR"):
        candidates.append(Path(os.environ["TOOLWIRE_PG_BINDIR"]))
    versions = Path("/usr/lib/postgresql").glob("*/bin")

    def version(p: Path) -> int:
        return int(p.parent.name) if re.fullmatch(r"\d+", p.parent.name) else 0

    candidates += sorted(versions, key=version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for c in candidates:
        if (c / "initdb").is_file() and (c / "postgres").is_file():
            return c
    return None


def install_postgres() -> str | None:
    """Debian's postgresql, installed with apt-get as root; None when done, else why not."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "PostgreSQL is not installed and apt-get as root is not available here"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            return f"could not install Debian's postgresql: {result.stderr[-300:]}"
    return None


class PostgresServer:
    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="toolwire-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.user: str | None = None  # the system user the server runs as (as root)
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    pwd.getpwnam(name)
                except KeyError:
                    continue
                self.user = name
                break
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run_as(self) -> dict:
        if self.user is None:
            return {}
        entry = pwd.getpwnam(self.user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def start(self) -> None:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        initdb = [
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",  # the test server's catalog; the server itself fsyncs as usual
        ]
        done = subprocess.run(
            initdb, cwd=self.root, capture_output=True, text=True, **self._run_as()
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stdout}{done.stderr}")
        self._launch()

    def _launch(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.data),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.root),
                    "-c",
                    "max_connections=200",
                ],
                cwd=self.root,
                stdout=out,
                stderr=subprocess.STDOUT,
                **self._run_as(),
            )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log.read_text()}")
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    return
            except psycopg.OperationalError as e:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not start: {self.log.read_text()}") from e
                time.sleep(0.1)

    def create_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def _shutdown(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self, *, crash: bool = False) -> None:
        """Stop and start again on the same data and port; `crash`: an immediate shutdown
        (SIGQUIT: no checkpoint; the next start recovers from the WAL, as after a crash)."""
        self._shutdown(signal.SIGQUIT if crash else signal.SIGINT)
        self._launch()

    def stop(self) -> None:
        self._shutdown(signal.SIGINT)  # fast shutdown
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    pytest.importorskip("psycopg", reason="psycopg (the postgres extra) is not installed")
    bindir = find_bindir()
    if bindir is None:
        why = install_postgres()
        bindir = find_bindir()
        if bindir is None:
            pytest.skip(why or "the postgresql package brought no initdb")
    server = PostgresServer(bindir)
    try:
        server.start()
    except RuntimeError as e:
        server.stop()
        pytest.fail(str(e))
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a new database on the session's server."""
    return postgres_server.create_database()
