"""The protocol of docs/protocol.md without any I/O: key schema, names, holder
ids, deadline arithmetic, the scripts' arguments and replies, the events.

The sync and asyncio clients share all of it, so that they cannot disagree
with each other (or with the Rust library) on what a reply means.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import socket
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources

from .errors import BadConfig, BadName, ProtocolError, human_duration

DEFAULT_PREFIX = "leasehold:"
MAX_NAME_LEN = 200
#: Default TTL of a lease, seconds.
DEFAULT_TTL = 10.0
MIN_TTL_MS = 100
MAX_TTL_MS = 86_400_000
#: Cap on a sleep while release events cannot be received (rule 6).
UNCONFIRMED_CAP = 0.25
#: Jitter behind the first in line when a holder's TTL runs out.
EXPIRY_JITTER = 0.003
#: How long a subscription request or a pub/sub reply may take.
REQUEST_TIMEOUT = 1.0
#: How often an idle pub/sub connection is checked with a PING.
KEEPALIVE = 2.0
#: How long an observer registration lasts (renewed at half-time).
OBSERVE_FOR_MS = 60_000

Seconds = float | int | timedelta

_NAME = re.compile(r"^[A-Za-z0-9\-_.:/@+=]*$")


def seconds(d: Seconds) -> float:
    return d.total_seconds() if isinstance(d, timedelta) else float(d)


def validate_name(name: str) -> None:
    """1 to 200 bytes of `A-Z a-z 0-9 - _ . : / @ + =` (keys.rs)."""
    if not isinstance(name, str):
        raise BadName(repr(name), "a lease name is a string")
    if name == "":
        raise BadName(name, "a lease name cannot be empty")
    if len(name.encode()) > MAX_NAME_LEN:
        raise BadName(name, "a lease name is at most 200 bytes")
    if not _NAME.match(name) or not name.isascii():
        raise BadName(name, "use only letters, digits and - _ . : / @ + = (no spaces, braces or glob characters)")


def validate_key_name(name: str) -> None:
    """A user name, or one of leasehold's own (`cache#<user name>`)."""
    kind, sep, rest = name.partition("#")
    if sep and kind == "cache":
        validate_name(rest)
    else:
        validate_name(name)


def validate_prefix(prefix: str) -> None:
    if len(prefix.encode()) > 64 or not _NAME.match(prefix) or not prefix.isascii():
        raise BadConfig(
            "key prefix",
            rust_debug(prefix),
            "use at most 64 letters, digits and - _ . : / @ + = (braces would break the hash tag)",
        )


def rust_debug(s: str) -> str:
    from .errors import rust_str

    return rust_str(s)


def ttl_ms(ttl: Seconds, what: str = "TTL") -> int:
    """Validates a TTL as config.rs does; returns whole milliseconds."""
    s = seconds(ttl)
    ms = s * 1000
    shown = human_duration(max(s, 0.0))
    if s <= 0:
        raise BadConfig(what, shown, "a lease needs a TTL above zero (try 10s)")
    if ms < MIN_TTL_MS:
        raise BadConfig(
            what,
            shown,
            f"must be at least 100ms: below that the {human_duration(drift_ms(ms) / 1000)} drift margin "
            "and one Redis round trip leave no time to hold it",
        )
    if ms > MAX_TTL_MS:
        raise BadConfig(what, shown, "must be at most 1 day; renewal keeps a lease as long as needed")
    if abs(ms - round(ms)) > 1e-6:
        raise BadConfig(what, shown, "must be a whole number of milliseconds")
    return round(ms)


# --- deadline arithmetic (src/deadline.rs) ---------------------------------


def drift_ms(ttl_ms: float) -> float:
    """Clock drift allowed per TTL: 1 % plus 2 ms, as in Redlock."""
    return ttl_ms / 100 + 2


def safety_deadline(sent: float, ttl_ms: float) -> float:
    """The monotonic instant until which a lease confirmed by a request sent
    at `sent` is certainly ours: `sent + ttl - drift` (rule 1)."""
    return sent + max(ttl_ms - drift_ms(ttl_ms), 0) / 1000.0


def renew_every(ttl_ms: int) -> float:
    return ttl_ms / 3000.0


def retry_every(ttl_ms: int) -> float:
    """After a failed renewal: every max(ttl/20, 10 ms), at most 500 ms and
    at most the renewal interval (protocol rule 2)."""
    return min(max(ttl_ms / 20000.0, 0.010), 0.5, renew_every(ttl_ms))


def queue_margin_ms(ttl_ms: int) -> int:
    """How long past its next attempt a waiter's place in line is kept."""
    return min(max(ttl_ms // 10, 100), 1000)


def jitter(max_s: float = EXPIRY_JITTER) -> float:
    return random.random() * max_s


# --- identities ---------------------------------------------------------------


def holder_id() -> str:
    """`<host>/<pid>/<32 hex digits>`, new for every acquisition."""
    host = socket.gethostname().replace("/", "_") or "unknown-host"
    return f"{host}/{os.getpid()}/{secrets.token_hex(16)}"


def readable(holder: str) -> str:
    """`host-b pid 4121`, for people."""
    parts = holder.split("/")
    if len(parts) >= 2 and parts[1].isdigit():
        return f"{parts[0]} pid {parts[1]}"
    return holder


# --- keys ---------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    lease: str
    queue: str
    qinfo: str
    slots: str
    slotinfo: str
    events: str
    epoch: str


_slot_tags: dict[int, str] = {}


def _key_slot(key: str) -> int:
    from redis.crc import key_slot

    return int(key_slot(key.encode()))


def slot_epoch_tag(slot: int) -> str:
    """The tag `e<i>` (smallest i) that hashes to `slot`: on Cluster the
    server marker lives in each lease's own slot (node.rs, SLOT_TAGS)."""
    tag = _slot_tags.get(slot)
    if tag is None:
        i = 0
        while True:
            t = f"e{i}"
            s = _key_slot(t)
            _slot_tags.setdefault(s, t)
            if s == slot:
                tag = t
                break
            i += 1
    return tag


def keys_for(prefix: str, name: str, cluster: bool = False) -> Keys:
    validate_key_name(name)
    t = "{" + name + "}"
    k = Keys(
        lease=f"{prefix}{t}:lease",
        queue=f"{prefix}{t}:queue",
        qinfo=f"{prefix}{t}:qinfo",
        slots=f"{prefix}{t}:slots",
        slotinfo=f"{prefix}{t}:slotinfo",
        events=f"{prefix}{t}:events",
        epoch=f"{prefix}epoch",
    )
    if cluster:
        tag = slot_epoch_tag(_key_slot(k.lease))
        k = Keys(k.lease, k.queue, k.qinfo, k.slots, k.slotinfo, k.events, f"{prefix}{{{tag}}}:epoch")
    return k


# --- scripts ------------------------------------------------------------------

# Scripts run after prelude.lua (docs/protocol.md: prelude, a newline, the script).
_WITH_PRELUDE = {
    "acquire",
    "renew",
    "release",
    "leave",
    "status",
    "observe",
    "sem_acquire",
    "sem_renew",
    "sem_release",
    "sem_leave",
}


@dataclass(frozen=True)
class Script:
    name: str
    body: str
    sha: str


def _load_scripts() -> dict[str, Script]:
    import hashlib

    base = resources.files(__package__ or "leasehold").joinpath("scripts")
    prelude = base.joinpath("prelude.lua").read_text(encoding="utf-8")
    out = {}
    for entry in base.iterdir():
        fname = entry.name
        if not fname.endswith(".lua") or fname == "prelude.lua":
            continue
        name = fname[: -len(".lua")]
        body = entry.read_text(encoding="utf-8")
        if name in _WITH_PRELUDE:
            body = prelude + "\n" + body
        out[name] = Script(name, body, hashlib.sha1(body.encode()).hexdigest())
    return out


SCRIPTS = _load_scripts()


# --- replies ------------------------------------------------------------------


def _s(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return str(v)


def _int(op: str, v: object) -> int:
    try:
        return int(_s(v)) if not isinstance(v, int) else v
    except ValueError:
        raise ProtocolError(op, f"expected an integer, got {v!r}") from None


def _list(op: str, v: object) -> list[object]:
    if not isinstance(v, list):
        raise ProtocolError(op, f"expected an array, got {v!r}")
    return v


def _at(op: str, items: list[object], i: int) -> object:
    if i >= len(items):
        raise ProtocolError(op, "reply too short")
    return items[i]


@dataclass(frozen=True)
class HolderInfo:
    """The current holder of a lease (or a semaphore slot), as Redis sees it."""

    holder: str
    value: str
    token: int
    #: Seconds until it expires unless renewed.
    ttl_left: float

    @property
    def readable(self) -> str:
        return readable(self.holder)


@dataclass(frozen=True)
class LeaseStatus:
    """A lease as Redis sees it (status.lua)."""

    name: str
    #: None when the lease is free.
    holder: HolderInfo | None
    #: The last fencing token issued for this name (0 if none is remembered).
    last_token: int
    #: The name is in use as a semaphore.
    semaphore: bool
    #: Free, but an acquisition now would wait this long (seconds): the server
    #: may lack writes its predecessor confirmed.
    quarantine: float | None


@dataclass(frozen=True)
class Acquired:
    token: int


@dataclass(frozen=True)
class Held:
    info: HolderInfo
    first: bool


@dataclass(frozen=True)
class Full:
    """Every slot of a semaphore is taken (the earliest expires in `wait`)."""

    wait: float
    used: int
    #: We are first in line: the one waiter that must come on time.
    first: bool
    #: The name's last fencing token as of this attempt: a slot handed over
    #: with a larger one was handed over after it (as Held's token for a lease).
    last_token: int


@dataclass(frozen=True)
class Quarantined:
    wait: float


@dataclass(frozen=True)
class Queued:
    wait: float
    head: str


AcquireReply = Acquired | Held | Full | Quarantined | Queued


def acquire_args(
    k: Keys, holder: str, ttl: int, value: str, queue: bool, replicas: int
) -> tuple[list[str], list[object]]:
    return (
        [k.lease, k.queue, k.qinfo, k.epoch, k.slots],
        [holder, ttl, value, k.events, "wait" if queue else "try", queue_margin_ms(ttl), replicas or ""],
    )


def sem_acquire_args(
    k: Keys, holder: str, ttl: int, value: str, limit: int, queue: bool, replicas: int
) -> tuple[list[str], list[object]]:
    # A waiter keeps a place in the name's queue, as for a lease. Like the
    # lease's attempts, no inbox: a freed slot is handed over on the name's
    # channel, where the waiter's mailbox listens (_notify.py).
    return (
        [k.slots, k.slotinfo, k.lease, k.epoch, k.queue, k.qinfo],
        [
            holder,
            ttl,
            value,
            limit,
            k.events,
            replicas or "",
            "wait" if queue else "try",
            queue_margin_ms(ttl),
            "",
        ],
    )


def _ms(op: str, items: list[object], i: int) -> float:
    return max(_int(op, _at(op, items, i)), 0) / 1000.0


def parse_acquire(v: object) -> AcquireReply:
    op = "acquire"
    r = _list(op, v)
    code = _int(op, _at(op, r, 0))
    if code == 1:
        return Acquired(_int(op, _at(op, r, 1)))
    if code == 0:
        info = HolderInfo(
            holder=_s(_at(op, r, 2)),
            value=_s(_at(op, r, 3)),
            token=_int(op, _at(op, r, 4)) if _s(_at(op, r, 4)) else 0,
            ttl_left=_ms(op, r, 1),
        )
        first = len(r) > 5 and _int(op, r[5]) == 1
        return Held(info, first)
    if code == 2:
        return Quarantined(_ms(op, r, 1))
    if code == 3:
        return Queued(_ms(op, r, 1), _s(_at(op, r, 2)))
    raise ProtocolError(op, f"status {code}")


def parse_sem_acquire(v: object) -> AcquireReply:
    op = "semaphore"
    r = _list(op, v)
    code = _int(op, _at(op, r, 0))
    if code == 1:
        return Acquired(_int(op, _at(op, r, 1)))
    if code == 0:
        first = len(r) > 3 and _int(op, r[3]) == 1
        last = _int(op, r[4]) if len(r) > 4 and _s(r[4]) else 0
        return Full(_ms(op, r, 1), max(_int(op, _at(op, r, 2)), 0), first, last)
    if code == 2:
        return Quarantined(_ms(op, r, 1))
    if code == 3:
        # A slot is free, but the waiters before us in line take it.
        return Queued(_ms(op, r, 1), _s(_at(op, r, 2)))
    raise ProtocolError(op, f"status {code}")


def parse_renew(v: object) -> str | None:
    """None when renewed, else why it was refused (node.rs parse_renew)."""
    r = _list("renew", v)
    if _int("renew", _at("renew", r, 0)) == 1:
        return None
    now = _s(r[1]) if len(r) > 1 else ""
    if now == "":
        return "the lease key is gone (expired, deleted, or Redis lost its data)"
    if now.startswith("foreign type"):
        return f"the lease key was overwritten: {now}"
    return f"now held by {readable(now)}"


def parse_status(name: str, v: object) -> LeaseStatus:
    op = "status"
    r = _list(op, v)
    pttl = _int(op, _at(op, r, 0))
    last = _int(op, _at(op, r, 4)) if _s(_at(op, r, 4)) else 0
    holder = None
    if pttl != -2:
        holder = HolderInfo(
            holder=_s(_at(op, r, 1)),
            value=_s(_at(op, r, 2)),
            token=_int(op, _at(op, r, 3)) if _s(_at(op, r, 3)) else 0,
            ttl_left=max(pttl, 0) / 1000.0,
        )
    q = max(_int(op, _at(op, r, 6)), 0) / 1000.0
    return LeaseStatus(name, holder, last, _s(_at(op, r, 5)) == "sem", q if q > 0 else None)


def parse_sem_status(v: object) -> list[HolderInfo]:
    op = "semaphore status"
    r = _list(op, v)
    out = []
    for i in range(0, len(r) - 2, 3):
        token, _, value = _s(r[i + 2]).partition(" ")
        out.append(
            HolderInfo(
                holder=_s(r[i]),
                value=value,
                token=int(token) if token.isdigit() else 0,
                ttl_left=max(_int(op, r[i + 1]), 0) / 1000.0,
            )
        )
    return out


# --- events (notify.rs) -------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One message on `P{N}:events`: kind is acquired, released, granted,
    proclaimed, stored, failed, or reconnected (ours: events may have been missed)."""

    kind: str
    token: int = 0
    head: str = ""
    claim: float = 0.0
    next: str = ""
    message: str = ""


RECONNECTED = Event("reconnected")


def parse_event(payload: str) -> Event | None:
    parts = payload.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    kind, token = parts[0], int(parts[1])
    rest = parts[2] if len(parts) > 2 else ""
    if kind in ("acquired", "proclaimed", "stored"):
        return Event(kind, token)
    if kind == "released":
        return Event(kind, token, head=rest)
    if kind == "granted":
        f = rest.split(" ")
        if len(f) < 2 or not f[1].isdigit():
            return None
        return Event(kind, token, head=f[0], claim=int(f[1]) / 1000.0, next=f[2] if len(f) > 2 else "")
    if kind == "failed":
        return Event(kind, token, message=rest)
    return None


# --- lost reasons (keeper.rs LostReason) ---------------------------------------


def refused_reason(why: str) -> str:
    return f"renewal refused: {why}"


def unconfirmed_reason(last_error: str) -> str:
    return f"no renewal confirmed before the safety deadline (last error: {last_error})"


RELEASED = "released"
