"""`mgw chaos WHAT [OPTIONS]`: the reliability harness from the command line.

Each run prints progress on stderr and one JSON object as its last stdout line; it
exits 0 when every target was met, 1 when one was missed (docs/reliability.md)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import signal
import sys
from typing import Any

#: what to run -> (module, one line for --help); named here, not imported, so `mgw --help`
#: loads nothing of the harness
RUNS: dict[str, tuple[str, str]] = {
    "kill-up": ("ops.chaos.faults", "kill -9 the whole `mgw up` mid-load, start it again"),
    "kill-worker": ("ops.chaos.faults", "kill -9 one projector process mid-batch"),
    "restart-db": ("ops.chaos.faults", "crash PostgreSQL (immediate stop), start it again"),
    "restart-redis": ("ops.chaos.faults", "stop Redis under load, start it again"),
    "restart-broker": ("ops.chaos.faults", "stop the Kafka broker, start it (--runtime kafka)"),
    "all": ("ops.chaos.faults", "every fault scenario of the runtime in turn"),
    "load": ("ops.chaos.loadtest", "mixed load of up to 500 users in steps: latency per route"),
    "soak": ("ops.chaos.soak", "hours-long (or --minutes) load: memory, descriptors, lag"),
    "poison": ("ops.chaos.poison", "poison records in every topic: all dead-lettered?"),
}


def register(sub: Any) -> None:
    lines = "\n".join(f"  {name:<15} {what}" for name, (_, what) in RUNS.items())
    p = sub.add_parser(
        "chaos",
        help="reliability harness: faults, load, soak, poison events",
        description=f"{__doc__}\n\nWHAT:\n{lines}\n\n`mgw chaos WHAT --help` for its options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("what", choices=list(RUNS), metavar="WHAT")
    p.add_argument("options", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    module_name, what = RUNS[args.what]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"mgw chaos {args.what}", description=what)
    module.add_arguments(parser)
    argv = list(args.options)
    if module_name == "ops.chaos.faults":
        argv = [args.what, *argv]
        # the scenario is already named: hide the positional from this command's help
        for action in parser._actions:
            if action.dest == "scenario":
                action.help = argparse.SUPPRESS
    opts = parser.parse_args(argv)
    # stopped from outside (a CI timeout, kill): unwind, so the stacks' finally blocks
    # stop the PostgreSQL and Redis daemons they started instead of orphaning them
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = asyncio.run(module.run(opts))
    print(json.dumps(result), flush=True)
    return 0 if passed(result) else 1


def passed(result: dict[str, Any]) -> bool:
    """Every target met, in whichever shape the run reports them: ``met`` (the fault
    rounds), ``pass`` (poison: one verdict) or errors and ``growth.pass`` (the soak).
    The load curve has no pass or fail: it is a measurement."""
    if isinstance(result.get("met"), dict):
        return all(result["met"].values())
    if isinstance(result.get("pass"), bool):
        return bool(result["pass"])
    growth = result.get("growth")
    if isinstance(growth, dict) and isinstance(growth.get("pass"), dict):
        return result.get("errors", 0) == 0 and all(growth["pass"].values())
    return True
