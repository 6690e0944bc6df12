"""When is the next rotation due? Pure functions over the rotation settings, with the clock passed in."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from croniter import CroniterBadDateError, croniter

from managed_secrets.domain.clock import as_utc
from managed_secrets.errors import InvalidRequest

_DURATION = re.compile(r"^(?:[0-9]+[dhms])+$")
_PART = re.compile(r"([0-9]+)([dhms])")
_UNIT = {"d": 86400, "h": 3600, "m": 60, "s": 1}


MAX_DURATION = timedelta(days=3650)
"""The longest interval or window: ten years (anything longer is a typo, and overflows date arithmetic)."""
MIN_INTERVAL = timedelta(minutes=1)
"""The shortest rotation interval by default (operators may lower it for tests: MSO_MIN_ROTATION_INTERVAL)."""


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``1h30m``, ``45s`` → timedelta; anything else, zero or over ten years is an
    ``InvalidRequest``."""
    if not isinstance(text, str) or not _DURATION.match(text):
        raise InvalidRequest(f"duration {text!r} must be whole numbers with units d, h, m or s, e.g. 30d or 1h30m")
    seconds = sum(int(n) * _UNIT[u] for n, u in _PART.findall(text))
    if seconds <= 0:
        raise InvalidRequest(f"duration {text!r} must be longer than zero")
    if seconds > MAX_DURATION.total_seconds():
        raise InvalidRequest(f"duration {text!r} is longer than ten years")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class RotationSchedule:
    """``spec.rotation``: enabled, and either an interval or a cron schedule, with an optional window."""

    enabled: bool = False
    interval: timedelta | None = None
    schedule: str | None = None
    window: timedelta | None = None

    @classmethod
    def from_spec(
        cls, rotation: Mapping[str, object] | None, *, min_interval: timedelta = MIN_INTERVAL
    ) -> RotationSchedule:
        """``spec.rotation`` checked beyond what the schema can say; ``InvalidRequest`` names the field."""
        rotation = rotation or {}
        interval = rotation.get("interval")
        schedule = rotation.get("schedule")
        window = rotation.get("window")
        if interval and schedule:
            raise InvalidRequest("spec.rotation: set either interval or schedule, not both")
        if schedule is not None:
            _check_cron(str(schedule))
        try:
            parsed_interval = parse_duration(str(interval)) if interval else None
            parsed_window = parse_duration(str(window)) if window else None
        except InvalidRequest as e:
            field = "interval" if interval and str(interval) in str(e) else "window"
            raise InvalidRequest(f"spec.rotation.{field}: {e}") from None
        if parsed_interval is not None and parsed_interval < min_interval:
            raise InvalidRequest(
                f"spec.rotation.interval: {interval} is shorter than the operator's floor of "
                f"{int(min_interval.total_seconds())}s"
            )
        return cls(
            enabled=bool(rotation.get("enabled", False)),
            interval=parsed_interval,
            schedule=str(schedule) if schedule else None,
            window=parsed_window,
        )

    @property
    def automatic(self) -> bool:
        return self.enabled and (self.interval is not None or self.schedule is not None)


def _check_cron(expression: str) -> None:
    if not croniter.is_valid(expression):
        raise InvalidRequest(f"spec.rotation.schedule {expression!r} is not a valid cron expression")
    try:
        croniter(expression, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except (CroniterBadDateError, ValueError, OverflowError):
        raise InvalidRequest(f"spec.rotation.schedule {expression!r} never fires") from None


def next_rotation_time(schedule: RotationSchedule, last_rotation: datetime, secret_id: str) -> datetime | None:
    """When the rotation after the one at ``last_rotation`` is due (None if rotation is not automatic).

    Interval: ``last_rotation + interval``. Schedule: the first cron time after ``last_rotation``. With a
    window, a fixed offset within it, derived from the secret and the due time, spreads secrets due together
    (the same inputs always give the same time, so restarts do not move it).
    """
    if not schedule.automatic:
        return None
    last = as_utc(last_rotation, "last rotation")
    if schedule.interval is not None:
        due = last + schedule.interval
    else:
        assert schedule.schedule is not None
        try:
            due = as_utc(croniter(schedule.schedule, last).get_next(datetime), "cron time")
        except (CroniterBadDateError, ValueError, OverflowError):
            raise InvalidRequest(f"spec.rotation.schedule {schedule.schedule!r} never fires again") from None
    if schedule.window is not None and schedule.window.total_seconds() >= 1:
        digest = hashlib.sha256(f"{secret_id}@{due.isoformat()}".encode()).digest()
        offset = int.from_bytes(digest[:8], "big") % int(schedule.window.total_seconds())
        due += timedelta(seconds=offset)
    return due


def rotation_due(next_rotation: datetime | None, now: datetime) -> bool:
    """A rotation is due when its time has come; one missed while the operator was down is due once now."""
    return next_rotation is not None and as_utc(now, "now") >= as_utc(next_rotation, "next rotation")
