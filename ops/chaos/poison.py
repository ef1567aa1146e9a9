"""Bad input at volume (issue 21, item 5): poison records on every topic while the mixed
load runs against `mgw up`, then proof that each one reached the dead letters and that
the line kept moving.

Poison is appended straight to the embedded log (the PostgreSQL table `mgw up` reads),
through the project's own ``EmbeddedLog``, as a misbehaving producer or a corrupted
disk page would put it there: the API never lets such bytes in, so this is the only
way to reach the projectors with them.

What each poison record must become (the exact expectation checked at the end):

* on an event topic, a record that does not decode (``not_avro``,
  ``unknown_fingerprint``, ``truncated``, ``trailing_bytes``) is dead-lettered by
  *every* projector that consumes the topic, reason ``decode``: each projector decodes
  for itself. ``catalog.content`` is read by catalog, search and notifications, so one
  such record makes three dead letters;
* a record that decodes but breaks the domain (``domain``: the topic's own event type
  with empty ids and negative numbers; ``foreign_type``: a valid event of a type that
  belongs to another topic) is dead-lettered, reason ``rejected``, by exactly the
  consuming projectors whose ``check`` refuses it. Followers that leave judging to the
  owner (search and notifications on the catalog topics, rate_limits on identity) let
  it pass; which ones refuse is computed here from the projectors' own ``check`` (pure)
  when the record is made, and a record that no consumer refuses is not used. (So
  ``activity`` gets no ``foreign_type``: interactions, its only reader, passes event
  types it does not know and its apply ignores them, so they are never dead-lettered.)
* ``nul_in_error`` (``notifications`` only): valid preferences naming a kind with a NUL
  in it. notifications rejects it quoting the kind, so its dead letter's error holds a
  NUL; that once stopped the dead letters read model for good;
* a ``.dlq`` topic has no dead-letter topic of its own: its one reader (dead_letters)
  reads it raw and lists whatever it finds. A ``headerless`` record there must show up
  in the dead letters read model as a letter of projector ``?`` at that .dlq position,
  and nowhere else; a ``forged_headers`` one (dead-letter headers with numbers that fit
  no column and a NUL in the projector's name) likewise, under the projector it names.

Every copy in the ``<topic>.dlq`` topics and every row of the read model must belong
to an injected record: anything else is a good record that was dead-lettered.

Run: ``python -m ops.chaos.poison --seconds 60 --users 20`` (JSON on the last line).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from core.codec import AvroCodec, CodecError, default_codec
from core.events import Event, headers_dict
from core.topics import ALL_TOPICS, TopicSpec
from ops.chaos.load import ADMIN_EMAIL, PASSWORD, Client, Recorder, Workload
from ops.chaos.stack import Stack
from projections import dead_letters as dl
from projections.base import Envelope
from projections.registry import serving
from streams.embedded import EmbeddedLog
from streams.log import LogRecord, OutgoingRecord, partition_for

TARGET = "100 % dead-lettered, lag returns to 0"
DECODE_KINDS = ("not_avro", "unknown_fingerprint", "truncated", "trailing_bytes")
DOMAIN_KINDS = ("domain", "foreign_type")
DLQ_KINDS = ("headerless", "forged_headers")
#: poison that once stopped the dead letters read model for good (a NUL in the error
#: text notifications writes when it rejects an unknown kind), on the topic it starts on
CHAIN_KINDS = {"notifications": ("nul_in_error",)}
#: what a forged dead-letter header names as the projector, and how the read model lists it
FORGED_PROJECTOR = "chaos\x00forged"
FORGED_LISTED_AS = "chaos\ufffdforged"
#: valid events put on a topic that does not carry them (no user id, so a consumer that
#: judges only the fields it knows cannot mistake them for its own)
FOREIGN_TYPES = ("RankingProfileSet", "ExperimentSet")
#: acknowledged writes are counted per interval of this many seconds
INTERVAL_S = 5.0
#: lists in the result are cut to this many items (the counts stay exact)
SHOWN = 30


@dataclass(frozen=True, slots=True)
class Poison:
    kind: str
    topic: str
    partition: int
    offset: int
    #: projectors that must dead-letter it (empty on a .dlq topic: listed, not forwarded)
    expect: tuple[str, ...]
    reason: str
    #: on a .dlq topic: the projector the read model lists it under
    listed_as: str = "?"

    @property
    def where(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


@dataclass(frozen=True, slots=True)
class Recipe:
    """A poison record before it has a position."""

    kind: str
    topic: str
    partition: int
    record: OutgoingRecord
    expect: tuple[str, ...]
    reason: str
    listed_as: str = "?"


# -- making poison ----------------------------------------------------------------


def _value(schema: Any, names: dict[str, Any], text: str, number: int) -> Any:
    """A value of an Avro schema with every string ``text`` and every number ``number``:
    empty ids and negative counts break a rule in nearly every event type."""
    if isinstance(schema, list):
        return _value(schema[0], names, text, number)
    if isinstance(schema, str):
        if schema in names:
            return _value(names[schema], names, text, number)
        prim = {"string": text, "bytes": text.encode(), "int": number, "long": number,
                "float": float(number), "double": float(number), "boolean": False,
                "null": None}  # fmt: skip
        return prim[schema]
    kind = schema["type"]
    if schema.get("logicalType", "").startswith("timestamp"):
        return datetime(2026, 1, 1, tzinfo=UTC)
    if kind in ("record", "enum", "fixed"):
        names[schema["name"]] = schema
    if kind == "record":
        return {f["name"]: _value(f["type"], names, text, number) for f in schema["fields"]}
    if kind == "enum":
        return schema["symbols"][0]
    if kind == "fixed":
        return b"\0" * schema["size"]
    if kind == "array":
        return []
    if kind == "map":
        return {}
    return _value(kind, names, text, number)


def bad_payload(codec: AvroCodec, event_type: str) -> dict[str, Any]:
    payload: dict[str, Any] = _value(codec.current(event_type).parsed, {}, "", -1)
    return payload


class Maker:
    """Poison recipes for every topic, each checked against what it must become before it
    is used: decode kinds must fail the codec, domain kinds must decode and be refused by
    at least one consuming projector."""

    def __init__(self, seed: int = 21, codec: AvroCodec | None = None) -> None:
        self.codec = codec or default_codec()
        self.rnd = random.Random(seed)
        self._keys: dict[tuple[int, int], list[bytes]] = {}
        self.n = 0

    def key_for(self, partitions: int, partition: int) -> bytes:
        """A key the log's partitioner puts in ``partition``."""
        pool = self._keys.setdefault((partitions, partition), [])
        if not pool:
            i = 0
            while len(pool) < 8:
                k = f"chaos-poison-{partitions}-{i}".encode()
                if partition_for(k, partitions) == partition:
                    pool.append(k)
                i += 1
        return pool[self.n % len(pool)]

    def kinds(self, topic: TopicSpec) -> tuple[str, ...]:
        if not topic.event_types:
            return DLQ_KINDS
        domain = tuple(k for k in DOMAIN_KINDS if self._domain_event(topic, k) is not None)
        # the chain kind first: with kinds turning over by topic index, that puts it in
        # the first round, where the short run reaches it
        return CHAIN_KINDS.get(topic.name, ()) + DECODE_KINDS + domain

    def _domain_event(
        self, topic: TopicSpec, kind: str, key: bytes = b"k"
    ) -> tuple[str, dict[str, Any]] | None:
        if kind == "nul_in_error":
            user = key.decode()
            return "NotificationPreferencesSet", {
                "user_id": user, "kinds": {"chaos\x00kind": True}, "digest": None,
            }  # fmt: skip
        if kind == "foreign_type":
            for other in FOREIGN_TYPES:
                if other in topic.event_types:
                    continue
                payload = bad_payload(self.codec, other)
                if self.refusers(topic.name, other, payload, b"k", ()):
                    return other, payload
            return None
        # the topic's own types: the first that a consumer refuses when its fields are empty
        for et in topic.event_types:
            payload = bad_payload(self.codec, et)
            if self.refusers(topic.name, et, payload, b"k", ()):
                return et, payload
        return None

    @staticmethod
    def refusers(
        topic: str, event_type: str, payload: dict[str, Any], key: bytes, headers: Any
    ) -> tuple[str, ...]:
        env = Envelope(topic, 0, 0, key.decode(), event_type, payload, headers, 0)
        out = []
        for p in serving(topic):
            if topic in getattr(p, "raw_topics", ()):
                continue
            try:
                p.check(env)
            except Exception:  # the pipeline rejects on any exception a check raises
                out.append(p.name)
        return tuple(sorted(out))

    def make(self, topic: TopicSpec, kind: str, partition: int) -> Recipe:
        self.n += 1
        key = self.key_for(topic.partitions, partition)
        marker = (("chaos_poison", kind.encode()),)
        if kind in DLQ_KINDS:
            value = b"\x00chaos poison in a dead-letter topic \xff" + self.rnd.randbytes(8)
            headers: tuple[tuple[str, bytes], ...] = marker
            listed_as = "?"
            if kind == "forged_headers":
                # numbers that fit no column and a NUL in the projector's name; the
                # offset stays unique, so each one keeps a row of its own
                headers += (
                    ("dlq_projector", FORGED_PROJECTOR.encode()),
                    ("dlq_partition", b"99999999999"),
                    ("dlq_offset", str(self.n).encode()),
                    ("dlq_error", b"forged \x00 by the chaos harness"),
                )
                listed_as = FORGED_LISTED_AS
            record = OutgoingRecord(key, value, headers)
            return Recipe(kind, topic.name, partition, record, (), "", listed_as)
        consumers = self._consumers(topic.name)
        if kind in DECODE_KINDS:
            value = self._undecodable(topic, kind)
            try:
                self.codec.decode(value)
            except CodecError:
                pass
            else:
                raise AssertionError(f"{kind} poison for {topic.name} decodes")
            headers = (("event_type", b"ChaosPoison"), *marker)
            return Recipe(
                kind, topic.name, partition, OutgoingRecord(key, value, headers), consumers,
                "decode",
            )  # fmt: skip
        found = self._domain_event(topic, kind, key)
        if found is None:
            raise ValueError(f"no {kind} poison for {topic.name}")
        event_type, payload = found
        event = Event(event_type, key.decode(), payload, producer="chaos-poison")
        value = self.codec.encode(event_type, payload)
        headers = (*event.headers(), *marker)
        decoded_type, decoded = self.codec.decode(value)
        refusing = self.refusers(topic.name, decoded_type, decoded, key, headers)
        if not refusing:
            raise AssertionError(f"{kind} poison for {topic.name} is refused by nobody")
        return Recipe(
            kind, topic.name, partition, OutgoingRecord(key, value, headers), refusing, "rejected"
        )

    @staticmethod
    def _consumers(topic: str) -> tuple[str, ...]:
        return tuple(
            sorted(p.name for p in serving(topic) if topic not in getattr(p, "raw_topics", ()))
        )

    def _undecodable(self, topic: TopicSpec, kind: str) -> bytes:
        et = topic.event_types[self.n % len(topic.event_types)]
        good = self.codec.encode(et, bad_payload(self.codec, et))
        header, body = good[:10], good[10:]
        if kind == "not_avro":
            return self.rnd.choice((b"", b"{}", b'{"event": "json, not avro"}')) + b"\x00\xff"
        if kind == "unknown_fingerprint":
            while True:  # 8 random bytes name a released schema once in 2**64 tries
                fake = b"\xc3\x01" + self.rnd.randbytes(8)
                try:
                    self.codec.writer_of(fake)
                except CodecError:
                    return fake + body
        if kind == "truncated":
            # a body that ends early: even an event of one short field loses a byte
            return header + body[: max(0, len(body) // 2 - 1)] if len(body) > 1 else header
        if kind == "trailing_bytes":
            return good + b"\x00\x01\x02"
        raise ValueError(kind)


def schedule(topics: tuple[TopicSpec, ...], maker: Maker) -> Iterator[tuple[TopicSpec, str, int]]:
    """(topic, kind, partition) forever: every topic once per round, kinds and partitions
    turning over from round to round, so a short run still reaches every topic."""
    kinds = {t.name: maker.kinds(t) for t in topics}
    r = 0
    while True:
        for i, t in enumerate(topics):
            ks = kinds[t.name]
            # kinds turn over across topics too, so the first round has every kind
            yield t, ks[(r + i) % len(ks)], (r // len(ks) + r) % t.partitions
        r += 1


# -- injecting -------------------------------------------------------------------


@dataclass
class Injector:
    log: EmbeddedLog
    maker: Maker
    rate: float
    #: at least this many records over the run, whatever the load's write rate
    floor: int
    seconds: float
    injected: list[Poison] = field(default_factory=list)
    plan: Iterator[tuple[TopicSpec, str, int]] | None = None

    async def run(self, acked: Any, stop: asyncio.Event, tick: float = 0.5) -> None:
        """Keep the injected count at ``rate`` x acknowledged writes (and on pace for the
        floor) until ``stop``; then make up the floor."""
        self.plan = self.plan or schedule(ALL_TOPICS, self.maker)
        t0 = time.monotonic()
        while not stop.is_set():
            elapsed = time.monotonic() - t0
            due = max(int(self.rate * acked()), int(self.floor * min(1.0, elapsed / self.seconds)))
            if due > len(self.injected):
                await self.inject(due - len(self.injected))
            try:
                await asyncio.wait_for(stop.wait(), tick)
            except TimeoutError:
                pass
        if self.floor > len(self.injected):
            await self.inject(self.floor - len(self.injected))

    async def inject(self, n: int) -> None:
        assert self.plan is not None
        by_topic: dict[str, list[Recipe]] = defaultdict(list)
        for _ in range(n):
            topic, kind, partition = next(self.plan)
            by_topic[topic.name].append(self.maker.make(topic, kind, partition))
        for topic, recipes in by_topic.items():
            positions = await self.log.append_batch(topic, [r.record for r in recipes])
            for r, pos in zip(recipes, positions, strict=True):
                assert pos.partition == r.partition, (r, pos)
                self.injected.append(
                    Poison(
                        r.kind, topic, pos.partition, pos.offset, r.expect, r.reason, r.listed_as
                    )  # fmt: skip
                )


# -- checking --------------------------------------------------------------------


async def read_all(log: EmbeddedLog, topic: str) -> list[LogRecord]:
    out: list[LogRecord] = []
    for partition in range(log.partitions(topic)):
        offset = 0
        while True:
            page = await log.read(topic, partition, offset, 5000)
            out += page
            if len(page) < 5000:
                break
            offset = page[-1].offset + 1
    return out


async def letters(conninfo: str) -> list[dict[str, Any]]:
    """Every row of the dead letters read model, through its own query (as the admin API
    and `mgw dlq list --state all --include-purged` read it)."""
    f = dl.LetterFilter(state="all", include_purged=True)
    out: list[dict[str, Any]] = []
    after = None
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        while True:
            page = await dl.list_letters(conn, f, 500, after)
            out += page
            if len(page) < 500:
                return out
            after = page[-1]["cursor_key"]


def verify(
    injected: list[Poison], copies: list[LogRecord], rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """Match the dead-letter topics' copies and the read model against the expectation."""
    by_where = {(p.topic, p.partition, p.offset): p for p in injected}
    # what the dead-letter topics hold: (projector, original position) -> copies
    in_topic: Counter[tuple[str, str, int, int]] = Counter()
    reasons: dict[tuple[str, str, int, int], str] = {}
    wrong: list[str] = []
    for c in copies:
        h = headers_dict(c.headers)
        try:
            k = (h["dlq_projector"], h["dlq_topic"], int(h["dlq_partition"]), int(h["dlq_offset"]))
        except (KeyError, ValueError):
            k = ("?", c.topic, c.partition, c.offset)
        if (c.topic, c.partition, c.offset) in by_where:
            continue  # a record injected into a .dlq topic: checked from the read model
        in_topic[k] += 1
        reasons[k] = h.get("dlq_reason", "")
        if k[1:] not in by_where:
            wrong.append(f"{k[0]}@{k[1]}:{k[2]}:{k[3]} ({reasons[k]}: {h.get('dlq_error', '')})")
    in_model: dict[tuple[str, str, int, int], dict[str, Any]] = {}
    listed: dict[tuple[str, int, int], dict[str, Any]] = {}
    for r in rows:
        in_model[(r["projector"], r["topic"], r["partition"], r["offset"])] = r
        listed[(r["dlq_topic"], r["dlq_partition"], r["dlq_offset"])] = r

    missing: list[str] = []
    unexpected: list[str] = []
    wrong_reason: list[str] = []
    done = 0
    for p in injected:
        ok = True
        if not p.expect:  # poison in a .dlq topic: listed once, as it is
            row = listed.get((p.topic, p.partition, p.offset))
            if row is None or row["projector"] != p.listed_as:
                missing.append(f"{p.kind} {p.where} not listed in the read model")
                ok = False
            done += ok
            continue
        for proj in p.expect:
            k = (proj, p.topic, p.partition, p.offset)
            if not in_topic.get(k):
                missing.append(f"{p.kind} {p.where} by {proj}: not in {p.topic}.dlq")
                ok = False
            if k not in in_model:
                missing.append(f"{p.kind} {p.where} by {proj}: not in the read model")
                ok = False
            elif reasons.get(k, in_model[k]["reason"]) != p.reason:
                wrong_reason.append(f"{p.kind} {p.where} by {proj}: {reasons.get(k)}")
        done += ok
    expected = {(proj, p.topic, p.partition, p.offset) for p in injected for proj in p.expect}
    for k in in_topic:
        if k[1:] in by_where and k not in expected:
            unexpected.append(f"{k[0]}@{k[1]}:{k[2]}:{k[3]} ({reasons[k]})")
    dlq_positions = {(p.topic, p.partition, p.offset) for p in injected if not p.expect}
    for k, r in in_model.items():
        if k[1:] in by_where or (r["dlq_topic"], r["dlq_partition"], r["dlq_offset"]) in (
            dlq_positions
        ):
            continue
        wrong.append(f"{r['id']} in the read model ({r['reason']}: {r['error']})")
    return {
        "poison_dead_lettered": done,
        "expected_letters": len(expected) + len(dlq_positions),
        "dlq_topic_copies": sum(in_topic.values()),
        "read_model_rows": len(rows),
        "duplicate_copies": sum(n - 1 for n in in_topic.values() if n > 1),
        "missing_count": len(missing),
        "missing": missing[:SHOWN],
        "wrongly_dead_lettered_count": len(wrong),
        "wrongly_dead_lettered": wrong[:SHOWN],
        "unexpected_letters_count": len(unexpected),
        "unexpected_letters": unexpected[:SHOWN],
        "wrong_reason_count": len(wrong_reason),
        "wrong_reason": wrong_reason[:SHOWN],
    }


async def total_lag(http: httpx.AsyncClient, base: str) -> int | None:
    try:
        projectors = (await http.get(f"{base}/ready")).json().get("projectors") or {}
    except (httpx.HTTPError, ValueError):
        return None
    lags = [v.get("lag") for v in projectors.values() if isinstance(v, dict)]
    return sum(lags) if lags and None not in lags else None


def cli_ids(stack: Stack, limit: int) -> set[str] | str:
    """The ids `mgw dlq list` shows (every state, purged too), or why it failed: the
    operator's view must agree with the read model."""
    done = stack.mgw("dlq", "list", "--json", "--no-progress", "--state", "all",
                     "--include-purged", "--limit", str(limit))  # fmt: skip
    if done.returncode != 0:
        return f"exit {done.returncode}: {done.stderr[-500:]}"
    return {str(x["id"]) for x in json.loads(done.stdout)["items"]}


async def wait_lag_zero(base: str, timeout: float) -> tuple[float | None, dict[str, Any]]:
    """Seconds until every projector's lag reads 0 in one /ready answer (None: not within
    ``timeout``), and the last projectors section seen."""
    t0 = time.monotonic()
    last: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=10) as http:
        while time.monotonic() - t0 < timeout:
            try:
                body = (await http.get(f"{base}/ready")).json()
            except (httpx.HTTPError, ValueError):
                await asyncio.sleep(0.5)
                continue
            last = body
            projectors = body.get("projectors") or {}
            lags = [v.get("lag") for v in projectors.values() if isinstance(v, dict)]
            if lags and all(lag == 0 for lag in lags) and "error" not in projectors:
                return time.monotonic() - t0, last
            await asyncio.sleep(0.5)
    return None, last


# -- the scenario ----------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=60.0, help="of mixed load (default 60)")
    p.add_argument("--users", type=int, default=20, help="simulated users (default 20)")
    p.add_argument("--titles", type=int, default=100, help="catalog titles seeded (default 100)")
    p.add_argument(
        "--rate", type=float, default=0.01,
        help="poison records per acknowledged write (default 0.01: 1 %%)",
    )  # fmt: skip
    p.add_argument(
        "--min-per-topic", type=int, default=1,
        help="at least this many poison records per topic, spread over the run, when the "
        "load writes too little for the rate to reach every topic (default 1)",
    )  # fmt: skip
    p.add_argument("--lag-timeout", type=float, default=180.0,
                   help="seconds to wait for lag 0 after the load (default 180)")  # fmt: skip
    p.add_argument("--seed", type=int, default=21)
    p.add_argument("--data-dir", type=Path, default=None,
                   help="the stack's data dir (kept); default: a temp dir, removed")  # fmt: skip


def _flow(samples: list[tuple[float, int]], seconds: float) -> list[int]:
    """Acknowledged writes per INTERVAL_S, from (seconds since start, total acked) samples."""
    out: list[int] = []
    prev, edge = 0, INTERVAL_S
    for t, n in samples:
        while t >= edge and edge <= seconds + 1e-9:
            out.append(n - prev)
            prev, edge = n, edge + INTERVAL_S
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    own_dir = args.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="mgw-poison-")) if own_dir else args.data_dir
    stack = Stack(
        data_dir,
        env={"MGW_BOOTSTRAP_ADMIN_EMAIL": ADMIN_EMAIL, "MGW_BOOTSTRAP_ADMIN_PASSWORD": PASSWORD},
    )
    try:
        await asyncio.to_thread(stack.start)
        return await _scenario(stack, args)
    finally:
        await asyncio.to_thread(stack.shutdown_services)
        if own_dir:
            shutil.rmtree(data_dir, ignore_errors=True)


async def _scenario(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    conninfo = f"host={stack.pgdata} dbname=postgres user=postgres"
    log = await EmbeddedLog(conninfo, pool_size=2).open()
    client = Client(stack.base, Recorder())
    try:
        titles = await client.seed_titles(args.titles)
        users = await client.sign_up("poison", args.users)
        work = Workload(client, users, titles, seed=args.seed)
        floor = args.min_per_topic * len(ALL_TOPICS)
        inj = Injector(log, Maker(args.seed), args.rate, floor, args.seconds)
        stop = asyncio.Event()
        samples: list[tuple[float, int]] = []
        t0 = time.monotonic()

        lags: list[int] = []

        async def sample() -> None:
            while not stop.is_set():
                samples.append((time.monotonic() - t0, work.ledger.acked_writes()))
                try:
                    await asyncio.wait_for(stop.wait(), 0.5)
                except TimeoutError:
                    pass

        async def sample_lag() -> None:
            # the projectors' backlog while poison arrives: bounded, not growing
            async with httpx.AsyncClient(timeout=10) as http:
                while not stop.is_set():
                    lag = await total_lag(http, stack.base)
                    if lag is not None:
                        lags.append(lag)
                    try:
                        await asyncio.wait_for(stop.wait(), 2.0)
                    except TimeoutError:
                        pass

        async def load() -> None:
            try:
                await work.run(args.seconds)
            finally:
                samples.append((time.monotonic() - t0, work.ledger.acked_writes()))
                stop.set()

        await asyncio.gather(
            load(), sample(), sample_lag(), inj.run(work.ledger.acked_writes, stop)
        )
        load_s = time.monotonic() - t0
        lag_s, ready = await wait_lag_zero(stack.base, args.lag_timeout)
        copies = [
            r for t in ALL_TOPICS if t.event_types for r in await read_all(log, t.dead_letter.name)
        ]
        rows = await letters(conninfo)
        checked = verify(inj.injected, copies, rows)
        shown = await asyncio.to_thread(cli_ids, stack, len(rows) + 100)
    finally:
        await client.close()
        await log.close()

    summary = client.rec.summary()
    flow = _flow(samples, load_s)
    injected = Counter(p.topic for p in inj.injected)
    kinds = Counter(p.kind for p in inj.injected)
    acked = work.ledger.acked_writes()
    n = len(inj.injected)
    pct = 100.0 * checked["poison_dead_lettered"] / n if n else 0.0
    cli_agrees = isinstance(shown, set) and shown == {str(r["id"]) for r in rows}
    ok = (
        n > 0
        and all(injected[t.name] > 0 for t in ALL_TOPICS)
        and checked["missing_count"] == 0
        and checked["wrongly_dead_lettered_count"] == 0
        and checked["unexpected_letters_count"] == 0
        and checked["wrong_reason_count"] == 0
        and cli_agrees
        and lag_s is not None
        and summary["errors"] == 0
        and bool(flow)
        and all(x > 0 for x in flow)
    )
    return {
        "scenario": "poison",
        "seconds": args.seconds,
        "users": args.users,
        "rate": args.rate,
        "load_seconds": round(load_s, 1),
        "requests": summary["requests"],
        "errors": summary["errors"],
        "acked_writes": acked,
        "acked_writes_per_interval": flow,
        "interval_s": INTERVAL_S,
        "injected_total": n,
        "injected_vs_acked": round(n / acked, 4) if acked else None,
        "injected": {t.name: injected[t.name] for t in ALL_TOPICS},
        "injected_by_kind": dict(sorted(kinds.items())),
        # who must dead-letter an undecodable record on each topic (one letter each)
        "consumers": {t.name: Maker._consumers(t.name) for t in ALL_TOPICS if t.event_types},
        "dead_lettered_pct": round(pct, 2),
        **checked,
        "mgw_dlq_list_agrees": cli_agrees if isinstance(shown, set) else shown,
        "lag_during": {
            "samples": len(lags),
            "max": max(lags, default=None),
            "last": lags[-1] if lags else None,
        },  # fmt: skip
        "lag_to_zero_s": round(lag_s, 1) if lag_s is not None else None,
        "lag_at_end": {
            k: v.get("lag") if isinstance(v, dict) else v
            for k, v in (ready.get("projectors") or {}).items()
        },
        "stopped_projectors": ready.get("stopped_projectors", {}),
        "target": TARGET,
        "pass": ok,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ops.chaos.poison", description=__doc__.split("\n")[0]
    )
    add_arguments(p)
    result = asyncio.run(run(p.parse_args(argv)))
    print(json.dumps(result))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
