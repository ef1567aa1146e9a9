"""Property tests for the pure sync domain (domain/sync): hybrid logical clock stamps,
last-writer-wins registers and observed-remove sets.

The OR-set tests model three devices that each keep a local replica, make adds and
removes against what that replica shows, and now and then pull another device's replica.
Every op a device makes is recorded with the ops it had seen (its causal past), so the
tests can state "no removed item comes back unless re-added after the removal" in terms
of what each remover actually knew."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.sync.hlc import MAX_SKEW_MS, ClockSkew, HybridClock, Stamp, device_stamp
from domain.sync.orset import ORElement, ORSet, Tag
from domain.sync.register import Register

PROPS = settings(max_examples=200, deadline=None)

WALL_MAX = 10**13 - 1
LOGICAL_MAX = 10**6 - 1

# ---------------------------------------------------------------------------------------
# Stamp
# ---------------------------------------------------------------------------------------

# any text a node id could be (no lone surrogates: the encoding must be UTF-8 bytes)
_chars = st.characters(codec="utf-8")
nodes_without_dot = st.text(st.characters(codec="utf-8", exclude_characters="."))
nodes_with_dot = st.builds(
    lambda a, b, c: f"{a}.{b}{c}",
    st.text(_chars, max_size=4),
    st.text(_chars, max_size=4),
    st.sampled_from(["", ".", "..", ".0", "0."]),
)
nodes = st.one_of(nodes_without_dot, nodes_with_dot, st.sampled_from(["a", "b", "a.b", ""]))
walls = st.one_of(st.integers(0, WALL_MAX), st.sampled_from([0, 1, 9, 10, WALL_MAX]))
logicals = st.one_of(st.integers(0, LOGICAL_MAX), st.sampled_from([0, 1, 9, 10, LOGICAL_MAX]))
stamps = st.builds(Stamp, walls, logicals, nodes)


@st.composite
def stamp_pairs(draw: st.DrawFn) -> tuple[Stamp, Stamp]:
    """Two stamps that often share a wall, a logical counter or a node (ties are where
    an order breaks), and sometimes differ by one."""
    a = draw(stamps)

    def near(value: int, top: int, fresh: st.SearchStrategy[int]) -> st.SearchStrategy[int]:
        return st.one_of(
            st.just(value), st.sampled_from([max(0, value - 1), min(top, value + 1)]), fresh
        )

    b = Stamp(
        draw(near(a.wall_ms, WALL_MAX, walls)),
        draw(near(a.logical, LOGICAL_MAX, logicals)),
        draw(st.one_of(st.just(a.node), st.just(a.node + "."), nodes)),
    )
    return (a, b) if draw(st.booleans()) else (b, a)


def _sign(x: Any, y: Any) -> int:
    return int(x > y) - int(x < y)


@PROPS
@given(stamp_pairs())
def test_stamp_text_order_is_stamp_order(pair: tuple[Stamp, Stamp]) -> None:
    a, b = pair
    assert _sign(a.encode(), b.encode()) == _sign(a, b)
    # "byte order": the same holds for the UTF-8 bytes a store would compare
    assert _sign(a.encode().encode(), b.encode().encode()) == _sign(a, b)


@PROPS
@given(st.lists(stamps, max_size=20))
def test_sorting_encoded_stamps_sorts_the_stamps(many: list[Stamp]) -> None:
    assert [Stamp.decode(t) for t in sorted(s.encode() for s in many)] == sorted(many)


@PROPS
@given(stamps)
def test_stamp_decode_inverts_encode(s: Stamp) -> None:
    text = s.encode()
    assert Stamp.decode(text) == s
    assert Stamp.decode(text).encode() == text


@PROPS
@given(st.builds(Stamp, walls, logicals, nodes_with_dot))
def test_a_node_with_dots_survives_the_round_trip(s: Stamp) -> None:
    assert "." in s.node
    assert Stamp.decode(s.encode()).node == s.node


@pytest.mark.parametrize(
    "text",
    ["1.000000.a", "0000000000001.0.a", "00000000000001.000000.a", "0000000000001.000000"],
)
def test_decode_refuses_text_that_is_not_a_stamp(text: str) -> None:
    with pytest.raises(ValueError):
        Stamp.decode(text)


@PROPS
@given(walls, st.integers(1, 50), nodes)
def test_ops_of_one_batch_keep_their_order(at_ms: int, n: int, device: str) -> None:
    batch = [device_stamp(at_ms, i, device) for i in range(n)]
    assert batch == [Stamp(at_ms, i, device) for i in range(n)]
    assert batch == sorted(batch)
    assert [s.encode() for s in batch] == sorted(s.encode() for s in batch)


# ---------------------------------------------------------------------------------------
# HybridClock
# ---------------------------------------------------------------------------------------

physical_times = st.integers(0, 10**12)


def _lt(x: Stamp, y: Stamp) -> bool:
    return (x.wall_ms, x.logical) < (y.wall_ms, y.logical)


@PROPS
@given(
    st.lists(
        st.one_of(
            # the physical clock: anywhere, or a small step (often backwards)
            physical_times,
            st.integers(-5, 5),
        ),
        min_size=1,
        max_size=60,
    )
)
def test_now_strictly_increases_whatever_the_physical_clock_does(steps: list[int]) -> None:
    clock = HybridClock("server")
    physical = 10**9
    issued: list[Stamp] = []
    for step in steps:
        physical = step if step > 5 else max(0, physical + step)
        stamp = clock.now(physical)
        assert stamp.node == "server"
        assert stamp.wall_ms >= physical  # never behind the physical clock
        if issued:
            assert _lt(issued[-1], stamp)
        issued.append(stamp)
    assert len({(s.wall_ms, s.logical) for s in issued}) == len(issued)


@st.composite
def clock_histories(draw: st.DrawFn) -> list[tuple[str, int, Stamp | None]]:
    """Local writes and remote stamps (within the allowed skew), physical time wandering."""
    events: list[tuple[str, int, Stamp | None]] = []
    physical = draw(physical_times)
    for _ in range(draw(st.integers(1, 40))):
        physical = max(0, physical + draw(st.integers(-1000, 1000)))
        if draw(st.booleans()):
            events.append(("now", physical, None))
        else:
            ahead = draw(st.one_of(st.integers(-(10**6), MAX_SKEW_MS), st.just(MAX_SKEW_MS)))
            remote = Stamp(
                max(0, physical + ahead),
                draw(st.integers(0, 1000)),
                draw(st.sampled_from(["phone", "tv"])),
            )
            events.append(("observe", physical, remote))
    return events


@PROPS
@given(clock_histories())
def test_now_sorts_after_everything_issued_or_observed(
    events: list[tuple[str, int, Stamp | None]],
) -> None:
    clock = HybridClock("server")
    high: Stamp | None = None  # the greatest (wall, logical) issued or observed so far
    highest_wall = 0  # the greatest physical time (of a write) or remote wall seen so far
    for kind, physical, remote in events:
        if kind == "observe":
            assert remote is not None
            clock.observe(remote, physical)
            highest_wall = max(highest_wall, remote.wall_ms)
            if high is None or _lt(high, remote):
                high = remote
            continue
        stamp = clock.now(physical)
        highest_wall = max(highest_wall, physical)
        if high is not None:
            assert _lt(high, stamp)
        # the hybrid clock's wall part is the largest time it has heard of, nothing more
        assert stamp.wall_ms == highest_wall
        high = stamp


@PROPS
@given(physical_times, st.integers(0, 10**6), st.integers(0, 10**6), st.sampled_from([0, 1, 7]))
def test_after_observe_the_next_stamp_sorts_after_the_remote(
    physical: int, behind: int, logical: int, later: int
) -> None:
    clock = HybridClock("server")
    clock.now(physical)
    remote = Stamp(physical + MAX_SKEW_MS - behind % (MAX_SKEW_MS + 1), logical, "phone")
    clock.observe(remote, physical)
    mine = clock.now(physical + later)
    assert (mine.wall_ms, mine.logical) > (remote.wall_ms, remote.logical)


@PROPS
@given(physical_times, st.integers(0, 10**7), st.integers(-(10**7), 10**7))
def test_the_skew_limit_refuses_beyond_and_accepts_up_to_it(
    physical: int, max_skew: int, offset: int
) -> None:
    remote_wall = max(0, physical + max_skew + offset)
    clock = HybridClock("server", max_skew_ms=max_skew)
    before = clock.now(physical)
    remote = Stamp(remote_wall, 5, "phone")
    if remote_wall - physical > max_skew:
        with pytest.raises(ClockSkew):
            clock.check(remote_wall, physical)
        with pytest.raises(ClockSkew):
            clock.observe(remote, physical)
        # a refused stamp leaves no trace in the clock
        after = clock.now(physical)
        assert (after.wall_ms, after.logical) == (before.wall_ms, before.logical + 1)
    else:
        clock.check(remote_wall, physical)
        clock.observe(remote, physical)
        assert _lt(remote, clock.now(physical))


@PROPS
@given(physical_times, st.integers(0, 10**7))
def test_exactly_max_skew_ahead_is_accepted_one_more_ms_is_not(
    physical: int, max_skew: int
) -> None:
    clock = HybridClock("server", max_skew_ms=max_skew)
    clock.check(physical + max_skew, physical)
    clock.observe(Stamp(physical + max_skew, 0, "phone"), physical)
    with pytest.raises(ClockSkew):
        clock.check(physical + max_skew + 1, physical)
    with pytest.raises(ClockSkew):
        clock.observe(Stamp(physical + max_skew + 1, 0, "phone"), physical)
    assert issubclass(ClockSkew, ValueError)


def test_the_default_skew_limit_is_a_minute() -> None:
    clock = HybridClock("server")
    clock.check(1_000 + MAX_SKEW_MS, 1_000)
    with pytest.raises(ClockSkew, match="ahead"):
        clock.check(1_000 + MAX_SKEW_MS + 1, 1_000)


# ---------------------------------------------------------------------------------------
# Register (last writer wins)
# ---------------------------------------------------------------------------------------

Write = tuple[Any, Stamp, str]

# small stamps so that writes often tie on the stamp and the op id decides
small_stamps = st.builds(
    Stamp, st.integers(0, 4), st.integers(0, 2), st.sampled_from(["a", "b", "c"])
)


@st.composite
def write_lists(draw: st.DrawFn, min_size: int = 1) -> list[Write]:
    """Distinct writes: each has its own op id (a client uuid), stamps may tie."""
    ids = draw(
        st.lists(
            st.text("0123456789abcdef", min_size=1, max_size=3),
            min_size=min_size,
            max_size=10,
            unique=True,
        )
    )
    return [
        (draw(st.one_of(st.none(), st.integers(0, 5), st.text(max_size=2))), draw(small_stamps), i)
        for i in ids
    ]


def fold(writes: list[Write], start: Register | None = None) -> Register:
    reg = Register() if start is None else start
    for value, stamp, op_id in writes:
        reg = reg.assign(value, stamp, op_id)
    return reg


@st.composite
def deliveries(draw: st.DrawFn, items: list[Any]) -> list[Any]:
    """The items in any order, some of them more than once."""
    if not items:
        return []
    extra = draw(st.lists(st.sampled_from(items), max_size=len(items)))
    return list(draw(st.permutations(items + extra)))


@PROPS
@given(write_lists(), st.data())
def test_assign_is_idempotent(ws: list[Write], data: st.DataObject) -> None:
    start = fold(ws[: data.draw(st.integers(0, len(ws)))])
    w = data.draw(st.sampled_from(ws))
    once = start.assign(*w)
    assert once.assign(*w) == once
    assert once.assign(*w) is once  # the same write again is "older or the same"


@PROPS
@given(write_lists(), st.data())
def test_any_order_with_duplicates_ends_at_the_greatest_write(
    ws: list[Write], data: st.DataObject
) -> None:
    delivered = data.draw(deliveries(ws))
    winner = max(ws, key=lambda w: (w[1], w[2]))
    reg = fold(delivered)
    assert reg == Register(*winner)
    assert reg == fold(ws)
    assert reg.deleted == (winner[0] is None)


@st.composite
def registers(draw: st.DrawFn, ws: list[Write]) -> Register:
    return fold(draw(st.lists(st.sampled_from(ws), max_size=4)))


@PROPS
@given(write_lists(), st.data())
def test_merge_is_commutative_associative_and_idempotent(
    ws: list[Write], data: st.DataObject
) -> None:
    x, y, z = (data.draw(registers(ws)) for _ in range(3))
    assert x.merge(y) == y.merge(x)
    assert x.merge(y).merge(z) == x.merge(y.merge(z))
    assert x.merge(x) == x
    assert x.merge(Register()) == Register().merge(x) == x
    # the merge is the side with the greater (stamp, op id); an empty register loses
    written = [r for r in (x, y) if r.stamp is not None]
    assert x.merge(y) == max(written, key=lambda r: (r.stamp, r.op_id), default=Register())


@PROPS
@given(write_lists(), st.data())
def test_merging_single_write_registers_equals_delivering_the_writes(
    ws: list[Write], data: st.DataObject
) -> None:
    delivered = data.draw(deliveries(ws))
    merged = Register()
    for w in delivered:
        merged = merged.merge(Register().assign(*w))
    assert merged == fold(ws)


@PROPS
@given(write_lists(min_size=0), small_stamps, st.text("xyz", min_size=1, max_size=2), st.data())
def test_an_older_write_after_a_tombstone_does_not_bring_the_value_back(
    ws: list[Write], tomb_stamp: Stamp, tomb_id: str, data: st.DataObject
) -> None:
    older = [w for w in ws if (w[1], w[2]) < (tomb_stamp, tomb_id)]
    reg = Register().assign(None, tomb_stamp, tomb_id)
    assert reg.deleted and reg.value is None
    for w in data.draw(deliveries(older)):
        reg = reg.assign(*w)
        assert reg.deleted
        assert (reg.value, reg.stamp, reg.op_id) == (None, tomb_stamp, tomb_id)
    # ... and whatever was written before it, in whatever order, the tombstone wins
    assert fold(data.draw(deliveries([*older, (None, tomb_stamp, tomb_id)]))) == reg


def test_removed_differs_from_never_set_and_a_newer_write_revives() -> None:
    assert not Register().deleted
    gone = Register().assign("x", Stamp(1, 0, "a"), "w1").assign(None, Stamp(2, 0, "b"), "rm")
    assert gone.deleted
    assert gone.assign("x", Stamp(1, 5, "a"), "w0") is gone
    back = gone.assign("y", Stamp(2, 0, "b"), "rz")  # same stamp, greater op id
    assert not back.deleted and back.value == "y"


# ---------------------------------------------------------------------------------------
# ORSet: three devices, random interleavings
# ---------------------------------------------------------------------------------------

DEVICES = ("a", "b", "c")
KEYS = ("k1", "k2", "k3")


@dataclass(frozen=True)
class Op:
    n: int  # position in the order the ops were made (unique)
    device: str
    kind: str  # add | remove
    key: str
    tag: Tag | None = None  # add: a fresh tag
    observed: frozenset[str] = frozenset()  # remove: the live tags the device saw
    past: frozenset[int] = frozenset()  # the ops the device had seen when it made this


def deliver(s: ORSet, op: Op) -> bool:
    if op.kind == "add":
        assert op.tag is not None
        return s.add(op.key, op.tag)
    return s.remove(op.key, op.observed)


def replay(ops: list[Op]) -> ORSet:
    s = ORSet()
    for op in ops:
        deliver(s, op)
    return s


@dataclass
class Device:
    name: str
    replica: ORSet
    clock: HybridClock
    known: set[int]  # the ops this device's replica holds (its causal past)
    made: int = 0


# one step: a device adds or removes a key on its own replica, or pulls another's replica
add_steps = st.tuples(
    st.just("add"),
    st.sampled_from(DEVICES),
    st.sampled_from(KEYS),
    st.integers(0, 30),  # the device's physical clock (often the same ms, or earlier)
)
remove_steps = st.tuples(
    st.just("remove"), st.sampled_from(DEVICES), st.sampled_from(KEYS), st.just(0)
)
sync_steps = st.tuples(
    st.just("sync"), st.sampled_from(DEVICES), st.sampled_from(DEVICES), st.just(0)
)
schedules = st.lists(st.one_of(add_steps, remove_steps, sync_steps), min_size=4, max_size=50)


@dataclass
class History:
    ops: list[Op]
    devices: dict[str, Device]


def play(schedule: list[tuple[str, str, str, int]]) -> History:
    devices = {d: Device(d, ORSet(), HybridClock(d), set()) for d in DEVICES}
    ops: list[Op] = []
    for action, name, arg, physical in schedule:
        dev = devices[name]
        if action == "sync":  # dev pulls arg's replica (one way; both ways is two steps)
            peer = devices[arg]
            dev.replica.merge(peer.replica)
            dev.known |= peer.known
            clock = peer.clock
            dev.clock.observe(Stamp(clock.wall_ms, clock.logical, peer.name), clock.wall_ms)
        else:
            key = arg
            past = frozenset(dev.known)
            if action == "add":
                stamp = dev.clock.now(physical)
                tag = Tag(f"{name}-{dev.made}", stamp, seq=len(ops))
                op = Op(len(ops), name, "add", key, tag=tag, past=past)
            else:
                seen = dev.replica.element(key).observed(lambda _t: True)
                op = Op(len(ops), name, "remove", key, observed=frozenset(seen), past=past)
            dev.made += 1
            ops.append(op)
            deliver(dev.replica, op)
            dev.known.add(op.n)
        # a replica built by merging holds exactly what delivering the ops it knows gives
        assert dev.replica == replay([op for op in ops if op.n in dev.known])
    return History(ops, devices)


def removed_tags(ops: list[Op]) -> set[str]:
    return set().union(*(op.observed for op in ops if op.kind == "remove"))


@PROPS
@given(schedules, st.data())
def test_any_delivery_order_with_duplicates_gives_the_same_set(
    schedule: list[tuple[str, str, str, int]], data: st.DataObject
) -> None:
    h = play(schedule)
    expected = replay(h.ops)
    delivered = data.draw(deliveries(h.ops))
    got = replay(delivered)
    assert got.value() == expected.value()
    assert got == expected  # not only the value: the same adds and tombstones


@PROPS
@given(schedules)
def test_applying_an_op_twice_equals_once(schedule: list[tuple[str, str, str, int]]) -> None:
    h = play(schedule)
    once, twice = ORSet(), ORSet()
    for op in h.ops:
        was = key_present(once, op.key)
        changed = deliver(once, op)
        # the returned flag is "this changed whether the element is present"
        assert changed == (was != key_present(once, op.key))
        deliver(twice, op)
        assert deliver(twice, op) is False
        assert twice == once


def key_present(s: ORSet, key: str) -> bool:
    return key in s.value()


@PROPS
@given(schedules)
def test_replica_merge_is_commutative_associative_and_idempotent(
    schedule: list[tuple[str, str, str, int]],
) -> None:
    h = play(schedule)
    x, y, z = (h.devices[d].replica for d in DEVICES)

    def merged(*parts: ORSet) -> ORSet:
        out = copy.deepcopy(parts[0])
        for p in parts[1:]:
            out.merge(p)
        return out

    assert merged(x, y) == merged(y, x)
    assert merged(merged(x, y), z) == merged(x, merged(y, z))
    assert merged(x, x) == x
    same = copy.deepcopy(x)
    same.merge(same)  # merging a replica into itself
    assert same == x
    # merging every replica holds every op any device made
    known = set().union(*(h.devices[d].known for d in DEVICES))
    assert merged(x, y, z) == replay([op for op in h.ops if op.n in known])
    # merge copies: later ops on a source replica do not leak into the merge
    snapshot = merged(x, y)
    before = copy.deepcopy(snapshot)
    y.remove("k1", {t for e in y.elements.values() for t in e.adds})
    y.add("k2", Tag("late", Stamp(10**6, 0, "b")))
    assert snapshot == before


@PROPS
@given(schedules)
def test_once_all_devices_sync_they_hold_the_same_set(
    schedule: list[tuple[str, str, str, int]],
) -> None:
    h = play(schedule)
    for _ in range(2):  # two rounds of pulls reach everyone from everyone
        for d in DEVICES:
            for e in DEVICES:
                h.devices[d].replica.merge(h.devices[e].replica)
    expected = replay(h.ops)
    for d in DEVICES:
        assert h.devices[d].replica == expected


@PROPS
@given(schedules)
def test_present_exactly_when_an_add_was_observed_by_no_remove(
    schedule: list[tuple[str, str, str, int]],
) -> None:
    h = play(schedule)
    final = replay(h.ops)
    gone = removed_tags(h.ops)
    for key in KEYS:
        adds = [op for op in h.ops if op.kind == "add" and op.key == key]
        unseen = {op.tag.tag for op in adds if op.tag is not None and op.tag.tag not in gone}
        assert (key in final.value()) == bool(unseen)
        if key in final.elements:
            assert {t.tag for t in final.elements[key].live} == unseen


@PROPS
@given(schedules)
def test_no_removed_item_comes_back_unless_re_added_after_the_removal(
    schedule: list[tuple[str, str, str, int]],
) -> None:
    """Causal form: when some remove of a key had seen every add of it, the key is gone;
    an add no remove had seen (concurrent with, or later than, every remove) survives."""
    h = play(schedule)
    final = replay(h.ops).value()
    for key in KEYS:
        adds = [op for op in h.ops if op.kind == "add" and op.key == key]
        removes = [op for op in h.ops if op.kind == "remove" and op.key == key]
        if any(all(a.n in r.past for a in adds) for r in removes):
            assert key not in final
        unseen_by_all = [a for a in adds if not any(a.n in r.past for r in removes)]
        if unseen_by_all:
            assert key in final
        # the same, per device: if a device's own last op on the key was a remove made
        # with every add of the key in view, and nobody added it afterwards unseen,
        # the key is absent
        for d in DEVICES:
            mine = [op for op in h.ops if op.device == d and op.key == key]
            if mine and mine[-1].kind == "remove":
                last = mine[-1]
                if all(a.n in last.past for a in adds):
                    assert key not in final


@PROPS
@given(schedules)
def test_live_tags_and_observed_agree_with_the_tombstones(
    schedule: list[tuple[str, str, str, int]],
) -> None:
    h = play(schedule)
    final = replay(h.ops)
    cut = len(h.ops) // 2
    for key, e in final.elements.items():
        live = e.live
        assert [(t.stamp, t.tag) for t in live] == sorted((t.stamp, t.tag) for t in live)
        assert {t.tag for t in live} == set(e.adds) - e.removed
        assert e.present == bool(live) == (key in final.value())
        assert e.observed(lambda _t: True) == {t.tag for t in live}
        # a remover that saw only the changes up to a sequence observes only those
        assert e.observed(lambda t: t.seq < cut) == {t.tag for t in live if t.seq < cut}


@PROPS
@given(schedules, st.data())
def test_a_replica_keeps_the_sequence_at_which_it_first_stored_an_add(
    schedule: list[tuple[str, str, str, int]], data: st.DataObject
) -> None:
    """``Tag.seq`` is local to a replica (when it stored the add). A redelivery or a merge
    must not move it, or a remover that saw the add would stop observing it."""
    h = play(schedule)

    def stored_at_delivery(ops: list[Op]) -> tuple[ORSet, dict[str, int]]:
        s, first = ORSet(), dict[str, int]()
        for pos, op in enumerate(ops):
            if op.kind == "add":
                assert op.tag is not None
                first.setdefault(op.tag.tag, pos)
                s.add(op.key, Tag(op.tag.tag, op.tag.stamp, seq=pos))
            else:
                s.remove(op.key, op.observed)
        return s, first

    x, x_first = stored_at_delivery(data.draw(deliveries(h.ops)))
    y, y_first = stored_at_delivery(data.draw(deliveries(h.ops)))
    seqs = {t: tag.seq for e in x.elements.values() for t, tag in e.adds.items()}
    assert seqs == x_first
    assert x.value() == y.value() == replay(h.ops).value()
    # a merge keeps the receiver's record of adds it already has and takes the others'
    part, part_first = stored_at_delivery(h.ops[: len(h.ops) // 2])
    part.merge(y)
    merged = {t: tag.seq for e in part.elements.values() for t, tag in e.adds.items()}
    assert merged == {**y_first, **part_first}
    assert part.value() == y.value()


# ---------------------------------------------------------------------------------------
# ORSet: the stories, spelled out
# ---------------------------------------------------------------------------------------


def test_a_concurrent_add_survives_the_remove() -> None:
    phone, tv = ORSet(), ORSet()
    phone.add("heat", Tag("p1", Stamp(1, 0, "phone")))
    tv.merge(phone)
    seen = phone.element("heat").observed(lambda _t: True)
    assert seen == {"p1"}
    assert phone.remove("heat", seen) is True
    assert tv.add("heat", Tag("t1", Stamp(2, 0, "tv"))) is False  # already present there
    for first, second in ((phone, tv), (tv, phone)):
        both = copy.deepcopy(first)
        both.merge(second)
        assert both.value() == frozenset({"heat"})
        assert [t.tag for t in both.element("heat").live] == ["t1"]


def test_an_add_arriving_after_the_remove_that_saw_it_stays_removed() -> None:
    server = ORSet()
    # the remove (which had seen tag p1 on the phone) reaches the server first
    assert server.remove("heat", {"p1"}) is False
    assert server.add("heat", Tag("p1", Stamp(1, 0, "phone"))) is False
    assert server.value() == frozenset()
    # a new add brings it back
    assert server.add("heat", Tag("p2", Stamp(3, 0, "phone"))) is True
    assert server.value() == frozenset({"heat"})


def test_an_element_merge_keeps_both_sides_tombstones() -> None:
    a, b = ORElement(), ORElement()
    a.add(Tag("x", Stamp(1, 0, "a")))
    b.add(Tag("y", Stamp(1, 0, "b")))
    b.remove({"x"})
    a.merge(b)
    assert a.removed == {"x"}
    assert set(a.adds) == {"x", "y"}
    assert [t.tag for t in a.live] == ["y"]
