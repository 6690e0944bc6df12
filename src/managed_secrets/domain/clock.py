"""Time, injected: the domain never reads the wall clock itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock", "as_utc", "iso", "iso_seconds"]


def as_utc(moment: datetime, what: str = "time") -> datetime:
    """``moment`` converted to UTC. A naive datetime is a programming error: ``ValueError``."""
    if not isinstance(moment, datetime):
        raise TypeError(f"{what} must be a datetime, got {type(moment).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


def iso(moment: datetime, timespec: str = "auto") -> str:
    """RFC 3339 text in UTC with a ``Z`` suffix (``timespec`` as for ``datetime.isoformat``)."""
    return as_utc(moment).isoformat(timespec=timespec).replace("+00:00", "Z")


def iso_seconds(moment: datetime) -> str:
    """``iso`` to whole seconds: the form Kubernetes uses in status fields."""
    return iso(moment.replace(microsecond=0))


class Clock(Protocol):
    """Where the current time comes from."""

    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """A clock that moves only when told to. For tests and simulations."""

    DEFAULT_START = datetime(2024, 1, 1, tzinfo=UTC)

    def __init__(self, start: datetime | None = None) -> None:
        self._now = as_utc(start, "start") if start is not None else self.DEFAULT_START

    def now(self) -> datetime:
        return self._now

    def set(self, moment: datetime) -> None:
        """Jump to ``moment`` (backwards too, to simulate a skewed clock)."""
        self._now = as_utc(moment, "moment")

    def advance(self, delta: timedelta | None = None, /, **units: float) -> datetime:
        """Move forward by ``delta`` or by ``timedelta(**units)``, e.g. ``advance(minutes=5)``; return now."""
        if delta is not None and units:
            raise TypeError("give either a timedelta or keyword units, not both")
        step = delta if delta is not None else timedelta(**units)
        self._now = self._now + step
        return self._now

    def __repr__(self) -> str:
        return f"ManualClock({self._now.isoformat()})"
