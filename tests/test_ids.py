"""Ids: the derived (UUIDv5) ids are exactly what the uuid module computes."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from core.ids import MGW_NAMESPACE, derived_id, new_id


@given(st.text())
def test_derived_id_is_uuid5_of_the_namespace(key: str) -> None:
    assert derived_id(key) == str(uuid.uuid5(MGW_NAMESPACE, key))


def test_derived_ids_are_stable_and_distinct() -> None:
    assert derived_id("movielens:1") == derived_id("movielens:1")
    assert derived_id("movielens:1") != derived_id("movielens:2")
    assert uuid.UUID(derived_id("movielens:1")).version == 5


def test_new_ids_are_uuid7_in_time_order() -> None:
    ids = [new_id() for _ in range(50)]
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert ids == sorted(ids)
