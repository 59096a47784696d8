"""Errors: a small hierarchy whose messages are the CLI's (``src/error.rs``).

Losing a lease is not an error: it is reported by ``Lease.lost`` and
``Lease.lost_reason``, because it is an expected event.

Every message says what to do next; none contains a password (URLs are shown
with their userinfo redacted, see :func:`redact_url`).
"""

from __future__ import annotations

# The CLI's exit codes (src/bin/leasehold/exit.rs), for scripts that want the
# same status as `leasehold` would give.
EXIT_USAGE = 64
EXIT_UNAVAILABLE = 69
EXIT_SOFTWARE = 70
EXIT_WAIT_ELAPSED = 75


def redact_url(url: str) -> str:
    """Hides the password of a Redis URL, for logs and errors (as url.rs)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    slash = rest.find("/")
    authority, tail = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    userinfo, at, host = authority.rpartition("@")
    if not at:
        return url
    user = userinfo.split(":", 1)[0]
    if ":" in userinfo:
        return f"{scheme}://{user}:***@{host}{tail}"
    return f"{scheme}://***@{host}{tail}"


def rust_str(s: str) -> str:
    """A string as Rust's `{:?}` shows it (the CLI's quoting of names)."""
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def debug_duration(seconds: float) -> str:
    """A duration as Rust's `{:?}` shows it (`5s`, `1.5s`, `250ms`, `0ns`)."""
    ns = max(round(seconds * 1e9), 0)
    for unit, div in (("s", 1_000_000_000), ("ms", 1_000_000), ("µs", 1_000)):
        if ns >= div:
            whole, frac = divmod(ns, div)
            digits = len(str(div)) - 1
            text = str(whole)
            if frac:
                text += "." + str(frac).rjust(digits, "0").rstrip("0")
            return text + unit
    return f"{ns}ns"


_HUMAN_UNITS = (
    ("year", 31_557_600_000_000_000),
    ("month", 2_630_016_000_000_000),
    ("day", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
)


def human_duration(seconds: float) -> str:
    """A duration as humantime formats it (`10m`, `2ms 500us`, `0s`)."""
    ns = max(round(seconds * 1e9), 0)
    if ns == 0:
        return "0s"
    parts = []
    for unit, size in _HUMAN_UNITS:
        n, ns = divmod(ns, size)
        if n:
            plural = unit in ("year", "month", "day") and n > 1
            parts.append(f"{n}{unit}" + ("s" if plural else ""))
    return " ".join(parts)


class LeaseholdError(Exception):
    """Base of every error leasehold raises. `exit_code` is what the CLI exits with."""

    exit_code = EXIT_SOFTWARE

    @property
    def is_unavailable(self) -> bool:
        """True when Redis could not be reached or answered too late: a retry may succeed."""
        return isinstance(self, Unavailable)


class Unavailable(LeaseholdError):
    """Redis could not be reached, or did not answer in time (transient)."""

    exit_code = EXIT_UNAVAILABLE


class BadUrl(LeaseholdError, ValueError):
    exit_code = EXIT_USAGE

    def __init__(self, url: str, reason: str) -> None:
        self.url = redact_url(url)
        self.reason = reason.replace(url, self.url) if url else reason
        super().__init__(f"bad Redis URL {self.url}: {self.reason} (expected redis://[user:password@]host:port[/db])")


class Unreachable(Unavailable):
    def __init__(self, url: str, source: str) -> None:
        self.url = redact_url(url)
        super().__init__(f"Redis at {self.url} is unreachable: {source} (is redis-server running there?)")


class AuthFailed(LeaseholdError):
    exit_code = EXIT_UNAVAILABLE

    def __init__(self, url: str, source: str) -> None:
        self.url = redact_url(url)
        super().__init__(
            f"Redis at {self.url} refused authentication: {source} "
            "(check the user and password in the URL or LEASEHOLD_REDIS_PASSWORD)"
        )


class CommandError(LeaseholdError):
    """A command failed after the connection was up (Rust's `Error::Redis`)."""

    def __init__(self, op: str, source: str) -> None:
        self.op = op
        super().__init__(f"Redis {op} failed: {source}")


class CommandUnavailable(CommandError, Unavailable):
    """A command failed in a way that may pass (connection lost, failover, loading)."""


class NoQuorum(Unavailable):
    def __init__(self, op: str, answered: int, needed: int, total: int, last: str) -> None:
        super().__init__(
            f"quorum {op} failed: {answered} of {total} Redis servers answered, {needed} needed "
            f"(last error: {last}); bring servers back or check the network"
        )


class NotReplicated(Unavailable):
    def __init__(self, op: str, want: int) -> None:
        super().__init__(
            f"{op} was not confirmed by {want} replica(s) in time: a failover could lose it "
            "(check the replicas, or lower --min-replicas)"
        )


class Refused(LeaseholdError):
    """Redis refused a command: an ACL without the rights leasehold needs."""

    exit_code = EXIT_UNAVAILABLE

    def __init__(self, op: str, message: str) -> None:
        super().__init__(f"Redis refused {op}: {message} (grant the ACL rule in the README's Security section)")


class Timeout(Unavailable):
    def __init__(self, op: str, after: float) -> None:
        super().__init__(
            f"Redis {op} timed out after {debug_duration(after)} (is Redis overloaded or the network down?)"
        )


class ForeignKey(LeaseholdError):
    def __init__(self, key: str, found: str) -> None:
        self.key, self.found = key, found
        super().__init__(
            f"key {key} already exists with type {found}, not written by leasehold: "
            "choose another lease name or key prefix, or delete the key"
        )


class NameInUse(LeaseholdError):
    exit_code = EXIT_USAGE

    def __init__(self, kind: str) -> None:
        self.kind = kind
        super().__init__(
            f"the name is in use as a {kind}: a lease and a semaphore of one name would not exclude "
            "each other; use another name, or the same kind everywhere"
        )


class ProtocolError(LeaseholdError):
    def __init__(self, op: str, detail: str) -> None:
        super().__init__(f"unexpected reply from Redis to {op}: {detail} (is this a Redis 6.2 or later?)")


class BadName(LeaseholdError, ValueError):
    exit_code = EXIT_USAGE

    def __init__(self, name: str, reason: str) -> None:
        shown = name[:64] + "…" if len(name.encode()) > 64 else name
        self.name, self.reason = name, reason
        super().__init__(f"bad lease name {rust_str(shown)}: {reason}")


class BadConfig(LeaseholdError, ValueError):
    exit_code = EXIT_USAGE

    def __init__(self, what: str, value: str, rule: str) -> None:
        self.what, self.value, self.rule = what, value, rule
        super().__init__(f"bad {what} {value}: {rule}")


class AcquireTimeout(LeaseholdError, TimeoutError):
    exit_code = EXIT_WAIT_ELAPSED

    def __init__(self, name: str, after: float) -> None:
        self.name, self.after = name, after
        super().__init__(f"lease {rust_str(name)} was not acquired within {debug_duration(after)}")


class BudgetExhausted(LeaseholdError):
    exit_code = EXIT_WAIT_ELAPSED

    def __init__(self, name: str, limit: int, reset: str) -> None:
        self.name, self.limit, self.reset = name, limit, reset
        super().__init__(
            f"token cache {rust_str(name)}: the budget of {limit} fetches per day is spent and no valid "
            f"value is cached; it resets at {reset}"
        )


class FetchFailed(LeaseholdError):
    def __init__(self, name: str, message: str) -> None:
        self.name, self.message = name, message
        super().__init__(f"token cache {rust_str(name)}: fetching a new value failed: {message}")


class QuotaUnknown(Unavailable):
    def __init__(self, key: str, after: float, last: str, request: str, remember: float) -> None:
        self.key, self.request = key, request
        super().__init__(
            f"quota take on {rust_str(key)} got no answer within {debug_duration(after)} (last: {last}): "
            f"it may or may not have counted; a retry with request id {request} within "
            f"{human_duration(remember)} counts it at most once"
        )


class NotHolder(LeaseholdError):
    def __init__(self, name: str) -> None:
        super().__init__(f"lease {rust_str(name)} is no longer held by us")


# Substrings of Redis errors that mean "try again later" (failover, resharding,
# loading a dataset), as in Error::is_unavailable.
_TRANSIENT = (
    "READONLY",
    "LOADING",
    "MASTERDOWN",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MasterNameNotFoundBySentinel",
    "NoValidReplicasFoundBySentinel",
    "No master found",
)


def from_redis(op: str, e: BaseException) -> LeaseholdError:
    """Maps a redis-py exception to leasehold's error (as Error::redis)."""
    import redis.exceptions as rx

    text = str(e)
    if "LEASEHOLD_FOREIGN" in text:
        detail = text.split("LEASEHOLD_FOREIGN", 1)[1].strip(' ":')
        parts = detail.split()
        return ForeignKey(parts[0] if parts else "", parts[1] if len(parts) > 1 else "unknown")
    if "LEASEHOLD_KIND" in text:
        other = text.split("LEASEHOLD_KIND", 1)[1].lstrip(' ":')
        return NameInUse("semaphore" if other.startswith("sem") else "lease")
    if "NOPERM" in text:
        return Refused(op, text)
    if "WRONGTYPE" in text:
        return ForeignKey("(one of the lease's keys)", "another type")
    if isinstance(e, (rx.ConnectionError, rx.TimeoutError, OSError)) or any(m in text for m in _TRANSIENT):
        return CommandUnavailable(op, text or type(e).__name__)
    if isinstance(e, rx.RedisClusterException) and not isinstance(e, rx.ResponseError):
        return CommandUnavailable(op, text or type(e).__name__)
    return CommandError(op, text or type(e).__name__)
