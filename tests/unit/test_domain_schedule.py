"""Rotation schedules: durations, intervals, cron, windows, missed rotations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from managed_secrets.domain.clock import ManualClock
from managed_secrets.domain.schedule import RotationSchedule, next_rotation_time, parse_duration, rotation_due
from managed_secrets.errors import InvalidRequest

T0 = datetime(2026, 3, 2, 10, 15, tzinfo=UTC)  # a Monday


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("45s", 45), ("1h30m", 5400), ("1d1s", 86401)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "0s", "0d0h", "10", "1w", "h1", "1.5h", "-1h", "1h 30m"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_duration(text)


def test_interval_counts_from_the_last_rotation() -> None:
    schedule = RotationSchedule.from_spec({"enabled": True, "interval": "12h"})
    assert next_rotation_time(schedule, T0, "ns/a") == T0 + timedelta(hours=12)


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        ("0 3 * * 1", datetime(2026, 3, 9, 3, 0, tzinfo=UTC)),  # next Monday 03:00
        ("*/5 * * * *", datetime(2026, 3, 2, 10, 20, tzinfo=UTC)),
        ("@daily", datetime(2026, 3, 3, 0, 0, tzinfo=UTC)),
    ],
)
def test_cron_schedule(cron: str, expected: datetime) -> None:
    schedule = RotationSchedule.from_spec({"enabled": True, "schedule": cron})
    assert next_rotation_time(schedule, T0, "ns/a") == expected


def test_disabled_or_unscheduled_rotation_is_never_due() -> None:
    assert next_rotation_time(RotationSchedule.from_spec({"enabled": False, "interval": "1h"}), T0, "x") is None
    assert next_rotation_time(RotationSchedule.from_spec({"enabled": True}), T0, "x") is None
    assert not rotation_due(None, T0)


def test_window_spreads_but_is_stable() -> None:
    schedule = RotationSchedule.from_spec({"enabled": True, "interval": "1d", "window": "2h"})
    times = {next_rotation_time(schedule, T0, f"ns/s{i}") for i in range(50)}
    base = T0 + timedelta(days=1)
    assert all(base <= t < base + timedelta(hours=2) for t in times if t)
    assert len(times) > 10, "different secrets get different offsets"
    assert next_rotation_time(schedule, T0, "ns/s1") == next_rotation_time(schedule, T0, "ns/s1")


def test_missed_rotation_is_due_once_when_back() -> None:
    clock = ManualClock(T0)
    schedule = RotationSchedule.from_spec({"enabled": True, "interval": "1h"})
    due = next_rotation_time(schedule, T0, "ns/a")
    clock.advance(hours=5)  # the operator was down for five hours
    assert rotation_due(due, clock.now())
    # After the catch-up rotation, the next one counts from then: no storm of five rotations.
    after = next_rotation_time(schedule, clock.now(), "ns/a")
    assert after == clock.now() + timedelta(hours=1)
    assert not rotation_due(after, clock.now())


def test_interval_and_schedule_together_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="not both"):
        RotationSchedule.from_spec({"enabled": True, "interval": "1h", "schedule": "@daily"})
    with pytest.raises(InvalidRequest, match="cron"):
        RotationSchedule.from_spec({"enabled": True, "schedule": "not a cron"})
