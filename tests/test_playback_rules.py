"""Continue-watching thresholds (Jellyfin defaults) and position sanity."""

from __future__ import annotations

import pytest

from domain.playback import ProgressState, check_position, classify, resume_position


@pytest.mark.parametrize(
    ("position", "duration", "state"),
    [
        (0, 6000, ProgressState.NOT_STARTED),
        (299, 6000, ProgressState.NOT_STARTED),  # 4.98 %
        (300, 6000, ProgressState.IN_PROGRESS),  # exactly 5 %
        (3000, 6000, ProgressState.IN_PROGRESS),
        (5400, 6000, ProgressState.IN_PROGRESS),  # exactly 90 %
        (5401, 6000, ProgressState.WATCHED),
        (6000, 6000, ProgressState.WATCHED),
        (3000, None, ProgressState.UNKNOWN),  # no duration: cannot judge
    ],
)
def test_classify(position: float, duration: float | None, state: ProgressState) -> None:
    assert classify(position, duration) is state


def test_resume_position() -> None:
    assert resume_position(1200, 6000) == 1200
    assert resume_position(5900, 6000) == 0.0
    assert resume_position(10, 6000) == 0.0


@pytest.mark.parametrize(
    ("position", "duration", "field"),
    [
        (-1, 100, "position_s"),
        (float("nan"), 100, "position_s"),
        (10, 0, "duration_s"),
        (10, -5, "duration_s"),
        (500, 100, "position_s"),
        (10, 10**7, "duration_s"),
    ],
)
def test_implausible_positions_are_named(position: float, duration: float, field: str) -> None:
    v = check_position(position, duration)
    assert v is not None and v.field == field


def test_plausible_positions_pass() -> None:
    assert check_position(100, 6000) is None
    assert check_position(6010, 6000) is None  # credits rounding slack
    assert check_position(100, None) is None
