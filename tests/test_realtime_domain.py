"""Realtime rules without I/O: command checks, the status a command moves to, frames."""

from __future__ import annotations

from domain.realtime import Frame, Violation, check_command, next_status, parse_frame, status_at


def test_commands_name_what_they_lack() -> None:
    assert check_command("pause", None, None, None) is None
    assert check_command("play", None, None, None) == Violation(
        "content_id", "play needs the title to play"
    )
    assert check_command("seek", None, None, None).field == "position_s"  # type: ignore[union-attr]
    assert check_command("seek", None, -1.0, None).field == "position_s"  # type: ignore[union-attr]
    assert check_command("zap", None, None, None).field == "command"  # type: ignore[union-attr]
    assert check_command("stop", None, None, 0.5).field == "ttl_s"  # type: ignore[union-attr]


def test_statuses_only_move_forward_and_a_late_ack_does_not_count() -> None:
    deadline = 10_000
    assert next_status("queued", "DeviceCommandDelivered", 1, deadline) == "delivered"
    assert next_status("delivered", "DeviceCommandDelivered", 2, deadline) is None
    assert next_status("queued", "DeviceCommandAcked", 3, deadline) == "acked"
    assert next_status("delivered", "DeviceCommandAcked", deadline + 1, deadline) is None
    assert next_status("acked", "DeviceCommandExpired", 4, deadline) is None
    assert next_status("delivered", "DeviceCommandExpired", 4, deadline) == "expired"
    assert next_status("expired", "DeviceCommandAcked", 5, deadline) is None
    assert next_status(None, "DeviceCommandAcked", 5, deadline) is None
    # a reader sees an open command past its deadline as expired before the sweeper acts
    assert status_at("delivered", deadline, deadline + 1) == "expired"
    assert status_at("acked", deadline, deadline + 1) == "acked"
    assert status_at("queued", deadline, deadline - 1) == "queued"


def test_frames_are_json_objects_of_a_known_type() -> None:
    assert parse_frame('{"type": "ping"}') == Frame("ping", {"type": "ping"})
    assert isinstance(parse_frame("[1]"), Violation)
    assert parse_frame('{"type": "ack"}') == Violation(
        "command_id", "an ack names the command it acknowledges"
    )
    assert parse_frame('{"type": "auth", "access_token": ""}').field == "access_token"  # type: ignore[union-attr]
    assert parse_frame("x" * 20_000).field == "frame"  # type: ignore[union-attr]
    assert parse_frame('{"type": "nope"}').field == "type"  # type: ignore[union-attr]
