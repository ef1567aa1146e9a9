"""After a fault: is every acknowledged write visible, none applied twice, and does the
live state equal a fresh fold of the log?

Read through the API, as the user would, with the user's last consistency token, so a
projection still catching up is waited for rather than reported as a loss.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ops.chaos.load import Client, Ledger, User
from ops.chaos.stack import Stack

#: the projections the workload writes, compared against a fresh fold after each round
FOLDED = ("playback", "library")


@dataclass
class Findings:
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    #: a value visible that no request ever sent (corruption, or a mix-up of keys)
    foreign: list[str] = field(default_factory=list)
    checked: int = 0
    digest_equal: bool | None = None
    digests: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "foreign": len(self.foreign),
            "digest_equal": self.digest_equal,
            "digests": self.digests,
            "examples": (self.lost + self.duplicated + self.foreign)[:5],
        }


async def wait_caught_up(client: Client, timeout: float = 120) -> float:
    """Seconds until /ready reports every projector at lag 0 (TimeoutError past timeout)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        status, _, body = await client.call("ready", "GET", "/ready")
        if status == 200 and body and all(p["lag"] == 0 for p in body["projectors"].values()):
            return time.monotonic() - t0
        await asyncio.sleep(0.2)
    raise TimeoutError(f"projectors still lagging after {timeout:.0f} s")


async def _pages(client: Client, u: User, path: str, limit: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    headers = dict(u.headers)
    if u.consistency:
        headers["X-Consistency-Token"] = u.consistency
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        for _ in range(30):  # a read waiting on its token may answer 503: ask again
            status, _, body = await client.call("verify", "GET", path, params=params,
                                                headers=headers)  # fmt: skip
            if status == 200:
                break
            if status == 401:  # the token expired over a long soak: sign in again
                u.token = await client.sign_in(u.email) or u.token
                headers["Authorization"] = f"Bearer {u.token}"
            await asyncio.sleep(1)
        else:
            raise RuntimeError(f"{path} for {u.email}: {status} {body}")
        items += body["items"]
        cursor = body.get("next_cursor")
        if not cursor:
            return items


async def check_acknowledged(client: Client, users: list[User], ledger: Ledger) -> Findings:
    f = Findings()
    by_id = {u.email: u for u in users}
    for uid, u in by_id.items():
        cw = await _pages(client, u, "/v1/me/continue-watching", 100)
        seen = Counter(i["content_id"] for i in cw)
        f.duplicated += [f"continue-watching {uid} {c} x{n}" for c, n in seen.items() if n > 1]
        pos = {i["content_id"]: float(i["position_s"]) for i in cw}
        for (kuid, content), key in ledger.playback.items():
            if kuid != uid or not key.attempted:
                continue
            f.checked += 1
            got = pos.get(content)
            if key.acked is not None and (got is None or got < key.acked):
                f.lost.append(f"playback {uid} {content}: acked {key.acked}, visible {got}")
            elif got is not None and got not in key.attempted:
                f.foreign.append(f"playback {uid} {content}: {got} was never sent")
        wl = await _pages(client, u, "/v1/me/watchlist", 200)
        seen = Counter(i["content_id"] for i in wl)
        f.duplicated += [f"watchlist {uid} {c} x{n}" for c, n in seen.items() if n > 1]
        for (kuid, content), w in ledger.watch.items():
            if kuid != uid:
                continue
            f.checked += 1
            there = content in seen
            if w.remove == "acked" and there:
                f.lost.append(f"watchlist {uid} {content}: removal acked, still listed")
            elif w.add == "acked" and w.remove is None and not there:
                f.lost.append(f"watchlist {uid} {content}: add acked, not listed")
            elif there and w.add is None:
                f.foreign.append(f"watchlist {uid} {content}: listed, never added")
    return f


def _checksums(stack: Stack) -> dict[str, str]:
    out = stack.mgw("checksum", "--json", "--no-progress", *FOLDED)
    if out.returncode != 0:
        raise RuntimeError(f"mgw checksum: {out.stderr.strip()[-500:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def compare_with_fresh_fold(stack: Stack) -> tuple[bool, dict[str, Any]]:
    """The live projections' digests, then each rebuilt from the whole log (blue/green,
    beside the live one, while `mgw up` keeps serving) and switched in: equal digests
    mean what the faults left behind is exactly what a fresh replay builds."""
    before = _checksums(stack)
    for name in FOLDED:
        out = stack.mgw("rebuild", name, "--grace", "0", "--json", "--no-progress")
        if out.returncode != 0:
            raise RuntimeError(f"mgw rebuild {name}: {out.stderr.strip()[-500:]}")
    after = _checksums(stack)
    return before == after, {"live": before, "fresh": after}
