"""Policy shared by the sync and asyncio clients, without I/O: how long a
waiter sleeps after each reply (src/lease/waiter.rs), quota settings and
replies (src/quota.rs), token cache rules (src/cache.rs)."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from . import _protocol as p
from . import _quota as q
from ._node import CacheEntry, Call, Calls
from .errors import (
    BadConfig,
    BudgetExhausted,
    FetchFailed,
    LeaseholdError,
    human_duration,
    rust_str,
)

log = logging.getLogger("leasehold")


def check_lease_args(name: str, limit: int | None, reserved: bool) -> None:
    """What a lease or semaphore handle refuses before any I/O (both clients)."""
    if reserved:
        p.validate_key_name(name)
    else:
        p.validate_name(name)
    if limit is not None and limit < 1:
        raise BadConfig("slots", str(limit), "a semaphore needs at least 1 slot")


class AcquireState:
    """What a waiter remembers between attempts, and how long it sleeps
    after each reply (protocol rule 6)."""

    def __init__(self, name: str, ttl_ms: int) -> None:
        self.name = name
        self.ttl_ms = ttl_ms
        #: The send instant of the latest attempt answered "held by someone
        #: else" (a semaphore: "every slot taken"), with the token it saw: a
        #: grant with a larger token was made after Redis processed that
        #: attempt (tokens only grow); any other grant (an old one, found
        #: late) must be claimed with its token.
        self.last_held: tuple[float, int] | None = None
        self.backoff = 0.05
        self._seen: tuple[str, int] | None = None
        self._told_quarantine = False

    def unavailable(self, e: LeaseholdError) -> float:
        log.warning("waiting for '%s': %s; retrying in %.2fs", self.name, e, self.backoff)
        w = self.backoff
        self.backoff = min(self.backoff * 2, 2.0)
        return w

    def after(self, r: p.AcquireReply, sent: float, confirmed: bool) -> float:
        """Seconds to sleep (unless woken) after a failed attempt sent at `sent`."""
        if isinstance(r, p.Queued):
            self.last_held = None
            log.debug("waiting for '%s': free, but %s is first in line", self.name, p.readable(r.head))
            wait = r.wait + p.jitter()
        elif isinstance(r, p.Held):
            self.last_held = (sent, r.info.token)
            key = (r.info.holder, r.info.token)
            if self._seen != key:
                log.info(
                    "waiting for '%s', held by %s (token %d), expires in %.1fs",
                    self.name,
                    r.info.readable,
                    r.info.token,
                    r.info.ttl_left,
                )
                self._seen = key
            self.backoff = 0.05
            # Only the first in line needs to be there the moment a crashed
            # holder's lease expires; the others spread out.
            wait = r.info.ttl_left if r.first else r.info.ttl_left + 0.001 + p.jitter()
        elif isinstance(r, p.Full):
            # Every slot taken: as a held lease, with the name's last token
            # (a slot handed over with a larger one was handed over after
            # this attempt) and the earliest slot's expiry.
            self.last_held = (sent, r.last_token)
            self.backoff = 0.05
            wait = r.wait if r.first else r.wait + 0.001 + p.jitter()
        elif isinstance(r, p.Quarantined):
            self.last_held = None
            if not self._told_quarantine:
                log.warning(
                    "'%s' is free, but this Redis may lack writes it confirmed before (it restarted, failed over "
                    "to a replica, or is new to leasehold): nobody starts for %.1fs, until every earlier holder's "
                    "deadline has passed. Avoid it with persistence (appendonly yes, appendfsync always) and "
                    "--min-replicas, or a Redis that has been up longer than the TTL",
                    self.name,
                    r.wait,
                )
                self._told_quarantine = True
            wait = r.wait + p.jitter()
        else:
            wait = 0.0
        return wait if confirmed else min(wait, p.UNCONFIRMED_CAP)


def random_id() -> str:
    """128 random bits in hex: a request id nobody else has."""
    return secrets.token_hex(16)


def reserved_lease_name(cache_name: str) -> str:
    """The token cache's refresher lease: `#` is in no user name."""
    return f"cache#{cache_name}"


# --- quotas -------------------------------------------------------------------


@dataclass(frozen=True)
class Taken:
    """What a quota take decided."""

    allowed: bool
    #: What is left in the current window after this take.
    remaining: int
    #: When the window resets (fixed) or the oldest take leaves it (sliding).
    reset_at: datetime
    #: The request id had been counted already (take_with_id): nothing more was taken.
    replayed: bool


def _check_key(what: str, key: str) -> None:
    from .errors import BadName

    try:
        p.validate_name(key)
    except BadName as e:
        raise BadConfig(what, rust_str(e.name[:64]), e.reason.replace("a lease name", "it")) from None


@dataclass(frozen=True)
class QuotaConfig:
    limit: int
    period: q.Period
    tz_name: str
    sliding_ms: int | None
    timeout: float
    remember: float

    @staticmethod
    def build(
        limit: int,
        per: str | p.Seconds,
        time_zone: str | None,
        sliding: bool,
        timeout: p.Seconds,
        remember: p.Seconds,
    ) -> QuotaConfig:
        if not isinstance(limit, int) or limit < 1 or limit > q.MAX_COUNT:
            raise BadConfig(
                "limit",
                str(limit),
                f"a quota allows from 1 to {q.MAX_COUNT} (2^53 - 1, the largest count Redis's Lua computes exactly)",
            )
        period = q.Period.of(per)
        sliding_ms = None
        if sliding:
            sliding_ms = period.sliding_ms()
            if sliding_ms is None:
                raise BadConfig(
                    "period",
                    str(period),
                    "a sliding window needs a fixed length (ms, s, m, h, d or w); a month or a year has none",
                )
        t, r = p.seconds(timeout), p.seconds(remember)
        if not 0.1 <= t <= 600:
            raise BadConfig("quota timeout", human_duration(max(t, 0)), "must be between 100ms and 10m")
        if r < t or r > 86_400:
            raise BadConfig(
                "request memory", human_duration(max(r, 0)), "must be at least the quota's timeout and at most 1 day"
            )
        _, tz_name = q.zone(time_zone)
        return QuotaConfig(limit, period, tz_name, sliding_ms, t, r)

    @property
    def tz(self) -> object:
        return q.zone(self.tz_name)[0]

    def check_key(self, what: str, key: str) -> None:
        _check_key(what, key)

    def check_request(self, request_id: str) -> None:
        if len(request_id.encode()) > 100:
            raise BadConfig("request id", rust_str(request_id[:64]) + "…", "is at most 100 bytes")
        _check_key("request id", request_id)

    def check_n(self, n: int) -> None:
        if n < 0 or n > self.limit:
            raise BadConfig(
                "count", str(n), f"is more than the limit of {self.limit}: such a take could never be allowed"
            )

    def scope(self) -> str:
        if self.sliding_ms is not None:
            return f"sliding:{self.sliding_ms}ms"
        if self.period.layout()[0] == "elapsed":
            return self.period.key_name()
        return f"{self.period.key_name()}@{self.tz_name}"

    def sliding_call(self, calls: Calls, key: str, n: int, request: str, remember: float) -> Call[list[int]]:
        assert self.sliding_ms is not None
        return calls.quota_sliding(key, self.scope(), request, self.limit, n, self.sliding_ms, int(remember * 1000))

    def sliding_taken(self, r: list[int]) -> Taken:
        assert self.sliding_ms is not None
        reset = min(max(r[2], 0), self.sliding_ms)
        return Taken(r[0] != 0, max(r[1], 0), datetime.now(timezone.utc) + timedelta(milliseconds=reset), r[0] == 2)

    def fixed_call(
        self, calls: Calls, key: str, n: int, request: str, remember: float, now_ms: int
    ) -> tuple[q.Window, Call[list[int]]]:
        tz, _ = q.zone(self.tz_name)
        w = q.window(now_ms, self.period, tz)
        # Counters outlive their window by a minute, for clocks slightly apart.
        expire_at = w.last + 60_000
        return w, calls.quota_fixed(
            key, self.scope(), w.id, request, self.limit, n, w.start, w.end, expire_at, int(remember * 1000)
        )

    def fixed_taken(self, r: list[int], w: q.Window) -> Taken:
        reset = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=w.end)
        return Taken(r[0] != 0, max(r[1], 0), reset, r[0] == 2)


# --- token cache ----------------------------------------------------------------

MAX_LIFETIME = 365 * 86_400.0


def check_fetched(value: str, life: float) -> tuple[str, float] | str:
    if not isinstance(value, str):
        return "the fetch returned something that is not a string"
    if life <= 0 or life > MAX_LIFETIME:
        return (
            f"the fetched value's lifetime ({human_duration(min(max(life, 0), MAX_LIFETIME * 2))}) "
            "is not between 1ms and 365 days"
        )
    return value, life


def cache_failure_text(e: LeaseholdError) -> str:
    """A failure as kept in Redis and published: `budget <limit> <reset>` or `fetch <message>`."""
    if isinstance(e, BudgetExhausted):
        return f"budget {e.limit} {e.reset}"
    if isinstance(e, FetchFailed):
        return f"fetch {e.message}"
    return f"fetch {e}"


def cache_failure_error(name: str, text: str, left: float | None) -> LeaseholdError:
    parts = text.split(" ", 2)
    if len(parts) == 3 and parts[0] == "budget":
        return BudgetExhausted(name, int(parts[1]) if parts[1].isdigit() else 0, parts[2])
    message = text[len("fetch ") :] if text.startswith("fetch ") else text
    if left is not None:
        message += f" (this was a recent fetch; the next may run in {human_duration(max(int(left), 1))})"
    return FetchFailed(name, message)


@dataclass
class CacheConfig:
    refresh_before: float
    fetch_timeout: float
    retry_failed_after: float
    budget: QuotaConfig | None
    warned: bool = False

    @staticmethod
    def build(
        refresh_before: p.Seconds,
        max_fetches_per_day: int | None,
        fetch_timeout: p.Seconds,
        time_zone: str | None,
        retry_failed_after: p.Seconds,
    ) -> CacheConfig:
        ft = p.seconds(fetch_timeout)
        try:
            p.ttl_ms(ft)
        except BadConfig:
            raise BadConfig(
                "fetch timeout", human_duration(max(ft, 0)), "must be between 100ms and 1 day, in whole milliseconds"
            ) from None
        rfa = p.seconds(retry_failed_after)
        if rfa > 3600:
            raise BadConfig("retry-failed-after", human_duration(rfa), "must be at most 1h")
        budget = None
        if max_fetches_per_day is not None:
            budget = QuotaConfig.build(max_fetches_per_day, "1d", time_zone, False, 5.0, 600.0)
        return CacheConfig(p.seconds(refresh_before), ft, rfa, budget)

    def check_name(self, name: str) -> None:
        if len(name.encode()) > p.MAX_NAME_LEN:
            raise BadConfig("cache name", rust_str(name[:64]), f"is at most {p.MAX_NAME_LEN} bytes")
        _check_key("cache name", name)

    def threshold(self, name: str, life: float) -> float:
        """Refresh when less than this is left: at most half the value's life."""
        half = life / 2
        if life == 0 or self.refresh_before <= half:
            return self.refresh_before
        if not self.warned:
            self.warned = True
            log.warning(
                "token cache '%s': the value lives %s, so refresh-before %s would refetch on every call; "
                "refreshing when half its life is left",
                name,
                human_duration(life),
                human_duration(self.refresh_before),
            )
        return half

    def fresh(self, name: str, entry: CacheEntry) -> str | None:
        if entry.value is None:
            return None
        v, left, life = entry.value
        return v if left > self.threshold(name, life) else None

    def after_failure(self, name: str, entry: CacheEntry) -> str | LeaseholdError | None:
        """A fetch failed moments ago: the old value while valid, else that failure."""
        if entry.failure is None:
            return None
        if entry.value is not None and entry.value[1] > 0:
            return entry.value[0]
        return cache_failure_error(name, entry.failure[0], entry.failure[1])
