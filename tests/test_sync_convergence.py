"""Property tests for domain/sync: three devices, random interleavings, duplicates and
reorderings of the same ops converge to one state; a removed item comes back only when
re-added after the removal; applying an op twice equals once."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.sync.hlc import ClockSkew, HybridClock, Stamp
from domain.sync.orset import ORSet, Tag
from domain.sync.register import Register

DEVICES = ("phone", "tv", "web")
KEYS = ("a", "b", "c")

stamps = st.builds(
    Stamp,
    st.integers(0, 10**13 - 1),
    st.integers(0, 10**6 - 1),
    st.text(alphabet="abc.xyz-", min_size=1, max_size=6),
)


@given(stamps, stamps)
def test_stamp_text_sorts_like_the_stamp(a: Stamp, b: Stamp) -> None:
    assert Stamp.decode(a.encode()) == a
    if (a.wall_ms, a.logical) != (b.wall_ms, b.logical):
        assert (a < b) == (a.encode() < b.encode())


@given(st.lists(st.integers(0, 10**12), min_size=1, max_size=50))
def test_the_clock_only_moves_forward(physical: list[int]) -> None:
    clock = HybridClock("server")
    issued = [clock.now(p) for p in physical]
    assert all(
        (x.wall_ms, x.logical) < (y.wall_ms, y.logical)
        for x, y in zip(issued, issued[1:], strict=False)
    )


@given(st.integers(0, 10**12), st.integers(-(10**6), 10**6))
def test_the_clock_sorts_after_what_it_observed_and_refuses_far_futures(
    physical: int, ahead: int
) -> None:
    clock = HybridClock("server", max_skew_ms=60_000)
    remote = Stamp(max(0, physical + ahead), 3, "phone")
    if remote.wall_ms > physical + 60_000:
        with pytest.raises(ClockSkew):
            clock.observe(remote, physical)
        return
    clock.observe(remote, physical)
    mine = clock.now(physical)
    assert (mine.wall_ms, mine.logical) > (remote.wall_ms, remote.logical)


# each write has its own op id (a client uuid); stamps may tie (two devices, one clock)
writes = st.lists(
    st.tuples(st.one_of(st.none(), st.integers(1, 10)), stamps), min_size=1, max_size=12
).map(lambda ws: [(v, s, f"op{i}") for i, (v, s) in enumerate(ws)])


@given(writes, st.randoms(use_true_random=False))
def test_a_register_keeps_the_last_write_whatever_the_order(
    ws: list[tuple[int | None, Stamp, str]], rnd: object
) -> None:
    import random

    assert isinstance(rnd, random.Random)
    delivered = ws + [rnd.choice(ws) for _ in range(len(ws))]  # with duplicates
    rnd.shuffle(delivered)
    reg = Register()
    for value, stamp, op in delivered:
        reg = reg.assign(value, stamp, op)
    winner = max(ws, key=lambda w: (w[1], w[2]))
    # writes that tie on (stamp, op id) are the same write delivered twice
    assert (reg.stamp, reg.op_id) == (winner[1], winner[2])
    assert reg.deleted == (reg.value is None)
    # merge: commutative, idempotent
    other = Register().assign(*ws[0])
    assert reg.merge(other) == other.merge(reg) == reg.merge(other).merge(other)


@dataclass
class Op:
    kind: str  # add | remove
    key: str
    tag: str = ""
    observed: frozenset[str] = frozenset()
    stamp: Stamp = field(default_factory=lambda: Stamp(0, 0, ""))


def apply(s: ORSet, op: Op) -> None:
    if op.kind == "add":
        s.add(op.key, Tag(op.tag, op.stamp))
    else:
        s.remove(op.key, op.observed)


# A schedule: each step one device either makes an op on its own replica (an add, or a
# remove of what that replica sees) or syncs with another device (merging replicas).
steps = st.lists(
    st.tuples(
        st.sampled_from(DEVICES),
        st.sampled_from(["add", "remove", "sync"]),
        st.sampled_from(KEYS),
        st.sampled_from(DEVICES),
    ),
    min_size=1,
    max_size=40,
)


def play(schedule: list[tuple[str, str, str, str]]) -> tuple[list[Op], dict[str, ORSet]]:
    replicas = {d: ORSet() for d in DEVICES}
    made: list[Op] = []
    for n, (device, action, key, peer) in enumerate(schedule):
        here = replicas[device]
        if action == "sync":
            here.merge(replicas[peer])
            replicas[peer].merge(here)
            continue
        if action == "add":
            op = Op("add", key, tag=f"{device}-{n}", stamp=Stamp(n, 0, device))
        else:
            seen = here.element(key).observed(lambda _t: True)
            op = Op("remove", key, observed=frozenset(seen), stamp=Stamp(n, 0, device))
        apply(here, op)
        made.append(op)
    return made, replicas


@settings(max_examples=300, deadline=None)
@given(steps, st.randoms(use_true_random=False))
def test_any_delivery_order_with_duplicates_converges(
    schedule: list[tuple[str, str, str, str]], rnd: object
) -> None:
    import random

    assert isinstance(rnd, random.Random)
    made, replicas = play(schedule)
    in_order = ORSet()
    for op in made:
        apply(in_order, op)
    shuffled = made + [rnd.choice(made) for _ in range(len(made))] if made else []
    rnd.shuffle(shuffled)
    anyhow = ORSet()
    for op in shuffled:
        apply(anyhow, op)
    assert anyhow.value() == in_order.value()
    # applying every op twice equals once
    twice = ORSet()
    for op in made:
        apply(twice, op)
        apply(twice, op)
    assert twice.value() == in_order.value()
    # every device, once all have synced, holds the same state
    for d in DEVICES:
        for e in DEVICES:
            replicas[d].merge(replicas[e])
    for d in DEVICES:
        replicas[d].merge(replicas[DEVICES[0]])
    assert {r.value() for r in replicas.values()} == {in_order.value()}


@settings(max_examples=300, deadline=None)
@given(steps)
def test_a_removed_item_comes_back_only_through_an_add_the_remove_did_not_see(
    schedule: list[tuple[str, str, str, str]],
) -> None:
    made, _ = play(schedule)
    final = ORSet()
    for op in made:
        apply(final, op)
    removed_tags = set().union(*(op.observed for op in made if op.kind == "remove"))
    for key in KEYS:
        unseen = [
            op for op in made if op.kind == "add" and op.key == key and op.tag not in removed_tags
        ]
        # present exactly when some add of it was never observed by a remove
        assert (key in final.value()) == bool(unseen)


def test_a_concurrent_add_survives_the_remove() -> None:
    phone, tv = ORSet(), ORSet()
    phone.add("heat", Tag("p1", Stamp(1, 0, "phone")))
    tv.merge(phone)
    # offline: the phone removes what it saw, the TV adds Heat again
    phone.remove("heat", phone.element("heat").observed(lambda _t: True))
    tv.add("heat", Tag("t1", Stamp(2, 0, "tv")))
    phone.merge(tv)
    tv.merge(phone)
    assert phone.value() == tv.value() == frozenset({"heat"})
    assert [t.tag for t in phone.element("heat").live] == ["t1"]


def test_a_million_stamps_in_one_millisecond_stay_in_order_and_encodable() -> None:
    clock = HybridClock("server")
    clock.observe(Stamp(5, 999_998, "phone"), 5)
    a, b, c = clock.now(5), clock.now(5), clock.now(5)
    assert a < b < c and (c.wall_ms, c.logical) == (6, 1)
    assert a.encode() < b.encode() < c.encode()
    with pytest.raises(ValueError):
        Stamp(-1, 0, "phone").encode()  # before 1970 has no place in the text order
