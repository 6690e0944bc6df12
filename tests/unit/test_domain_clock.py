"""The injected clocks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from managed_secrets.domain import Clock, ManualClock, SystemClock, as_utc


def test_system_clock_is_aware_utc_and_close_to_now() -> None:
    clock: Clock = SystemClock()
    now = clock.now()
    assert now.tzinfo is UTC
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=5)


def test_manual_clock_starts_at_a_fixed_time_by_default() -> None:
    assert ManualClock().now() == datetime(2024, 1, 1, tzinfo=UTC)


def test_manual_clock_moves_only_when_told() -> None:
    start = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    clock: Clock = ManualClock(start)
    assert clock.now() == start
    assert clock.now() == start
    assert isinstance(clock, ManualClock)
    assert clock.advance(minutes=5) == start + timedelta(minutes=5)
    assert clock.advance(timedelta(hours=1)) == start + timedelta(hours=1, minutes=5)
    clock.set(start - timedelta(days=1))
    assert clock.now() == start - timedelta(days=1)


def test_manual_clock_converts_to_utc_and_refuses_naive_times() -> None:
    clock = ManualClock(datetime(2025, 3, 1, 10, 0, tzinfo=timezone(timedelta(hours=2))))
    assert clock.now() == datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    assert clock.now().tzinfo is UTC
    with pytest.raises(ValueError, match="timezone-aware"):
        clock.set(datetime(2025, 3, 1))
    with pytest.raises(TypeError):
        clock.advance(timedelta(seconds=1), seconds=1)


def test_as_utc() -> None:
    assert as_utc(datetime(2025, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))) == datetime(2025, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="started must be timezone-aware"):
        as_utc(datetime(2025, 1, 1), "started")
