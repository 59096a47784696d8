"""The blocking client: leases and semaphore slots renewed by a thread each,
elections, quotas and the token cache."""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import Any

import redis

from . import _protocol as p
from ._common import (
    AcquireState,
    CacheConfig,
    QuotaConfig,
    Taken,
    cache_failure_error,
    cache_failure_text,
    check_fetched,
    check_lease_args,
    random_id,
    reserved_lease_name,
)
from ._connect import PubSubSource, TlsFiles, classify, parse, sync_client
from ._node import CacheEntry, Calls, SyncNode
from ._notify import Notifier, Subscription
from .errors import (
    AcquireTimeout,
    BadConfig,
    BudgetExhausted,
    FetchFailed,
    LeaseholdError,
    NotHolder,
    QuotaUnknown,
    human_duration,
)

log = logging.getLogger("leasehold")

_UNSET: Any = object()
OnLost = Callable[[str], object]


class _Hold:
    """One acquisition, kept by its own renewal thread (protocol rules 1–5)."""

    def __init__(self, lease: Lease, holder: str, token: int, sent: float, first_ttl_ms: float) -> None:
        self.lease = lease
        self.node = lease._client._node
        self.slot = lease._limit is not None
        self.name, self.holder, self.token = lease.name, holder, token
        self.ttl = lease._ttl
        self.cond = threading.Condition()
        self.deadline = p.safety_deadline(sent, first_ttl_ms)
        # A short first period (a grant's claim window) is renewed within
        # its first third, like any TTL.
        self.due = sent + min(p.renew_every(self.ttl), first_ttl_ms / 3000)
        if sent < lease._client._reconnected:
            self.due = time.monotonic()
        self.reason: str | None = None
        self.stopped = False
        self.call: threading.Thread | None = None
        self.last_error = "none"
        self.lost = lease.lost
        self.thread = threading.Thread(target=self._keep, name=f"leasehold-renew {self.name}", daemon=True)

    def held(self) -> bool:
        with self.cond:
            return self.reason is None and not self.stopped and time.monotonic() < self.deadline

    def renew_now(self) -> None:
        """The server may have restarted: renew at once (rule 8)."""
        with self.cond:
            if self.call is None:
                self.due = time.monotonic()
                self.cond.notify_all()

    def _lose(self, reason: str) -> None:
        """With the lock held: the lease is lost; callers report after unlocking."""
        self.reason = reason
        self.lost.set()
        self.cond.notify_all()

    def _report(self, reason: str) -> None:
        log.warning("lease '%s' lost: %s", self.name, reason)
        cb = self.lease._on_lost
        if cb is not None:
            try:
                cb(reason)
            except Exception:
                log.exception("leasehold: on_lost callback for '%s' failed", self.name)

    def _keep(self) -> None:
        while True:
            reason = ""
            with self.cond:
                while True:
                    if self.stopped or self.reason is not None:
                        return
                    now = time.monotonic()
                    if now >= self.deadline:
                        reason = p.unconfirmed_reason(self.last_error)
                        self._lose(reason)
                        break
                    if now >= self.due:
                        break
                    self.cond.wait(min(self.due, self.deadline) - now)
            if reason:
                self._report(reason)
                return
            sent = time.monotonic()
            box: list[tuple[str, str | None]] = []
            call = threading.Thread(target=self._renew_once, args=(box,), name="leasehold-renew-call", daemon=True)
            with self.cond:
                if self.stopped:
                    return
                # Started under the lock: release() sees either no renewal
                # or one it can wait for, never one about to start.
                self.call = call
                call.start()
            # A renewal in flight is abandoned at the deadline: the lease is
            # lost then, whatever the reply says later.
            call.join(max(self.deadline - time.monotonic(), 0))
            report = None
            with self.cond:
                if call.is_alive():
                    if not self.stopped and self.reason is None:
                        report = p.unconfirmed_reason(self.last_error)
                        self._lose(report)
                else:
                    self.call = None
                    self.cond.notify_all()
                    if not self.stopped and self.reason is None and box:
                        what, detail = box[0]
                        if what == "ok":
                            self.deadline = p.safety_deadline(sent, self.ttl)
                            self.due = sent + p.renew_every(self.ttl)
                            if sent < self.lease._client._reconnected:
                                self.due = time.monotonic()
                        elif what == "refused":
                            report = p.refused_reason(detail or "")
                            self._lose(report)
                        else:
                            self.last_error = detail or "unknown"
                            log.debug("lease '%s': renewal failed, retrying: %s", self.name, detail)
                            self.due = min(time.monotonic() + p.retry_every(self.ttl), self.deadline)
                stop = self.stopped or self.reason is not None
            if report:
                self._report(report)
            if stop:
                return

    def _renew_once(self, box: list[tuple[str, str | None]]) -> None:
        try:
            why = self.node.renew(self.slot, self.name, self.holder, self.ttl)
        except LeaseholdError as e:
            box.append(("error", str(e)))
        except Exception as e:  # noqa: BLE001 - reported as an unconfirmed renewal
            box.append(("error", repr(e)))
        else:
            box.append(("ok", None) if why is None else ("refused", why))

    def stop(self) -> str | None:
        """Stops renewal and waits for a renewal in flight (it cannot outlive
        the deadline; bounded by the TTL). Returns the loss reason, if lost."""
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
            call = self.call
        if call is not None:
            call.join(self.ttl / 1000)
            if call.is_alive():
                log.warning("lease '%s': a renewal in flight did not land within the TTL; releasing anyway", self.name)
        with self.cond:
            return self.reason


class Lease:
    """A lease (or, from :meth:`Client.semaphore`, one slot of a semaphore).

    Use it as a context manager (``with client.lease("report", ttl=10) as lease:``)
    or call :meth:`acquire` / :meth:`try_acquire` and :meth:`release`. While held
    it is renewed by a background thread every TTL/3; :attr:`lost` is set (and
    ``on_lost`` called with the reason) when a renewal is refused or none is
    confirmed before the safety deadline, which is strictly before Redis could
    give the lease to anyone else. Pass :attr:`token` to every resource the
    guarded work writes to.
    """

    def __init__(
        self,
        client: Client,
        name: str,
        ttl: p.Seconds,
        *,
        value: str = "",
        timeout: p.Seconds | None = None,
        min_validity: p.Seconds = 0.0,
        on_lost: OnLost | None = None,
        limit: int | None = None,
        _reserved: bool = False,
    ) -> None:
        check_lease_args(name, limit, _reserved)
        self._client = client
        self.name = name
        self._ttl = p.ttl_ms(ttl)
        self.value = value
        self._timeout = None if timeout is None else p.seconds(timeout)
        self._min_validity = p.seconds(min_validity)
        self._on_lost = on_lost
        self._limit = limit
        #: Set when the lease is no longer ours: lost (see :attr:`lost_reason`)
        #: or released. A new Event for every acquisition.
        self.lost = threading.Event()
        self._h: _Hold | None = None
        self._last_reason: str | None = None

    def __repr__(self) -> str:
        state = "held" if self.is_held else "not held"
        return f"<leasehold.Lease {self.name!r} {state} token={self.token}>"

    @property
    def ttl(self) -> float:
        return self._ttl / 1000

    @property
    def token(self) -> int | None:
        """The fencing token of the current (or last) acquisition."""
        return self._h.token if self._h else None

    @property
    def holder(self) -> str | None:
        """This acquisition's holder id, as stored in Redis."""
        return self._h.holder if self._h else None

    @property
    def deadline(self) -> float | None:
        """The `time.monotonic()` instant until which the lease is certainly
        ours, or None when not held."""
        h = self._h
        if h is None:
            return None
        with h.cond:
            return None if h.reason is not None or h.stopped else h.deadline

    @property
    def is_held(self) -> bool:
        """True while held and before the safety deadline."""
        return self._h is not None and self._h.held()

    @property
    def lost_reason(self) -> str | None:
        """Why the lease is no longer ours (`renewal refused: …`, `no renewal
        confirmed before the safety deadline …`, or `released`); None while held."""
        h = self._h
        if h is None:
            return self._last_reason
        with h.cond:
            if h.reason is None and not h.stopped and time.monotonic() >= h.deadline:
                return p.unconfirmed_reason(h.last_error)
            return h.reason

    # --- acquiring --------------------------------------------------------

    def try_acquire(self) -> bool:
        """One attempt: True when the lease is now ours."""
        self._fresh()
        holder = p.holder_id()
        sent = time.monotonic()
        r = self._attempt(holder, queue=False)
        if isinstance(r, p.Acquired):
            self._start(holder, r.token, sent, self._ttl)
            return True
        return False

    def acquire(self, timeout: p.Seconds | None = _UNSET) -> Lease:
        """Waits until the lease is ours — woken at once when it is released,
        or sleeping until the holder's TTL runs out after a crash — and returns
        it. Raises :class:`~leasehold.errors.AcquireTimeout` when `timeout`
        (seconds; default: the lease's `timeout`, None = forever) elapses."""
        self._fresh()
        t = self._timeout if timeout is _UNSET else (None if timeout is None else p.seconds(timeout))
        self._wait(t)
        return self

    def _fresh(self) -> None:
        if self._h is not None and self._h.held():
            raise BadConfig("acquire", rust_name(self.name), "this lease is already held by this object")
        self._client._check_open()
        self.lost = threading.Event()

    def _attempt(self, holder: str, queue: bool) -> p.AcquireReply:
        """One attempt at the lease or, for a semaphore, at one of its slots."""
        return self._client._node.attempt(self._limit, self.name, holder, self._ttl, self.value, queue)

    def _wait(self, timeout: float | None) -> None:
        client = self._client
        holder = p.holder_id()
        give_up = None if timeout is None else time.monotonic() + timeout
        won = False
        sub: Subscription | None = None
        st = AcquireState(self.name, self._ttl)
        try:
            # Fast path: a free lease costs one round trip, no subscription.
            sent = time.monotonic()
            try:
                r = self._attempt(holder, queue=True)
                if isinstance(r, p.Acquired):
                    self._start(holder, r.token, sent, self._ttl)
                    won = True
                    return
            except LeaseholdError as e:
                if not e.is_unavailable:
                    raise
            # Subscribe and wait for Redis's confirmation, *then* attempt: a
            # release published after a failed attempt cannot be missed.
            sub = client._notifier.subscribe(client._node.calls.keys(self.name).events)
            woken = threading.Event()
            mb = sub.mailbox(holder, woken.set)
            while True:
                if give_up is not None and time.monotonic() >= give_up:
                    raise AcquireTimeout(self.name, timeout or 0.0)
                confirmed = sub.ensure_confirmed()
                # What the line told us before this attempt is stale once it is sent
                # (a grant kept across a failed attempt may come from a server that
                # restarted without it); the attempt itself finds a grant made before it.
                mb.take_grant()
                mb.take_on_deck()
                sent = time.monotonic()
                try:
                    r = self._attempt(holder, queue=True)
                except LeaseholdError as e:
                    if not e.is_unavailable:
                        raise
                    pause = st.unavailable(e)
                    left = pause if give_up is None else min(pause, give_up - time.monotonic())
                    time.sleep(max(left, 0))
                    continue
                if isinstance(r, p.Acquired):
                    self._start(holder, r.token, sent, self._ttl)
                    won = True
                    return
                # Counted from the attempt's send instant: the first in line
                # then comes at the crashed holder's expiry, not a round trip late.
                until = sent + st.after(r, sent, confirmed)
                while True:
                    end = until if give_up is None else min(until, give_up)
                    left = end - time.monotonic()
                    if left <= 0:
                        break
                    if not woken.wait(left):
                        continue
                    woken.clear()
                    grant = mb.take_grant()
                    if grant is not None:
                        if self._take_grant(holder, grant, st.last_held):
                            won = True
                            return
                        break
                    on_deck = mb.take_on_deck()
                    if on_deck is not None:
                        # Next after a grant: come when it lapses unless claimed.
                        until = min(until, on_deck + 0.001)
                        continue
                    break
        finally:
            if sub is not None:
                sub.close()
            if not won:
                # Leave the line (and give back a grant that came too late),
                # so that the next waiter is not held up by our place.
                try:
                    client._node(client._node.calls.leave(self._limit, self.name, holder))
                except Exception:  # noqa: BLE001 - best effort; our place lapses anyway
                    pass

    def _take_grant(self, holder: str, grant: tuple[int, float], last_held: tuple[float, int] | None) -> bool:
        """A release handed us the lease (or a semaphore's freed slot). Use it
        as it is when enough of its claim window is left (counted from our last
        queued attempt, which Redis processed before the release) when its
        token shows it is newer than our last attempt that saw someone else
        hold it (or every slot taken); otherwise claim it with a renewal that
        checks its token."""
        token, claim = grant
        node = self._client._node
        if last_held is not None and last_held[1] < token and not node.calls.confirm:
            sent_at = last_held[0]
            deadline = p.safety_deadline(sent_at, claim * 1000)
            need = max(self._min_validity, claim / 2)
            if deadline > time.monotonic() + need:
                self._start(holder, token, sent_at, claim * 1000)
                return True
        sent = time.monotonic()
        try:
            why = node.renew(self._limit is not None, self.name, holder, self._ttl, expect=token)
        except LeaseholdError:
            return False  # unknown: the next attempt finds it ours (and extends it) or not
        if why is not None:
            log.debug("a grant of '%s' was gone before claimed: %s", self.name, why)
            return False
        self._start(holder, token, sent, self._ttl)
        return True

    def _start(self, holder: str, token: int, sent: float, first_ttl_ms: float) -> None:
        h = _Hold(self, holder, token, sent, first_ttl_ms)
        self._h = h
        self._client._hold(h)
        h.thread.start()

    # --- holding ----------------------------------------------------------

    def release(self) -> bool:
        """Stops renewal (waiting for a renewal in flight), then gives the
        lease back and wakes the next waiter. True when it was still ours."""
        h = self._h
        if h is None:
            return False
        reason = h.stop()
        self._client._unhold(h)
        node = self._client._node
        c = node.calls.release(self._limit, self.name, h.holder)
        if reason is not None:
            if reason.startswith("no renewal confirmed"):
                # Lost at the deadline, but the renewal's reply may be what got
                # lost: the key may still be ours. Deleting it is safe (only
                # our own) and frees the lease for the next waiter now.
                try:
                    node(c)
                except LeaseholdError:
                    pass
            return False
        try:
            ok = node(c)
        except LeaseholdError:
            # Unknown; either way we no longer hold it (it expires by itself).
            self._finish(h, p.RELEASED)
            raise
        self._finish(
            h, p.RELEASED if ok else p.refused_reason("the lease key was gone or held by someone else at release")
        )
        return ok

    def _finish(self, h: _Hold, reason: str) -> None:
        with h.cond:
            if h.reason is None:
                h.reason = reason
        h.lost.set()

    def proclaim(self, value: str) -> None:
        """Changes the published value, if the lease is still ours."""
        if self._limit is not None:
            raise BadConfig("proclaim", self.name, "applies to a lease, not to a semaphore slot")
        h = self._h
        if h is None or not h.held():
            raise NotHolder(self.name)
        if not self._client._node(self._client._node.calls.proclaim(self.name, h.holder, value)):
            raise NotHolder(self.name)
        self.value = value

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def rust_name(name: str) -> str:
    return p.rust_debug(name)


class Leadership:
    """Being the leader: the same guarantees as a :class:`Lease`, which it wraps."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease

    @property
    def token(self) -> int:
        return self.lease.token or 0

    @property
    def lost(self) -> threading.Event:
        return self.lease.lost

    @property
    def is_held(self) -> bool:
        return self.lease.is_held

    def proclaim(self, value: str) -> None:
        """Changes the value observers see, while still leader."""
        self.lease.proclaim(value)

    def resign(self) -> bool:
        """Gives up leadership; observers and campaigners are woken at once."""
        return self.lease.release()

    def __enter__(self) -> Leadership:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.resign()


class Election:
    """Leader election on a lease, in the shape of etcd's `concurrency.Election`."""

    def __init__(self, client: Client, name: str, ttl: p.Seconds = p.DEFAULT_TTL) -> None:
        p.validate_name(name)
        self._client, self.name, self.ttl = client, name, p.seconds(ttl)
        p.ttl_ms(ttl)

    def campaign(self, value: str = "", timeout: p.Seconds | None = None, on_lost: OnLost | None = None) -> Leadership:
        """Blocks until we are the leader, publishing `value` (e.g. our address)."""
        lease = self._client.lease(self.name, self.ttl, value=value, on_lost=on_lost)
        lease.acquire(timeout)
        return Leadership(lease)

    def leader(self) -> p.HolderInfo | None:
        return self._client.status(self.name).holder

    def observe(self) -> Iterator[p.HolderInfo | None]:
        """Yields the current leader at once, then again each time the leader
        or its value changes (None while there is none). Woken by the lease's
        events (registered with observe.lua, so that `acquired`, `released`
        and `proclaimed` are published); after a crash, by the expiry."""
        c = self._client
        sub = c._notifier.subscribe(c._node.calls.keys(self.name).events)
        events: queue.SimpleQueue[p.Event] = queue.SimpleQueue()
        sub.listen(events.put)
        observed_until = 0.0
        last: Any = _UNSET
        half = p.OBSERVE_FOR_MS / 2000
        try:
            while True:
                if observed_until < time.monotonic() + half:
                    asked = time.monotonic()
                    try:
                        c._node(c._node.calls.observe(self.name, p.OBSERVE_FOR_MS))
                        observed_until = asked + p.OBSERVE_FOR_MS / 1000
                    except LeaseholdError:
                        observed_until = asked + half + 1.0
                try:
                    st = c.status(self.name)
                except LeaseholdError as e:
                    if not e.is_unavailable:
                        raise
                    time.sleep(0.2)
                    continue
                key = (st.holder.holder, st.holder.token, st.holder.value) if st.holder else None
                if key != last:
                    last = key
                    yield st.holder
                    continue
                wait = st.holder.ttl_left + 0.002 if st.holder else self.ttl
                if not sub.ensure_confirmed():
                    wait = min(wait, p.UNCONFIRMED_CAP)
                wait = min(wait, max(observed_until - (time.monotonic() + half), 0.0))
                try:
                    events.get(timeout=max(wait, 0.0))
                except queue.Empty:
                    pass
        finally:
            sub.close()


class Quota:
    """At most `limit` per period per key, decided atomically in Redis with the
    same scripts, keys and windows as the Rust library and the CLI."""

    def __init__(self, client: Client, cfg: QuotaConfig) -> None:
        self._client, self.cfg = client, cfg
        self._offset: tuple[int, float] | None = None

    def take(self, key: str, n: int = 1) -> Taken:
        """Takes `n` from `key`'s quota if that many are left; `n=0` only reads.
        Retried under one request id until the timeout, so it counts once."""
        self.cfg.check_key("quota key", key)
        return self._take_reserved(key, n)

    def _take_reserved(self, key: str, n: int) -> Taken:
        remember = min(self.cfg.timeout * 2 + 60, self.cfg.remember)
        t = self._take(key, n, random_id(), remember)
        return Taken(t.allowed, t.remaining, t.reset_at, False)

    def take_with_id(self, key: str, n: int, request_id: str) -> Taken:
        """Like :meth:`take`, under the caller's request id: a retry with the
        same id (from any process, within `remember_requests`) takes nothing more."""
        self.cfg.check_request(request_id)
        self.cfg.check_key("quota key", key)
        return self._take(key, n, request_id, self.cfg.remember)

    def _redis_now(self) -> int:
        known = self._offset
        if known is None or time.monotonic() - known[1] > 60:
            before = time.time()
            r = self._client._node.redis_time_ms()
            after = time.time()
            o = r - int((before + after) * 500)
            self._offset = (o, time.monotonic())
            return r
        return int(time.time() * 1000) + known[0]

    def _take(self, key: str, n: int, request: str, remember: float) -> Taken:
        cfg = self.cfg
        cfg.check_n(n)
        deadline = time.monotonic() + cfg.timeout
        pause = 0.025
        redis_now: int | None = None
        last: str | None = None
        node = self._client._node
        while True:
            if time.monotonic() >= deadline:
                raise QuotaUnknown(key, cfg.timeout, last or "no answer", request, remember)
            try:
                if cfg.sliding_ms is not None:
                    return cfg.sliding_taken(node(cfg.sliding_call(node.calls, key, n, request, remember)))
                now = redis_now if redis_now is not None else self._redis_now()
                redis_now = None
                w, call = cfg.fixed_call(node.calls, key, n, request, remember, now)
                r = node(call)
                if r[0] == -1:
                    # Our estimate of Redis's clock was off: use its own.
                    self._offset = (r[1] - int(time.time() * 1000), time.monotonic())
                    redis_now = r[1]
                    continue
                return cfg.fixed_taken(r, w)
            except LeaseholdError as e:
                if not e.is_unavailable:
                    raise
                last = str(e)
            time.sleep(max(min(pause, deadline - time.monotonic()), 0))
            pause = min(pause * 2, 0.5)


class TokenCache:
    """A shared value (an access token) that exactly one process across all
    hosts refreshes when it is missing or about to expire, while the others
    wait for it or keep using the still-valid old one (src/cache.rs)."""

    def __init__(self, client: Client, cfg: CacheConfig) -> None:
        self._client, self.cfg = client, cfg
        self._budget = Quota(client, cfg.budget) if cfg.budget else None

    def get_or_refresh(self, name: str, fetch: Callable[[], tuple[str, p.Seconds]]) -> str:
        """The cached value of `name`, fetched by `fetch()` when missing or due
        for a refresh. `fetch` returns `(value, lifetime)`; an exception it
        raises is a failed fetch whose message (never the value!) every
        waiting caller sees."""
        self.cfg.check_name(name)
        node = self._client._node
        lease_name = reserved_lease_name(name)
        sub: Subscription | None = None
        events: queue.SimpleQueue[p.Event] = queue.SimpleQueue()
        try:
            while True:
                entry = node(node.calls.cache_get(name))
                v = self.cfg.fresh(name, entry)
                if v is not None:
                    return v
                served = self.cfg.after_failure(name, entry)
                if served is not None:
                    if isinstance(served, Exception):
                        raise served
                    return served
                lease = Lease(self._client, lease_name, self.cfg.fetch_timeout, _reserved=True)
                if lease.try_acquire():
                    try:
                        return self._refresh(name, lease, fetch, entry)
                    finally:
                        try:
                            lease.release()
                        except LeaseholdError:
                            pass
                # Someone else is refreshing. The old value is still good meanwhile.
                if entry.value is not None and entry.value[1] > 0:
                    return entry.value[0]
                if sub is None:
                    # Subscribe, then look again: no stored event can slip between.
                    sub = self._client._notifier.subscribe(node.calls.keys(lease_name).events)
                    sub.listen(events.put)
                    continue
                try:
                    ev = events.get(timeout=self.cfg.fetch_timeout)
                    if ev.kind == "failed":
                        raise cache_failure_error(name, ev.message, None)
                except queue.Empty:
                    pass  # the refresher may have died: its lease expires after fetch_timeout
        finally:
            if sub is not None:
                sub.close()

    def _refresh(self, name: str, lease: Lease, fetch: Callable[[], tuple[str, p.Seconds]], before: CacheEntry) -> str:
        node = self._client._node
        entry = node(node.calls.cache_get(name))
        if entry.value is None:
            entry = CacheEntry(before.value, entry.failure)
        v = self.cfg.fresh(name, entry)
        if v is not None:
            return v
        served = self.cfg.after_failure(name, entry)
        if served is not None:
            if isinstance(served, Exception):
                raise served
            return served
        still_valid = entry.value[0] if entry.value is not None and entry.value[1] > 0 else None
        if self._budget is not None and self.cfg.budget is not None:
            taken = self._budget._take_reserved(f"cache#{name}:fetches", 1)
            if not taken.allowed:
                if still_valid is not None:
                    log.warning(
                        "token cache '%s': fetch budget spent; serving the cached value while it is valid", name
                    )
                    return still_valid
                e: LeaseholdError = BudgetExhausted(name, self.cfg.budget.limit, _rfc3339(taken.reset_at))
                self._announce(name, lease, e)
                raise e
        limit = self.cfg.fetch_timeout - self.cfg.fetch_timeout / 10
        result = _run_bounded(fetch, limit)
        if isinstance(result, str):
            e = FetchFailed(name, result)
            self._announce(name, lease, e)
            if still_valid is not None:
                log.warning(
                    "token cache '%s': refresh failed (%s); serving the cached value while it is valid", name, e
                )
                return still_valid
            raise e
        value, life = result
        self.cfg.threshold(name, life)
        self._store(name, lease, value, life)
        return value

    def _store(self, name: str, lease: Lease, value: str, life: float) -> None:
        node = self._client._node
        deadline = time.monotonic() + self.cfg.fetch_timeout
        pause = 0.05
        while True:
            try:
                ok = node(node.calls.cache_store(name, lease.holder or "", value, max(int(life * 1000), 1), "", 0))
                if not ok:
                    log.warning(
                        "token cache '%s': lost the refresher lease before storing; "
                        "the value was handed to this caller only",
                        name,
                    )
                return
            except LeaseholdError as e:
                if not e.is_unavailable:
                    log.warning(
                        "token cache '%s': storing the fetched value failed (%s); it was handed to this caller only",
                        name,
                        e,
                    )
                    return
                why = str(e)
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning(
                    "token cache '%s': could not store the fetched value within %s (%s); "
                    "it was handed to this caller only",
                    name,
                    human_duration(self.cfg.fetch_timeout),
                    why,
                )
                return
            time.sleep(min(pause, left))
            pause = min(pause * 2, 1.0)

    def _announce(self, name: str, lease: Lease, e: LeaseholdError) -> None:
        node = self._client._node
        try:
            node(
                node.calls.cache_store(
                    name, lease.holder or "", "", 0, cache_failure_text(e), int(self.cfg.retry_failed_after * 1000)
                )
            )
        except LeaseholdError:
            pass


def _rfc3339(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _run_bounded(fetch: Callable[[], tuple[str, p.Seconds]], limit: float) -> tuple[str, float] | str:
    """Runs `fetch` in a thread for at most `limit` seconds: the value and its
    lifetime, or the failure's message."""
    box: list[tuple[str, float] | str] = []

    def run() -> None:
        try:
            value, life = fetch()
            box.append(check_fetched(value, p.seconds(life)))
        except Exception as e:  # noqa: BLE001 - a failed fetch, reported to every waiter
            box.append(str(e) or type(e).__name__)

    t = threading.Thread(target=run, name="leasehold-fetch", daemon=True)
    t.start()
    t.join(limit)
    if not box:
        return f"timed out after {human_duration(limit)}"
    return box[0]


_clients: weakref.WeakSet[Client] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Best effort at interpreter exit: give held leases back (the next waiter
    need not wait out the TTL) and stop every background thread."""
    for c in list(_clients):
        try:
            c.close()
        except Exception:  # noqa: BLE001 - exiting anyway
            pass


class Client:
    """A connection to Redis (one server, a Sentinel group, or a Cluster) from
    which leases, semaphores, elections, quotas and token caches are made.

    Thread-safe; make one per process and share it. `close()` (or `with`)
    releases what it still holds and stops its background threads.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = p.DEFAULT_PREFIX,
        op_timeout: p.Seconds = 5.0,
        min_replicas: int = 0,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> None:
        p.validate_prefix(prefix)
        self._target = parse(url)
        self.url = self._target.shown
        timeout = p.seconds(op_timeout)
        if min_replicas and self._target.kind == "cluster":
            raise BadConfig(
                "min-replicas", str(min_replicas), "is supported with a single Redis or Sentinel, not on Cluster"
            )
        tls = TlsFiles(tls_ca, tls_cert, tls_key)
        self._r = sync_client(self._target, timeout, tls)
        calls = Calls(prefix, self._target.kind == "cluster", min_replicas)
        self._node = SyncNode(self._r, calls, timeout)
        try:
            self._r.ping()
        except (redis.RedisError, OSError) as e:
            raise classify(self.url, e) from None
        _warn_on_eviction(self._r)
        source = PubSubSource(self._target, timeout, tls, self._r if self._target.kind == "single" else None)
        self._notifier = Notifier(source, self.url)
        self._lock = threading.Lock()
        self._holds: set[_Hold] = set()
        self._closed = False
        self._hooked = False
        # The latest reconnect (monotonic): what was sent before it may have
        # been confirmed by a server that is gone, and is renewed at once.
        self._reconnected = 0.0
        _clients.add(self)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Client:
        """Connects to `redis://`, `rediss://`, `redis+sentinel://h1:26379,h2:26379/mymaster[/db]`
        or `redis+cluster://n1:7000,n2:7001` and checks that Redis answers."""
        return cls(url, **kwargs)

    def __repr__(self) -> str:
        return f"<leasehold.Client {self.url}>"

    def _check_open(self) -> None:
        if self._closed:
            raise BadConfig("client", self.url, "is closed")

    def _hold(self, h: _Hold) -> None:
        with self._lock:
            self._holds.add(h)
            hook = not self._hooked
            self._hooked = True
        if hook:
            # Holders renew at once after a reconnect (rule 8).
            self._notifier.on_reconnect(self._renew_all)

    def _unhold(self, h: _Hold) -> None:
        with self._lock:
            self._holds.discard(h)

    def _renew_all(self) -> None:
        self._reconnected = time.monotonic()
        with self._lock:
            holds = list(self._holds)
        for h in holds:
            h.renew_now()

    def lease(
        self,
        name: str,
        ttl: p.Seconds = p.DEFAULT_TTL,
        *,
        value: str = "",
        timeout: p.Seconds | None = None,
        min_validity: p.Seconds = 0.0,
        on_lost: OnLost | None = None,
    ) -> Lease:
        """A lease named `name` (not yet acquired). `ttl` is the failover time
        after a crash; `timeout` bounds the wait of `with` / `acquire()`;
        `on_lost(reason)` is called (on the renewal thread) when it is lost."""
        return Lease(self, name, ttl, value=value, timeout=timeout, min_validity=min_validity, on_lost=on_lost)

    def semaphore(
        self,
        name: str,
        limit: int,
        ttl: p.Seconds = p.DEFAULT_TTL,
        *,
        value: str = "",
        timeout: p.Seconds | None = None,
        on_lost: OnLost | None = None,
    ) -> Lease:
        """One of `limit` slots of the semaphore `name`: at most `limit`
        holders at once, each a :class:`Lease` of its own."""
        return Lease(self, name, ttl, value=value, timeout=timeout, on_lost=on_lost, limit=limit)

    def election(self, name: str, ttl: p.Seconds = p.DEFAULT_TTL) -> Election:
        return Election(self, name, ttl)

    def status(self, name: str) -> p.LeaseStatus:
        """Who holds `name` right now, as Redis sees it."""
        return self._node(self._node.calls.status(name))

    def semaphore_status(self, name: str) -> list[p.HolderInfo]:
        return self._node(self._node.calls.sem_status(name))

    def quota(
        self,
        limit: int,
        per: str | p.Seconds,
        *,
        time_zone: str | None = None,
        sliding: bool = False,
        timeout: p.Seconds = 5.0,
        remember_requests: p.Seconds = 600.0,
    ) -> Quota:
        """A quota of `limit` per period (`"1d"`, `"15m"`, `"1mo"`, or seconds)."""
        return Quota(self, QuotaConfig.build(limit, per, time_zone, sliding, timeout, remember_requests))

    def token_cache(
        self,
        *,
        refresh_before: p.Seconds = 60.0,
        max_fetches_per_day: int | None = None,
        fetch_timeout: p.Seconds = 30.0,
        time_zone: str | None = None,
        retry_failed_after: p.Seconds = 10.0,
    ) -> TokenCache:
        return TokenCache(
            self, CacheConfig.build(refresh_before, max_fetches_per_day, fetch_timeout, time_zone, retry_failed_after)
        )

    def close(self) -> None:
        """Releases every lease this client still holds and stops its threads."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            holds = list(self._holds)
        for h in holds:
            try:
                h.lease.release()
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        for h in holds:
            h.thread.join(1.0)
        self._notifier.close()
        try:
            self._r.close()
        except Exception:  # noqa: BLE001
            pass
        _clients.discard(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _warn_on_eviction(r: Any) -> None:
    """A policy other than noeviction may evict what leasehold writes under
    memory pressure; say so once (managed Redis often forbids CONFIG: fine)."""
    try:
        cfg = r.config_get("maxmemory-policy")
        policy = cfg.get("maxmemory-policy") or cfg.get(b"maxmemory-policy")
        if isinstance(policy, bytes):
            policy = policy.decode()
    except Exception:  # noqa: BLE001
        return
    if policy and policy != "noeviction":
        log.warning(
            "Redis maxmemory-policy is %s: under memory pressure Redis may evict a held lease and let a second "
            "holder in; use noeviction (see docs/design.md)",
            policy,
        )


__all__ = ["Client", "Election", "Leadership", "Lease", "Quota", "TokenCache", "timedelta"]
