"""The asyncio client: the same leases, semaphores, elections, quotas and
token cache as :mod:`leasehold`'s blocking client, with coroutines, a renewal
*task* per held lease and :class:`asyncio.Event` for `lost`.

    client = leasehold.AsyncClient.from_url("redis://127.0.0.1:6379")
    async with client.lease("nightly-report", ttl=10) as lease:
        work = asyncio.create_task(do_the_work(lease.token))
        await asyncio.wait([work, asyncio.create_task(lease.lost.wait())],
                           return_when=asyncio.FIRST_COMPLETED)

Commands go through redis.asyncio. Release events arrive on the client's
shared subscriber connection, which a small thread reads (one per client,
stopped by :meth:`AsyncClient.close`); wake-ups reach the event loop with
`call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
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
from ._connect import PubSubSource, TlsFiles, async_client, classify, parse
from ._node import AsyncNode, CacheEntry, Calls
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
_callbacks: set[asyncio.Future[Any]] = set()
OnLost = Callable[[str], object]


class _Hold:
    """One acquisition, kept by its own renewal task (protocol rules 1–5)."""

    def __init__(self, lease: AsyncLease, holder: str, token: int, sent: float, first_ttl_ms: float) -> None:
        self.lease = lease
        self.node = lease._client._node
        self.slot = lease._limit is not None
        self.name, self.holder, self.token = lease.name, holder, token
        self.ttl = lease._ttl
        self.deadline = p.safety_deadline(sent, first_ttl_ms)
        self.due = sent + min(p.renew_every(self.ttl), first_ttl_ms / 3000)
        if sent < lease._client._reconnected:
            self.due = time.monotonic()
        self.reason: str | None = None
        self.stopped = False
        self.last_error = "none"
        self.lost = lease.lost
        self.poke = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.create_task(self._keep(), name=f"leasehold-renew {self.name}")

    def held(self) -> bool:
        return self.reason is None and not self.stopped and time.monotonic() < self.deadline

    def renew_now(self) -> None:
        self.due = time.monotonic()
        self.poke.set()

    def _lose(self, reason: str) -> None:
        self.reason = reason
        self.lost.set()
        log.warning("lease '%s' lost: %s", self.name, reason)
        cb = self.lease._on_lost
        if cb is not None:
            try:
                r = cb(reason)
                if inspect.isawaitable(r):
                    # Keep a reference: a task nobody holds may be collected.
                    task = asyncio.ensure_future(r)
                    _callbacks.add(task)
                    task.add_done_callback(_callbacks.discard)
            except Exception:
                log.exception("leasehold: on_lost callback for '%s' failed", self.name)

    async def _keep(self) -> None:
        while True:
            while True:
                if self.stopped or self.reason is not None:
                    return
                now = time.monotonic()
                if now >= self.deadline:
                    self._lose(p.unconfirmed_reason(self.last_error))
                    return
                if now >= self.due:
                    break
                self.poke.clear()
                try:
                    await asyncio.wait_for(self.poke.wait(), min(self.due, self.deadline) - now)
                except asyncio.TimeoutError:
                    pass
            sent = time.monotonic()
            what, detail = "error", "none"
            try:
                # Abandoned at the deadline: the lease is lost then, whatever
                # the reply would have said.
                why = await asyncio.wait_for(
                    self.node.renew(self.slot, self.name, self.holder, self.ttl), max(self.deadline - sent, 0.0)
                )
                what, detail = ("ok", "") if why is None else ("refused", why)
            except asyncio.TimeoutError:
                what = "deadline"
            except LeaseholdError as e:
                detail = str(e)
            except Exception as e:  # noqa: BLE001 - reported as an unconfirmed renewal
                detail = repr(e)
            if self.stopped or self.reason is not None:
                return
            if what == "ok":
                self.deadline = p.safety_deadline(sent, self.ttl)
                self.due = sent + p.renew_every(self.ttl)
                if sent < self.lease._client._reconnected:
                    self.due = time.monotonic()
            elif what == "refused":
                self._lose(p.refused_reason(detail))
                return
            elif what == "deadline":
                self._lose(p.unconfirmed_reason(self.last_error))
                return
            else:
                self.last_error = detail
                log.debug("lease '%s': renewal failed, retrying: %s", self.name, detail)
                self.due = min(time.monotonic() + p.retry_every(self.ttl), self.deadline)

    async def stop(self) -> str | None:
        """Stops renewal and waits for a renewal in flight (it cannot outlive
        the deadline; bounded by the TTL). Returns the loss reason, if lost."""
        self.stopped = True
        self.poke.set()
        if self.task is not asyncio.current_task():
            try:
                await asyncio.wait_for(asyncio.shield(self.task), self.ttl / 1000)
            except asyncio.TimeoutError:
                log.warning("lease '%s': a renewal in flight did not land within the TTL; releasing anyway", self.name)
            except Exception:  # noqa: BLE001 - the task's own failure is not the release's
                pass
        return self.reason


class AsyncLease:
    """The asyncio :class:`leasehold.Lease`: `async with`, `await acquire()`,
    `await try_acquire()`, `await release()`; `lost` is an :class:`asyncio.Event`."""

    def __init__(
        self,
        client: AsyncClient,
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
        #: Set when the lease is no longer ours (lost or released).
        self.lost = asyncio.Event()
        self._h: _Hold | None = None

    def __repr__(self) -> str:
        return f"<leasehold.AsyncLease {self.name!r} {'held' if self.is_held else 'not held'} token={self.token}>"

    @property
    def ttl(self) -> float:
        return self._ttl / 1000

    @property
    def token(self) -> int | None:
        return self._h.token if self._h else None

    @property
    def holder(self) -> str | None:
        return self._h.holder if self._h else None

    @property
    def deadline(self) -> float | None:
        h = self._h
        return None if h is None or h.reason is not None or h.stopped else h.deadline

    @property
    def is_held(self) -> bool:
        return self._h is not None and self._h.held()

    @property
    def lost_reason(self) -> str | None:
        h = self._h
        if h is None:
            return None
        if h.reason is None and not h.stopped and time.monotonic() >= h.deadline:
            return p.unconfirmed_reason(h.last_error)
        return h.reason

    def _fresh(self) -> None:
        if self._h is not None and self._h.held():
            raise BadConfig("acquire", p.rust_debug(self.name), "this lease is already held by this object")
        self._client._check_open()
        self.lost = asyncio.Event()

    async def _attempt(self, holder: str, queue: bool) -> p.AcquireReply:
        """One attempt at the lease or, for a semaphore, at one of its slots."""
        return await self._client._node.attempt(self._limit, self.name, holder, self._ttl, self.value, queue)

    async def try_acquire(self) -> bool:
        """One attempt: True when the lease is now ours."""
        self._fresh()
        holder = p.holder_id()
        sent = time.monotonic()
        r = await self._attempt(holder, queue=False)
        if isinstance(r, p.Acquired):
            self._start(holder, r.token, sent, self._ttl)
            return True
        return False

    async def acquire(self, timeout: p.Seconds | None = _UNSET) -> AsyncLease:
        """Waits until the lease is ours (woken on release, or at the holder's
        expiry after a crash). Raises AcquireTimeout when `timeout` elapses."""
        self._fresh()
        t = self._timeout if timeout is _UNSET else (None if timeout is None else p.seconds(timeout))
        await self._wait(t)
        return self

    async def _wait(self, timeout: float | None) -> None:
        client = self._client
        loop = asyncio.get_running_loop()
        holder = p.holder_id()
        give_up = None if timeout is None else time.monotonic() + timeout
        won = False
        sub: Subscription | None = None
        st = AcquireState(self.name, self._ttl)
        try:
            sent = time.monotonic()
            try:
                r = await self._attempt(holder, queue=True)
                if isinstance(r, p.Acquired):
                    self._start(holder, r.token, sent, self._ttl)
                    won = True
                    return
            except LeaseholdError as e:
                if not e.is_unavailable:
                    raise
            channel = client._node.calls.keys(self.name).events
            sub = await asyncio.to_thread(client._notifier.subscribe, channel)
            woken = asyncio.Event()

            def wake() -> None:
                loop.call_soon_threadsafe(woken.set)

            mb = sub.mailbox(holder, wake)
            while True:
                if give_up is not None and time.monotonic() >= give_up:
                    raise AcquireTimeout(self.name, timeout or 0.0)
                confirmed = sub.confirmed() or await asyncio.to_thread(sub.ensure_confirmed)
                # What the line told us before this attempt is stale once it is sent
                # (a grant kept across a failed attempt may come from a server that
                # restarted without it); the attempt itself finds a grant made before it.
                mb.take_grant()
                mb.take_on_deck()
                sent = time.monotonic()
                try:
                    r = await self._attempt(holder, queue=True)
                except LeaseholdError as e:
                    if not e.is_unavailable:
                        raise
                    pause = st.unavailable(e)
                    left = pause if give_up is None else min(pause, give_up - time.monotonic())
                    await asyncio.sleep(max(left, 0))
                    continue
                if isinstance(r, p.Acquired):
                    self._start(holder, r.token, sent, self._ttl)
                    won = True
                    return
                # Counted from the attempt's send instant (as the Rust waiter).
                until = sent + st.after(r, sent, confirmed)
                while True:
                    end = until if give_up is None else min(until, give_up)
                    left = end - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        await asyncio.wait_for(woken.wait(), left)
                    except asyncio.TimeoutError:
                        continue
                    woken.clear()
                    grant = mb.take_grant()
                    if grant is not None:
                        if await self._take_grant(holder, grant, st.last_held):
                            won = True
                            return
                        break
                    on_deck = mb.take_on_deck()
                    if on_deck is not None:
                        until = min(until, on_deck + 0.001)
                        continue
                    break
        finally:
            if sub is not None:
                sub.close()
            if not won:
                # Leave the line (and give back a grant that came too late);
                # shielded so that a cancelled acquire still leaves.
                leave = client._node(client._node.calls.leave(self._limit, self.name, holder))
                try:
                    await asyncio.shield(leave)
                except BaseException:  # noqa: BLE001 - best effort; our place lapses anyway
                    pass

    async def _take_grant(self, holder: str, grant: tuple[int, float], last_held: tuple[float, int] | None) -> bool:
        """A release handed us the lease (or a slot): as Lease._take_grant."""
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
            why = await node.renew(self._limit is not None, self.name, holder, self._ttl, expect=token)
        except LeaseholdError:
            return False
        if why is not None:
            return False
        self._start(holder, token, sent, self._ttl)
        return True

    def _start(self, holder: str, token: int, sent: float, first_ttl_ms: float) -> None:
        h = _Hold(self, holder, token, sent, first_ttl_ms)
        self._h = h
        self._client._hold(h)

    async def release(self) -> bool:
        """Stops renewal (waiting for a renewal in flight), then gives the
        lease back and wakes the next waiter. True when it was still ours."""
        h = self._h
        if h is None:
            return False
        reason = await h.stop()
        self._client._unhold(h)
        node = self._client._node
        c = node.calls.release(self._limit, self.name, h.holder)
        if reason is not None:
            if reason.startswith("no renewal confirmed"):
                try:
                    await node(c)
                except LeaseholdError:
                    pass
            return False
        try:
            ok = await node(c)
        except LeaseholdError:
            h.reason = h.reason or p.RELEASED
            h.lost.set()
            raise
        h.reason = h.reason or (
            p.RELEASED if ok else p.refused_reason("the lease key was gone or held by someone else at release")
        )
        h.lost.set()
        return ok

    async def proclaim(self, value: str) -> None:
        if self._limit is not None:
            raise BadConfig("proclaim", self.name, "applies to a lease, not to a semaphore slot")
        h = self._h
        if h is None or not h.held():
            raise NotHolder(self.name)
        if not await self._client._node(self._client._node.calls.proclaim(self.name, h.holder, value)):
            raise NotHolder(self.name)
        self.value = value

    async def __aenter__(self) -> AsyncLease:
        return await self.acquire()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.release()


class AsyncLeadership:
    def __init__(self, lease: AsyncLease) -> None:
        self.lease = lease

    @property
    def token(self) -> int:
        return self.lease.token or 0

    @property
    def lost(self) -> asyncio.Event:
        return self.lease.lost

    @property
    def is_held(self) -> bool:
        return self.lease.is_held

    async def proclaim(self, value: str) -> None:
        await self.lease.proclaim(value)

    async def resign(self) -> bool:
        return await self.lease.release()

    async def __aenter__(self) -> AsyncLeadership:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.resign()


class AsyncElection:
    def __init__(self, client: AsyncClient, name: str, ttl: p.Seconds = p.DEFAULT_TTL) -> None:
        p.validate_name(name)
        p.ttl_ms(ttl)
        self._client, self.name, self.ttl = client, name, p.seconds(ttl)

    async def campaign(
        self, value: str = "", timeout: p.Seconds | None = None, on_lost: OnLost | None = None
    ) -> AsyncLeadership:
        lease = self._client.lease(self.name, self.ttl, value=value, on_lost=on_lost)
        await lease.acquire(timeout)
        return AsyncLeadership(lease)

    async def leader(self) -> p.HolderInfo | None:
        return (await self._client.status(self.name)).holder

    async def observe(self) -> AsyncIterator[p.HolderInfo | None]:
        """Yields the current leader at once, then on every change."""
        c = self._client
        loop = asyncio.get_running_loop()
        sub = await asyncio.to_thread(c._notifier.subscribe, c._node.calls.keys(self.name).events)
        events: asyncio.Queue[p.Event] = asyncio.Queue()

        def put(ev: p.Event) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, ev)
            except RuntimeError:
                pass

        sub.listen(put)
        observed_until = 0.0
        last: Any = _UNSET
        half = p.OBSERVE_FOR_MS / 2000
        try:
            while True:
                if observed_until < time.monotonic() + half:
                    asked = time.monotonic()
                    try:
                        await c._node(c._node.calls.observe(self.name, p.OBSERVE_FOR_MS))
                        observed_until = asked + p.OBSERVE_FOR_MS / 1000
                    except LeaseholdError:
                        observed_until = asked + half + 1.0
                try:
                    st = await c.status(self.name)
                except LeaseholdError as e:
                    if not e.is_unavailable:
                        raise
                    await asyncio.sleep(0.2)
                    continue
                key = (st.holder.holder, st.holder.token, st.holder.value) if st.holder else None
                if key != last:
                    last = key
                    yield st.holder
                    continue
                wait = st.holder.ttl_left + 0.002 if st.holder else self.ttl
                if not (sub.confirmed() or await asyncio.to_thread(sub.ensure_confirmed)):
                    wait = min(wait, p.UNCONFIRMED_CAP)
                wait = min(wait, max(observed_until - (time.monotonic() + half), 0.0))
                try:
                    await asyncio.wait_for(events.get(), max(wait, 0.0))
                except asyncio.TimeoutError:
                    pass
        finally:
            sub.close()


class AsyncQuota:
    def __init__(self, client: AsyncClient, cfg: QuotaConfig) -> None:
        self._client, self.cfg = client, cfg
        self._offset: tuple[int, float] | None = None

    async def take(self, key: str, n: int = 1) -> Taken:
        self.cfg.check_key("quota key", key)
        return await self._take_reserved(key, n)

    async def _take_reserved(self, key: str, n: int) -> Taken:
        remember = min(self.cfg.timeout * 2 + 60, self.cfg.remember)
        t = await self._take(key, n, random_id(), remember)
        return Taken(t.allowed, t.remaining, t.reset_at, False)

    async def take_with_id(self, key: str, n: int, request_id: str) -> Taken:
        self.cfg.check_request(request_id)
        self.cfg.check_key("quota key", key)
        return await self._take(key, n, request_id, self.cfg.remember)

    async def _redis_now(self) -> int:
        known = self._offset
        if known is None or time.monotonic() - known[1] > 60:
            before = time.time()
            r = await self._client._node.redis_time_ms()
            after = time.time()
            self._offset = (r - int((before + after) * 500), time.monotonic())
            return r
        return int(time.time() * 1000) + known[0]

    async def _take(self, key: str, n: int, request: str, remember: float) -> Taken:
        cfg = self.cfg
        cfg.check_n(n)
        deadline = time.monotonic() + cfg.timeout
        pause = 0.025
        redis_now: int | None = None
        last: str | None = None
        node = self._client._node
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise QuotaUnknown(key, cfg.timeout, last or "no answer", request, remember)
            per_attempt = max(cfg.timeout / 3, 0.1)
            try:
                if cfg.sliding_ms is not None:
                    r = await asyncio.wait_for(
                        node(cfg.sliding_call(node.calls, key, n, request, remember)), min(per_attempt, left)
                    )
                    return cfg.sliding_taken(r)
                now = redis_now if redis_now is not None else await self._redis_now()
                redis_now = None
                w, call = cfg.fixed_call(node.calls, key, n, request, remember, now)
                r = await asyncio.wait_for(node(call), min(per_attempt, left))
                if r[0] == -1:
                    self._offset = (r[1] - int(time.time() * 1000), time.monotonic())
                    redis_now = r[1]
                    continue
                return cfg.fixed_taken(r, w)
            except asyncio.TimeoutError:
                last = f"no answer within {per_attempt:.1f}s"
            except LeaseholdError as e:
                if not e.is_unavailable:
                    raise
                last = str(e)
            await asyncio.sleep(max(min(pause, deadline - time.monotonic()), 0))
            pause = min(pause * 2, 0.5)


AsyncFetch = Callable[[], Awaitable[tuple[str, p.Seconds]]]


class AsyncTokenCache:
    def __init__(self, client: AsyncClient, cfg: CacheConfig) -> None:
        self._client, self.cfg = client, cfg
        self._budget = AsyncQuota(client, cfg.budget) if cfg.budget else None

    async def get_or_refresh(self, name: str, fetch: AsyncFetch) -> str:
        """See :meth:`leasehold.TokenCache.get_or_refresh`; `fetch` is a coroutine function."""
        self.cfg.check_name(name)
        node = self._client._node
        loop = asyncio.get_running_loop()
        lease_name = reserved_lease_name(name)
        sub: Subscription | None = None
        events: asyncio.Queue[p.Event] = asyncio.Queue()
        try:
            while True:
                entry = await node(node.calls.cache_get(name))
                v = self.cfg.fresh(name, entry)
                if v is not None:
                    return v
                served = self.cfg.after_failure(name, entry)
                if served is not None:
                    if isinstance(served, Exception):
                        raise served
                    return served
                lease = AsyncLease(self._client, lease_name, self.cfg.fetch_timeout, _reserved=True)
                if await lease.try_acquire():
                    try:
                        return await self._refresh(name, lease, fetch, entry)
                    finally:
                        try:
                            await lease.release()
                        except LeaseholdError:
                            pass
                if entry.value is not None and entry.value[1] > 0:
                    return entry.value[0]
                if sub is None:
                    sub = await asyncio.to_thread(self._client._notifier.subscribe, node.calls.keys(lease_name).events)

                    def put(ev: p.Event) -> None:
                        try:
                            loop.call_soon_threadsafe(events.put_nowait, ev)
                        except RuntimeError:
                            pass

                    sub.listen(put)
                    continue
                try:
                    ev = await asyncio.wait_for(events.get(), self.cfg.fetch_timeout)
                    if ev.kind == "failed":
                        raise cache_failure_error(name, ev.message, None)
                except asyncio.TimeoutError:
                    pass
        finally:
            if sub is not None:
                sub.close()

    async def _refresh(self, name: str, lease: AsyncLease, fetch: AsyncFetch, before: CacheEntry) -> str:
        node = self._client._node
        entry = await node(node.calls.cache_get(name))
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
            taken = await self._budget._take_reserved(f"cache#{name}:fetches", 1)
            if not taken.allowed:
                if still_valid is not None:
                    return still_valid
                from ._sync import _rfc3339

                e: LeaseholdError = BudgetExhausted(name, self.cfg.budget.limit, _rfc3339(taken.reset_at))
                await self._announce(name, lease, e)
                raise e
        limit = self.cfg.fetch_timeout - self.cfg.fetch_timeout / 10
        result: tuple[str, float] | str
        try:
            value, life = await asyncio.wait_for(fetch(), limit)
            result = check_fetched(value, p.seconds(life))
        except asyncio.TimeoutError:
            result = f"timed out after {human_duration(limit)}"
        except Exception as ex:  # noqa: BLE001 - a failed fetch, reported to every waiter
            result = str(ex) or type(ex).__name__
        if isinstance(result, str):
            e = FetchFailed(name, result)
            await self._announce(name, lease, e)
            if still_valid is not None:
                log.warning(
                    "token cache '%s': refresh failed (%s); serving the cached value while it is valid", name, e
                )
                return still_valid
            raise e
        value, life_s = result
        self.cfg.threshold(name, life_s)
        await self._store(name, lease, value, life_s)
        return value

    async def _store(self, name: str, lease: AsyncLease, value: str, life: float) -> None:
        node = self._client._node
        deadline = time.monotonic() + self.cfg.fetch_timeout
        pause = 0.05
        while True:
            try:
                ok = await node(
                    node.calls.cache_store(name, lease.holder or "", value, max(int(life * 1000), 1), "", 0)
                )
                if not ok:
                    log.warning("token cache '%s': lost the refresher lease before storing", name)
                return
            except LeaseholdError as e:
                if not e.is_unavailable:
                    log.warning("token cache '%s': storing the fetched value failed (%s)", name, e)
                    return
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning("token cache '%s': could not store the fetched value in time", name)
                return
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 1.0)

    async def _announce(self, name: str, lease: AsyncLease, e: LeaseholdError) -> None:
        node = self._client._node
        try:
            await node(
                node.calls.cache_store(
                    name, lease.holder or "", "", 0, cache_failure_text(e), int(self.cfg.retry_failed_after * 1000)
                )
            )
        except LeaseholdError:
            pass


class AsyncClient:
    """The asyncio counterpart of :class:`leasehold.Client`. Connects lazily:
    `await client.ping()` (or `async with`) checks that Redis answers."""

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
        self._r = async_client(self._target, timeout, tls)
        self._node = AsyncNode(self._r, Calls(prefix, self._target.kind == "cluster", min_replicas), timeout)
        self._notifier = Notifier(PubSubSource(self._target, timeout, tls, None), self.url)
        self._holds: set[_Hold] = set()
        self._closed = False
        self._hooked = False
        # The latest reconnect (monotonic): what was sent before it may have
        # been confirmed by a server that is gone, and is renewed at once.
        self._reconnected = 0.0

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> AsyncClient:
        return cls(url, **kwargs)

    def __repr__(self) -> str:
        return f"<leasehold.AsyncClient {self.url}>"

    async def ping(self) -> None:
        """Checks that Redis answers (raises Unreachable or AuthFailed)."""
        try:
            await asyncio.wait_for(self._r.ping(), self._node.op_timeout)
        except (redis.RedisError, OSError, asyncio.TimeoutError) as e:
            raise classify(self.url, e) from None

    def _check_open(self) -> None:
        if self._closed:
            raise BadConfig("client", self.url, "is closed")

    def _hold(self, h: _Hold) -> None:
        self._holds.add(h)
        if not self._hooked:
            self._hooked = True
            loop = asyncio.get_running_loop()

            def hook() -> None:
                # On the subscriber's thread: hand it to the loop (rule 8).
                try:
                    loop.call_soon_threadsafe(self._renew_all)
                except RuntimeError:
                    pass

            self._notifier.on_reconnect(hook)

    def _unhold(self, h: _Hold) -> None:
        self._holds.discard(h)

    def _renew_all(self) -> None:
        self._reconnected = time.monotonic()
        for h in list(self._holds):
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
    ) -> AsyncLease:
        return AsyncLease(self, name, ttl, value=value, timeout=timeout, min_validity=min_validity, on_lost=on_lost)

    def semaphore(
        self,
        name: str,
        limit: int,
        ttl: p.Seconds = p.DEFAULT_TTL,
        *,
        value: str = "",
        timeout: p.Seconds | None = None,
        on_lost: OnLost | None = None,
    ) -> AsyncLease:
        return AsyncLease(self, name, ttl, value=value, timeout=timeout, on_lost=on_lost, limit=limit)

    def election(self, name: str, ttl: p.Seconds = p.DEFAULT_TTL) -> AsyncElection:
        return AsyncElection(self, name, ttl)

    async def status(self, name: str) -> p.LeaseStatus:
        return await self._node(self._node.calls.status(name))

    async def semaphore_status(self, name: str) -> list[p.HolderInfo]:
        return await self._node(self._node.calls.sem_status(name))

    def quota(
        self,
        limit: int,
        per: str | p.Seconds,
        *,
        time_zone: str | None = None,
        sliding: bool = False,
        timeout: p.Seconds = 5.0,
        remember_requests: p.Seconds = 600.0,
    ) -> AsyncQuota:
        return AsyncQuota(self, QuotaConfig.build(limit, per, time_zone, sliding, timeout, remember_requests))

    def token_cache(
        self,
        *,
        refresh_before: p.Seconds = 60.0,
        max_fetches_per_day: int | None = None,
        fetch_timeout: p.Seconds = 30.0,
        time_zone: str | None = None,
        retry_failed_after: p.Seconds = 10.0,
    ) -> AsyncTokenCache:
        return AsyncTokenCache(
            self, CacheConfig.build(refresh_before, max_fetches_per_day, fetch_timeout, time_zone, retry_failed_after)
        )

    async def close(self) -> None:
        """Releases every lease this client still holds, stops its renewal
        tasks and its subscriber thread, and closes its connections."""
        if self._closed:
            return
        self._closed = True
        for h in list(self._holds):
            try:
                await h.lease.release()
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        await asyncio.to_thread(self._notifier.close)
        try:
            await self._r.aclose()
        except Exception:  # noqa: BLE001
            pass

    async def __aenter__(self) -> AsyncClient:
        await self.ping()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


__all__ = [
    "AsyncClient",
    "AsyncElection",
    "AsyncLeadership",
    "AsyncLease",
    "AsyncQuota",
    "AsyncTokenCache",
]
