"""`mgw checksum [PROJECTOR...]`: one stable digest per projection, the one `mgw replay`,
`mgw rebuild` and the replay tests compare. Two replicas, or a projection before and
after a rebuild, agree exactly when their digests do."""

from __future__ import annotations

import json
import sys

from tqdm import tqdm

from core.settings import Settings
from mgw.platform import open_platform
from projections import maintenance
from projections.registry import PROJECTORS, by_name


async def run_checksum(
    settings: Settings, names: list[str], *, as_json: bool = False, progress: bool = True
) -> int:
    try:
        projectors = [by_name(n) for n in names] if names else list(PROJECTORS)
    except KeyError as exc:
        print(f"mgw checksum: {exc.args[0]}", file=sys.stderr)
        return 2
    sums: dict[str, str] = {}
    async with open_platform(settings, with_vectors=False, pool_size=2) as pf:
        for p in tqdm(projectors, desc="checksum", unit="projection", disable=not progress,
                      file=sys.stderr):  # fmt: skip
            sums[p.name] = await maintenance.checksum(pf.stores, p)
    if as_json:
        print(json.dumps(sums))
    else:
        width = max(len(n) for n in sums)
        for name, digest in sums.items():
            print(f"{name:<{width}}  {digest}")
    return 0
