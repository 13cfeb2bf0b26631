"""Billing periods: inclusive ranges of UTC days, parsed the same way for the API and the
CLI so both refuse the same input with the same message."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from evothesis.errors import InvalidPeriod

#: The longest range one usage request reads: a year (and a leap day). Longer ones list
#: too many folders of the backup bucket for one request; ask per year instead.
MAX_PERIOD_DAYS = 366


@dataclass(frozen=True, slots=True)
class Period:
    """The UTC days ``first`` to ``last``, both included."""

    first: date
    last: date

    def days(self) -> Iterator[date]:
        day = self.first
        while day <= self.last:
            yield day
            day += timedelta(days=1)

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and self.first <= day <= self.last

    @property
    def start(self) -> datetime:
        """The first instant of the period (UTC)."""
        return datetime.combine(self.first, time(), UTC)

    @property
    def end(self) -> datetime:
        """The first instant after the period (UTC): periods are half-open in time."""
        return datetime.combine(self.last + timedelta(days=1), time(), UTC)


def parse_day(text: str, name: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidPeriod(f"{name} must be a date as YYYY-MM-DD, not {text[:40]!r}") from None


def parse_period(first: str, last: str) -> Period:
    """``from``/``to`` as given by an operator; at most ``MAX_PERIOD_DAYS`` days."""
    period = Period(parse_day(first, "from"), parse_day(last, "to"))
    if period.first > period.last:
        raise InvalidPeriod(f"from ({period.first}) is after to ({period.last})")
    length = (period.last - period.first).days + 1
    if length > MAX_PERIOD_DAYS:
        raise InvalidPeriod(f"the period has {length} days; at most {MAX_PERIOD_DAYS} per request")
    return period


def month_period(month: str) -> Period:
    """``YYYY-MM`` as the period of its days."""
    try:
        first = datetime.strptime(month, "%Y-%m").date()
    except ValueError:
        raise InvalidPeriod(f"month must be YYYY-MM, not {month[:40]!r}") from None
    following = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    return Period(first, following - timedelta(days=1))
