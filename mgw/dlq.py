"""`mgw dlq list|show|retry|skip|purge`: the dead-letter workbench
(docs/operations/dead-letters.md).

Every command first catches the ``dead_letters`` read model up with the log, in this
process: beside a running `mgw up` or worker that is safe (each batch locks the
projector's checkpoints, so the other one skips what this one applied), and it means a
command never answers from a stale view.

``retry`` re-applies the original record through its projector's own pipeline
(``ProjectionPipeline.reapply``): exactly once, however often it is retried, and the
outcome is appended as ``DeadLetterRetried``. ``skip`` appends ``DeadLetterSkipped``.
``purge`` appends ``DeadLettersPurged``, which hides what was resolved before it; the log
keeps everything.
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from core.events import unpack_headers
from core.ids import iso_z
from core.settings import Settings
from core.topics import OPS_DEAD_LETTERS
from mgw.platform import Platform, open_platform
from projections import dead_letters as dl
from projections.base import Projector
from projections.registry import by_name
from streams.log import InvalidToken, LogRecord, Position
from streams.processing import ProjectionPipeline
from streams.runner import ProjectorLoop

#: a page of `list`; retry and skip by filter walk every page
PAGE = 200


@dataclass(frozen=True, slots=True)
class Output:
    as_json: bool = False
    progress: bool = True

    def bar(self, total: int | None, desc: str) -> tqdm[Any]:
        return tqdm(total=total, desc=desc, unit="rec", file=sys.stderr,
                    disable=not self.progress, leave=False)  # fmt: skip

    def emit(self, obj: Any, text: Callable[[], str]) -> None:
        print(json.dumps(obj, default=dl.plain) if self.as_json else text())


def operator() -> str:
    """Who a decision is recorded as when ``--by`` is not given."""
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in a bare container
        return "cli"


@asynccontextmanager
async def workbench(settings: Settings, out: Output) -> AsyncIterator[Platform]:
    async with open_platform(settings, with_vectors=False, pool_size=4) as pf:
        await pf.log.ensure_topics([OPS_DEAD_LETTERS, OPS_DEAD_LETTERS.dead_letter])
        await catch_up(pf, out)
        yield pf


async def catch_up(pf: Platform, out: Output) -> None:
    loop = ProjectorLoop(
        ProjectionPipeline(dl.DeadLettersProjector(), pf.stores, pf.log), pf.log, linger_ms=0
    )
    with out.bar(None, "reading dead letters") as bar:
        await loop.catch_up(lambda r: bar.update(r.applied + r.skipped + r.dead_letters))


# -- list and show -------------------------------------------------------------


async def list_letters(
    pf: Platform, f: dl.LetterFilter, limit: int | None = None
) -> list[dict[str, Any]]:
    """Every matching letter (``limit``: at most that many), oldest first."""
    out: list[dict[str, Any]] = []
    after = None
    async with pf.stores.pg.connection() as conn:
        while limit is None or len(out) < limit:
            want = PAGE if limit is None else min(PAGE, limit - len(out))
            page = await dl.list_letters(conn, f, want, after)
            out += page
            if len(page) < want:
                break
            after = page[-1]["cursor_key"]
    return out


def table(letters: Sequence[dict[str, Any]]) -> str:
    if not letters:
        return "no dead letters match"
    lines = [f"{'ID':<44} {'REASON':<8} {'STATE':<8} {'TRIES':>5}  {'DEAD AT':<20} ERROR"]
    for x in letters:
        dead = iso_z(x["dead_at"])[:19] + "Z"
        error = x["error"].splitlines()[0][:60] if x["error"] else ""
        lines.append(
            f"{x['id']:<44} {x['reason']:<8} {x['state']:<8} {x['attempts']:>5}  {dead:<20} {error}"
        )
    lines.append(f"{len(letters)} dead letter(s)")
    return "\n".join(lines)


async def find(pf: Platform, raw_id: str) -> dict[str, Any] | None:
    projector, where = dl.parse_letter_id(raw_id)
    async with pf.stores.pg.connection() as conn:
        return await dl.get_letter(conn, projector, where)


def show_text(d: dict[str, Any]) -> str:
    lines = [
        f"dead letter {d['id']}",
        f"  state     {d['state']} after {d['attempts']} retr{'y' if d['attempts'] == 1 else 'ies'}"
        + (" (purged from view)" if d["purged"] else ""),
        f"  reason    {d['reason']}: {d['error']}",
        f"  original  {d['topic']}:{d['partition']}:{d['offset']} key {d['key']!r}",
        f"  copy      {d['dlq_topic']}:{d['dlq_partition']}:{d['dlq_offset']}"
        f" at {iso_z(d['dead_at'])}",
        f"  event     {d['event_type'] or '(does not decode: ' + str(d['decode_error']) + ')'}",
    ]
    if d["payload"] is not None:
        body = json.dumps(d["payload"], default=dl.plain, indent=2, sort_keys=True)
        lines += ["  payload", *("    " + ln for ln in body.splitlines())]
    lines.append("  headers")
    lines += [f"    {k}: {v}" for k, v in sorted(d["headers"].items())]
    lines.append("  decisions" if d["decisions"] else "  decisions none yet")
    for x in d["decisions"]:
        outcome = f" -> {x['outcome']}" if x["outcome"] else ""
        why = f" ({x['error']})" if x["error"] else ""
        note = f" note {x['note']!r}" if x["note"] else ""
        lines.append(
            f"    {iso_z(x['decided_at'])} {x['decision']}{outcome}{why}"
            f" by {x['decided_by'] or '?'}{note}"
        )
    return "\n".join(lines)


# -- retry, skip, purge --------------------------------------------------------


async def retry(
    pf: Platform,
    letter: dict[str, Any],
    *,
    by: str | None,
    note: str = "",
    projectors: Callable[[str], Projector] = by_name,
) -> dict[str, Any]:
    """Re-apply one dead letter through its projector's pipeline and record the outcome
    as ``DeadLetterRetried``. ``projectors`` resolves the projector by name (a test hands
    in a fixed one)."""
    where = Position(letter["topic"], letter["partition"], letter["offset"])
    record = await original(pf, letter)
    pipeline = ProjectionPipeline(projectors(letter["projector"]), pf.stores, pf.log)
    done = await pipeline.reapply(record)
    event = dl.decision(
        "DeadLetterRetried", letter["projector"], where, by=by, note=note,
        outcome=done.outcome, error=done.error,
    )  # fmt: skip
    pos = await pf.publisher.publish(event)
    return {"id": letter["id"], "outcome": done.outcome, "error": done.error,
            "decision": pos.token()}  # fmt: skip


async def original(pf: Platform, letter: dict[str, Any]) -> LogRecord:
    """The record as the log holds it at its position; the .dlq copy (same key, value and
    headers) when retention has removed it."""
    got = await pf.log.read(letter["topic"], letter["partition"], letter["offset"], 1)
    if got and got[0].offset == letter["offset"]:
        return got[0]
    return LogRecord(
        letter["topic"], letter["partition"], letter["offset"], letter["key"],
        bytes(letter["value"]), unpack_headers(letter["headers"]),
        int(letter["dead_at"].timestamp() * 1000),
    )  # fmt: skip


async def skip(
    pf: Platform, letter: dict[str, Any], *, by: str | None, note: str = ""
) -> dict[str, Any]:
    if letter["state"] != "pending":
        return {"id": letter["id"], "outcome": f"already {letter['state']}", "decision": None}
    where = Position(letter["topic"], letter["partition"], letter["offset"])
    event = dl.decision("DeadLetterSkipped", letter["projector"], where, by=by, note=note)
    pos = await pf.publisher.publish(event)
    return {"id": letter["id"], "outcome": "skipped", "decision": pos.token()}


async def decide(
    pf: Platform,
    action: Callable[[dict[str, Any]], Any],
    ids: Sequence[str],
    f: dl.LetterFilter,
    out: Output,
    verb: str,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Apply ``action`` to the named letters, or to every pending one ``f`` matches."""
    missing: list[str] = []
    letters: list[dict[str, Any]] = []
    for raw in ids:
        found = await find(pf, raw)
        if found is None:
            missing.append(raw)
        else:
            letters.append(found)
    if not ids:
        letters = await list_letters(pf, f)
    results = []
    with out.bar(len(letters), verb) as bar:
        for letter in letters:
            results.append(await action(letter))
            bar.update(1)
    await catch_up(pf, out)  # so what is printed next (and the API) shows the decisions
    return results, missing


# -- the commands, as mgw/cli.py calls them ------------------------------------


async def run_list(settings: Settings, f: dl.LetterFilter, limit: int, out: Output) -> int:
    async with workbench(settings, out) as pf:
        letters = await list_letters(pf, f, limit)
    out.emit({"items": [dl.summary(x) for x in letters]}, lambda: table(letters))
    return 0


async def run_show(settings: Settings, raw_id: str, out: Output) -> int:
    try:
        dl.parse_letter_id(raw_id)
    except InvalidToken as exc:
        print(f"{raw_id!r}: {exc}", file=sys.stderr)
        return 2
    async with workbench(settings, out) as pf:
        letter = await find(pf, raw_id)
    if letter is None:
        print(f"no dead letter {raw_id} (see `mgw dlq list --state all`)", file=sys.stderr)
        return 1
    d = dl.detail(letter)
    out.emit(d, lambda: show_text(d))
    return 0


async def run_decide(
    settings: Settings,
    verb: str,
    ids: Sequence[str],
    f: dl.LetterFilter,
    out: Output,
    *,
    by: str | None,
    note: str,
    projectors: Callable[[str], Projector] = by_name,
) -> int:
    """``retry`` or ``skip`` the named letters, or every pending one the filter matches."""
    for raw in ids:
        try:
            dl.parse_letter_id(raw)
        except InvalidToken as exc:
            print(f"{raw!r}: {exc}", file=sys.stderr)
            return 2
    async with workbench(settings, out) as pf:

        async def act(letter: dict[str, Any]) -> Any:
            if verb == "retry":
                return await retry(pf, letter, by=by, note=note, projectors=projectors)
            return await skip(pf, letter, by=by, note=note)

        results, missing = await decide(pf, act, ids, f, out, verb)
    for raw in missing:
        print(f"no dead letter {raw}", file=sys.stderr)
    failed = [r for r in results if r["outcome"] == "failed"]

    def text() -> str:
        lines = [
            f"{r['id']}: {r['outcome']}" + (f" ({r['error']})" if r.get("error") else "")
            for r in results
        ]
        return "\n".join(lines or [f"nothing to {verb}"])

    out.emit({"results": results, "missing": missing}, text)
    return 1 if missing or failed else 0


async def run_purge(
    settings: Settings,
    topic: str | None,
    projector: str | None,
    out: Output,
    *,
    by: str | None,
    note: str,
) -> int:
    async with workbench(settings, out) as pf:
        hidden = await list_letters(
            pf, dl.LetterFilter(topic=topic, projector=projector, state="resolved")
        )
        pos = await pf.publisher.publish(
            dl.purged(topic=topic, projector=projector, by=by, note=note)
        )
        await catch_up(pf, out)
    out.emit(
        {"purged": len(hidden), "decision": pos.token()},
        lambda: (
            f"hid {len(hidden)} resolved dead letter(s) from view ({pos.token()});"
            " the log keeps them: `mgw dlq list --state all --include-purged`"
        ),
    )
    return 0
