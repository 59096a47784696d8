"""Quota periods and windows, exactly as src/quota.rs lays them out, so that
Python and Rust count against the same counters.

A period is one whole number and a unit. Fixed windows are calendar periods
in the quota's time zone (`Nd` local days from midnight, `Nw` weeks from
Monday, `Nmo` calendar months, `Ny` years), wall-clock tiles for a length that
divides a day (`15m`, `12h`), and elapsed windows counted from the Unix epoch
for any other length (`7h`, `36h`). Sliding windows need a fixed length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import BadConfig, ProtocolError, human_duration, rust_str

MAX_COUNT = (1 << 53) - 1
DAY_MS = 86_400_000
MAX_DAYS = 36_525
MAX_MONTHS = 1_200
MAX_YEARS = 100
PERIOD_HELP = "use a whole number and a unit: ms, s, m, h, d, w, mo or y (e.g. 30s, 15m, 12h, 1d, 1w, 1mo, 1y)"
_TOO_LONG = "a period is at most 100 years (36525d, 1200mo, 100y)"

_UNITS = {
    **dict.fromkeys(("ms", "msec", "msecs"), ("ms", 1)),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), ("ms", 1_000)),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), ("ms", 60_000)),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), ("ms", 3_600_000)),
    **dict.fromkeys(("d", "day", "days"), ("d", 1)),
    **dict.fromkeys(("w", "week", "weeks"), ("d", 7)),
    **dict.fromkeys(("mo", "mon", "month", "months", "M"), ("mo", 1)),
    **dict.fromkeys(("y", "yr", "year", "years"), ("y", 1)),
}


@dataclass(frozen=True)
class Period:
    """`unit` is "ms" (a length), "d", "mo" or "y"; `n` how many."""

    unit: str
    n: int

    @staticmethod
    def parse(s: str) -> Period:
        try:
            return _parse(s)
        except ValueError as e:
            raise BadConfig("period", rust_str(s), str(e)) from None

    @staticmethod
    def of(per: str | float | int | timedelta | Period) -> Period:
        if isinstance(per, Period):
            p = per
        elif isinstance(per, str):
            return Period.parse(per)
        else:
            secs = per.total_seconds() if isinstance(per, timedelta) else float(per)
            ms = secs * 1000
            if abs(ms - round(ms)) > 1e-6:
                raise BadConfig("period", human_duration(max(secs, 0)), "a period is a whole number of milliseconds")
            p = Period("ms", round(ms))
        rule = p.broken_rule()
        if rule:
            raise BadConfig("period", str(p), rule)
        return p

    def broken_rule(self) -> str | None:
        if self.n < 1:
            return "a period is at least 1ms"
        limit = {"ms": MAX_DAYS * DAY_MS, "d": MAX_DAYS, "mo": MAX_MONTHS, "y": MAX_YEARS}[self.unit]
        if self.n > limit:
            return _TOO_LONG
        return None

    def __str__(self) -> str:
        if self.unit == "ms":
            return human_duration(self.n / 1000)
        if self.unit == "d":
            return f"{self.n // 7}w" if self.n % 7 == 0 else f"{self.n}d"
        return f"{self.n}{self.unit}"

    def key_name(self) -> str:
        return f"{self.n}{self.unit}"

    def sliding_ms(self) -> int | None:
        if self.unit == "ms":
            return self.n
        if self.unit == "d":
            return self.n * DAY_MS
        return None

    def layout(self) -> tuple[str, int]:
        if self.unit == "ms":
            return ("wall" if DAY_MS % self.n == 0 else "elapsed", self.n)
        return (self.unit, self.n)


def _parse(s: str) -> Period:
    t = s.strip()
    m = re.match(r"^(\d+)\s*(.*)$", t)
    if not m:
        raise ValueError(PERIOD_HELP)
    n = int(m.group(1))
    unit = m.group(2)
    if unit == "":
        raise ValueError(f"a period needs a unit; {PERIOD_HELP}")
    if unit not in _UNITS:
        raise ValueError(PERIOD_HELP)
    kind, mult = _UNITS[unit]
    value = n * mult
    if value >= 1 << 64 or (kind != "ms" and value >= 1 << 32):
        raise ValueError(_TOO_LONG)
    p = Period(kind, value)
    rule = p.broken_rule()
    if rule:
        raise ValueError(rule)
    return p


def zone(name: str | None) -> tuple[tzinfo, str]:
    """The zone and its name in counter keys (UTC by default)."""
    if name is None or name == "UTC":
        return timezone.utc, "UTC"
    try:
        return ZoneInfo(name), name
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise BadConfig(
            "time zone", name, "is not an IANA time zone name (e.g. UTC, Europe/Berlin, Asia/Shanghai)"
        ) from None


@dataclass(frozen=True)
class Window:
    """The fixed window containing an instant: its id in the counter's key,
    the span of real time (Unix ms) during which it is current, and the last
    instant that can belong to it (a repeated hour may bring it back)."""

    id: str
    start: int
    end: int
    last: int


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _local(ms: int, tz: tzinfo) -> datetime:
    """The wall clock of `tz` at Unix ms `ms`, naive."""
    return (_EPOCH + timedelta(milliseconds=ms)).astimezone(tz).replace(tzinfo=None)


def _offset_ms(ms: int, tz: tzinfo) -> int:
    off = (_EPOCH + timedelta(milliseconds=ms)).astimezone(tz).utcoffset()
    return int(off.total_seconds() * 1000) if off else 0


def _to_ms(local: datetime, offset_ms: int) -> int:
    """A wall-clock time read with a fixed offset, as Unix ms."""
    delta = local - datetime(1970, 1, 1)
    return (delta.days * DAY_MS + delta.seconds * 1000 + delta.microseconds // 1000) - offset_ms


def _later(local: datetime, tz: tzinfo) -> int:
    """The later of the instants the clock shows `local` (jiff's `later()`)."""
    if isinstance(tz, timezone):
        return _to_ms(local, int((tz.utcoffset(None) or timedelta()).total_seconds() * 1000))
    out = []
    for fold in (0, 1):
        off = local.replace(tzinfo=tz, fold=fold).utcoffset()
        out.append(_to_ms(local, int(off.total_seconds() * 1000) if off else 0))
    return max(out)


def _transition_after(t: int, limit: int, tz: tzinfo) -> int | None:
    """The first instant in (t, limit] where the offset of `tz` changes."""
    if isinstance(tz, timezone):
        return None
    step = DAY_MS // 4
    a, off = t, _offset_ms(t, tz)
    while a < limit:
        b = min(a + step, limit)
        if _offset_ms(b, tz) != off:
            lo, hi = a, b  # offset(lo) == off, offset(hi) != off
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset_ms(mid, tz) == off:
                    lo = mid
                else:
                    hi = mid
            return hi
        a = b
    return None


def _transition_before(t: int, limit: int, tz: tzinfo) -> int | None:
    """The last instant in (limit, t] at which the offset of `tz` changed."""
    if isinstance(tz, timezone):
        return None
    step = DAY_MS // 4
    b, off = t, _offset_ms(t, tz)
    while b > limit:
        a = max(b - step, limit)
        if _offset_ms(a, tz) != off:
            lo, hi = a, b  # offset(lo) != off, offset(hi) == off
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset_ms(mid, tz) == off:
                    hi = mid
                else:
                    lo = mid
            return hi
        b = a
    return None


def _span_around(now: int, frm: datetime, to: datetime, tz: tzinfo) -> tuple[int, int]:
    """The longest span of real time around `now` in which the clock of `tz`
    shows a time in [frm, to): walks the zone's transitions (quota.rs)."""

    def inside(ms: int) -> bool:
        c = _local(ms, tz)
        return frm <= c < to

    end = start = None
    t = now
    for _ in range(1000):
        guess = _to_ms(to, _offset_ms(t, tz))
        tr = _transition_after(t, guess, tz)
        if tr is None:
            end = guess
            break
        if inside(tr):
            t = tr
        else:
            end = tr
            break
    t = now
    for _ in range(1000):
        guess = _to_ms(frm, _offset_ms(t, tz))
        tr = _transition_before(t, guess, tz)
        if tr is None:
            start = guess
            break
        if inside(tr - 1):
            t = tr - 1
        else:
            start = tr
            break
    if start is None or end is None:
        raise ProtocolError("quota window", "the time zone changes its offset too often")
    return start, end


def _month_start(i: int) -> datetime:
    y, m = divmod(i, 12)
    if not 1 <= y <= 9999:
        raise ProtocolError("quota window", f"month {i} is outside the calendar")
    return datetime(y, m + 1, 1)


def civil_id(dt: datetime) -> str:
    """A civil date-time as jiff prints it: fractional seconds only when set."""
    s = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if dt.microsecond:
        s += "." + f"{dt.microsecond:06d}".rstrip("0")
    return s


def window(now_ms: int, period: Period, tz: tzinfo) -> Window:
    """The fixed window of `period` in `tz` that contains `now_ms`."""
    kind, n = period.layout()
    if kind == "elapsed":
        start = (now_ms // n) * n
        return Window(str(start), start, start + n, start + n)
    local = _local(now_ms, tz)
    if kind == "wall":
        midnight = datetime(local.year, local.month, local.day)
        into = (local - midnight) // timedelta(milliseconds=1)
        k = into // n
        frm = midnight + timedelta(milliseconds=k * n)
        to = midnight + timedelta(milliseconds=(k + 1) * n)
    elif kind == "d":
        origin = date(1970, 1, 5)  # a Monday: blocks of 7 days are weeks
        day = (local.date() - origin).days
        first = day - day % n
        frm = datetime.combine(origin + timedelta(days=first), datetime.min.time())
        to = datetime.combine(origin + timedelta(days=first + n), datetime.min.time())
    elif kind == "mo":
        month = local.year * 12 + local.month - 1
        first = month - month % n
        frm, to = _month_start(first), _month_start(first + n)
    else:
        year = local.year
        first = year - year % n
        frm, to = _month_start(first * 12), _month_start((first + n) * 12)
    start, end = _span_around(now_ms, frm, to, tz)
    again = _later(to, tz)
    return Window(civil_id(frm), start, end, max(end, again))
