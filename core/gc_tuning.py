"""Garbage-collector settings for processes that fold batches of events.

A batch of 10,000 events allocates a few hundred thousand small containers (payload
dicts, tuples, rows). CPython's cyclic collector then runs every 700 net allocations,
and each older-generation pass walks every object the process holds: the imported
modules, Faust's and the model's structures, the batch in flight. Measured on the
playback projector (bench/projection_throughput.py, py-spy): about a quarter of the
process's CPU went to those passes, charged to whatever line allocated at the moment.

Events hold no reference cycles, so the remedy is cheap and standard: move everything
alive after start-up into the permanent generation (``gc.freeze``), so the passes no
longer walk it, and let the youngest generation fill to ``GEN0`` objects before a pass.
Cycles are still collected; only less often.
"""

from __future__ import annotations

import gc

#: allocations (net) between youngest-generation passes (CPython's default is 700)
GEN0 = 20_000


def tune_for_batches() -> None:
    """Call once start-up is done (modules imported, stores open); calling again later
    freezes what has become long-lived since."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0, gen1, gen2)
