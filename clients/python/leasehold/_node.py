"""The calls of docs/protocol.md on one logical Redis (single server, Sentinel
master or Cluster), in a sync and an asyncio flavour that share every
argument list and every reply parser (_protocol.py).

Every call is one script run with EVALSHA, falling back to EVAL on NOSCRIPT
(a restart, a failover or SCRIPT FLUSH empties Redis's script cache). With
`min_replicas`, acquisitions and renewals go out in one pipeline with a
`WAIT` on the same connection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import redis
import redis.exceptions as rx

from . import _protocol as p
from .errors import LeaseholdError, NotReplicated, ProtocolError, Timeout, from_redis

T = TypeVar("T")


@dataclass(frozen=True)
class Call(Generic[T]):
    op: str
    script: str
    keys: list[str]
    args: list[object]
    parse: Callable[[object], T]
    #: TTL (ms) of an acquire or renew: WAIT for replicas within a fifth of it.
    wait_ttl: int | None = None


def _is_noscript(v: object) -> bool:
    return isinstance(v, rx.NoScriptError) or (isinstance(v, rx.ResponseError) and str(v).startswith("NOSCRIPT"))


class Calls:
    """Builds the calls; both nodes run them."""

    def __init__(self, prefix: str, cluster: bool, min_replicas: int) -> None:
        self.prefix = prefix
        self.cluster = cluster
        self.min_replicas = min_replicas

    @property
    def confirm(self) -> bool:
        return self.min_replicas > 0

    def keys(self, name: str) -> p.Keys:
        return p.keys_for(self.prefix, name, self.cluster)

    def attempt(
        self, limit: int | None, name: str, holder: str, ttl: int, value: str, queue: bool
    ) -> Call[p.AcquireReply]:
        """One attempt at a lease (`limit` None) or at one of `limit` slots of
        a semaphore. `queue`: a waiter keeps (or takes) its place in the
        name's line when not acquired."""
        if limit is not None:
            k, a = p.sem_acquire_args(self.keys(name), holder, ttl, value, limit, queue, self.min_replicas)
            return Call("semaphore", "sem_acquire", k, a, p.parse_sem_acquire, ttl)
        k, a = p.acquire_args(self.keys(name), holder, ttl, value, queue, self.min_replicas)
        return Call("acquire", "acquire", k, a, p.parse_acquire, ttl)

    def renew(self, slot: bool, name: str, holder: str, ttl: int, expect: int | None = None) -> Call[str | None]:
        """`expect`: claiming a grant — renewed only while ours with that token."""
        k = self.keys(name)
        token: object = "" if expect is None else expect
        if slot:
            keys = [k.slots, k.slotinfo, k.lease, k.epoch]
            return Call("renew", "sem_renew", keys, [holder, ttl, self.min_replicas, token], p.parse_renew, ttl)
        # ARGV[6]: the WAIT's replica count, which re-marks the record's `w`.
        args: list[object] = [holder, ttl, "", "", token, self.min_replicas]
        return Call("renew", "renew", [k.lease, k.epoch], args, p.parse_renew, ttl)

    def release(self, limit: int | None, name: str, holder: str) -> Call[bool]:
        """Gives back a lease (`limit` None) or a semaphore slot; either is
        handed straight to the first waiter in line, if any."""
        k = self.keys(name)
        if limit is not None:
            keys = [k.slots, k.slotinfo, k.lease, k.epoch, k.queue, k.qinfo]
            return Call("semaphore release", "sem_release", keys, [holder, k.events, limit], _one)
        return Call("release", "release", [k.lease, k.queue, k.qinfo, k.epoch], [holder, k.events, ""], _one)

    def leave(self, limit: int | None, name: str, holder: str) -> Call[bool]:
        """A waiter that stopped waiting leaves the line of a lease (`limit`
        None) or a semaphore, and gives back what was handed to it meanwhile."""
        k = self.keys(name)
        if limit is not None:
            keys = [k.slots, k.slotinfo, k.lease, k.queue, k.qinfo]
            return Call("leave", "sem_leave", keys, [holder, k.events, limit], _one)
        return Call("leave", "leave", [k.lease, k.queue, k.qinfo], [holder, k.events], _one)

    def proclaim(self, name: str, holder: str, value: str) -> Call[bool]:
        k = self.keys(name)
        return Call("proclaim", "proclaim", [k.lease], [holder, value, k.events], _one)

    def status(self, name: str) -> Call[p.LeaseStatus]:
        k = self.keys(name)
        return Call("status", "status", [k.lease, k.epoch], [], lambda v: p.parse_status(name, v))

    def sem_status(self, name: str) -> Call[list[p.HolderInfo]]:
        k = self.keys(name)
        return Call("semaphore status", "sem_status", [k.slots, k.slotinfo], [], p.parse_sem_status)

    def observe(self, name: str, ms: int) -> Call[bool]:
        k = self.keys(name)
        return Call("observe", "observe", [k.lease], [ms], _one)

    def quota_key(self, key: str, suffix: str) -> str:
        return f"{self.prefix}{{quota:{key}}}:{suffix}"

    def quota_fixed(
        self,
        key: str,
        scope: str,
        window: str,
        request: str,
        limit: int,
        n: int,
        start: int,
        end: int,
        expire_at: int,
        remember_ms: int,
    ) -> Call[list[int]]:
        p.validate_key_name(key)
        return Call(
            "quota",
            "quota_fixed",
            [self.quota_key(key, f"{scope}:{window}"), self.quota_key(key, f"{scope}:req:{request}")],
            [limit, n, start, end, expire_at, remember_ms],
            _ints,
        )

    def quota_sliding(
        self, key: str, scope: str, request: str, limit: int, n: int, period_ms: int, remember_ms: int
    ) -> Call[list[int]]:
        p.validate_key_name(key)
        return Call(
            "quota",
            "quota_sliding",
            [self.quota_key(key, scope), self.quota_key(key, f"{scope}:req:{request}")],
            [limit, n, period_ms, request, remember_ms],
            _ints,
        )

    def cache_key(self, name: str, suffix: str) -> str:
        return f"{self.prefix}{{cache#{name}}}:{suffix}"

    def cache_get(self, name: str) -> Call[CacheEntry]:
        p.validate_name(name)
        return Call(
            "cache get", "cache_get", [self.cache_key(name, "value"), self.cache_key(name, "failed")], [], _cache_entry
        )

    def cache_store(
        self, name: str, holder: str, value: str, life_ms: int, failure: str, remember_ms: int
    ) -> Call[bool]:
        lease = self.keys(f"cache#{name}")
        return Call(
            "cache store",
            "cache_store",
            [self.cache_key(name, "value"), lease.lease, self.cache_key(name, "failed")],
            [holder, value, life_ms, lease.events, failure, remember_ms],
            _one,
        )


@dataclass(frozen=True)
class CacheEntry:
    #: (value, seconds left, lifetime seconds (0 unknown)) or None.
    value: tuple[str, float, float] | None
    #: (failure text, seconds it is kept) or None.
    failure: tuple[str, float] | None


def _cache_entry(v: object) -> CacheEntry:
    r = p._list("cache get", v)
    if len(r) < 7:
        raise ProtocolError("cache get", "reply too short")
    value = None
    if p._int("cache get", r[0]) == 1:
        value = (p._s(r[1]), max(p._int("cache get", r[2]), 0) / 1000, max(p._int("cache get", r[3]), 0) / 1000)
    failure = None
    if p._int("cache get", r[4]) == 1:
        failure = (p._s(r[5]), max(p._int("cache get", r[6]), 0) / 1000)
    return CacheEntry(value, failure)


def _one(v: object) -> bool:
    return p._int("script", v) == 1


def _ints(v: object) -> list[int]:
    return [p._int("quota", x) for x in p._list("quota", v)]


class SyncNode:
    def __init__(self, r: Any, calls: Calls, op_timeout: float) -> None:
        self.r = r
        self.calls = calls
        self.op_timeout = op_timeout

    def _wait_ms(self, c: Call[Any]) -> int | None:
        if c.wait_ttl is None or self.calls.min_replicas <= 0:
            return None
        return max(int(min(c.wait_ttl / 5, self.op_timeout * 1000 / 2)), 1)

    def run(self, c: Call[T]) -> tuple[T, bool]:
        """The call's parsed reply, and whether its writes reached
        `min_replicas` replicas (always true without)."""
        s = p.SCRIPTS[c.script]
        wait = self._wait_ms(c)
        try:
            if wait is None:
                try:
                    v = self.r.evalsha(s.sha, len(c.keys), *c.keys, *c.args)
                except rx.NoScriptError:
                    v = self.r.eval(s.body, len(c.keys), *c.keys, *c.args)
                return c.parse(v), True
            for load in (False, True):
                pipe = self.r.pipeline(transaction=False)
                if load:
                    pipe.eval(s.body, len(c.keys), *c.keys, *c.args)
                else:
                    pipe.evalsha(s.sha, len(c.keys), *c.keys, *c.args)
                pipe.execute_command("WAIT", self.calls.min_replicas, wait)
                res = pipe.execute(raise_on_error=False)
                if not load and _is_noscript(res[0]):
                    continue
                if isinstance(res[0], Exception):
                    raise res[0]
                acked = res[1] if isinstance(res[1], int) else 0
                return c.parse(res[0]), acked >= self.calls.min_replicas
            raise AssertionError("unreachable")
        except rx.TimeoutError:
            raise Timeout(c.op, self.op_timeout) from None
        except (redis.RedisError, OSError) as e:
            raise from_redis(c.op, e) from None

    def __call__(self, c: Call[T]) -> T:
        return self.run(c)[0]

    def attempt(self, limit: int | None, name: str, holder: str, ttl: int, value: str, queue: bool) -> p.AcquireReply:
        """One attempt (Calls.attempt), given back unless replicated as asked."""
        reply, replicated = self.run(self.calls.attempt(limit, name, holder, ttl, value, queue))
        if isinstance(reply, p.Acquired) and not replicated:
            # Not on enough replicas: a failover could drop it. Give it back.
            try:
                self(self.calls.release(limit, name, holder))
            except LeaseholdError:
                pass
            raise NotReplicated("acquire" if limit is None else "semaphore acquire", self.calls.min_replicas)
        return reply

    def renew(self, slot: bool, name: str, holder: str, ttl: int, expect: int | None = None) -> str | None:
        why, replicated = self.run(self.calls.renew(slot, name, holder, ttl, expect))
        if why is None and not replicated:
            raise NotReplicated("renew", self.calls.min_replicas)
        return why

    def redis_time_ms(self) -> int:
        try:
            secs, micros = self.r.time()
        except rx.TimeoutError:
            raise Timeout("time", self.op_timeout) from None
        except (redis.RedisError, OSError) as e:
            raise from_redis("time", e) from None
        return int(secs) * 1000 + int(micros) // 1000

    def ping(self) -> None:
        self.r.ping()


class AsyncNode:
    def __init__(self, r: Any, calls: Calls, op_timeout: float) -> None:
        self.r = r
        self.calls = calls
        self.op_timeout = op_timeout

    def _wait_ms(self, c: Call[Any]) -> int | None:
        if c.wait_ttl is None or self.calls.min_replicas <= 0:
            return None
        return max(int(min(c.wait_ttl / 5, self.op_timeout * 1000 / 2)), 1)

    async def run(self, c: Call[T]) -> tuple[T, bool]:
        import asyncio

        try:
            return await asyncio.wait_for(self._run(c), self.op_timeout)
        except (asyncio.TimeoutError, rx.TimeoutError):
            raise Timeout(c.op, self.op_timeout) from None
        except (redis.RedisError, OSError) as e:
            raise from_redis(c.op, e) from None

    async def _run(self, c: Call[T]) -> tuple[T, bool]:
        s = p.SCRIPTS[c.script]
        wait = self._wait_ms(c)
        if wait is None:
            try:
                v = await self.r.evalsha(s.sha, len(c.keys), *c.keys, *c.args)
            except rx.NoScriptError:
                v = await self.r.eval(s.body, len(c.keys), *c.keys, *c.args)
            return c.parse(v), True
        for load in (False, True):
            pipe = self.r.pipeline(transaction=False)
            if load:
                pipe.eval(s.body, len(c.keys), *c.keys, *c.args)
            else:
                pipe.evalsha(s.sha, len(c.keys), *c.keys, *c.args)
            pipe.execute_command("WAIT", self.calls.min_replicas, wait)
            res = await pipe.execute(raise_on_error=False)
            if not load and _is_noscript(res[0]):
                continue
            if isinstance(res[0], Exception):
                raise res[0]
            acked = res[1] if isinstance(res[1], int) else 0
            return c.parse(res[0]), acked >= self.calls.min_replicas
        raise AssertionError("unreachable")

    async def __call__(self, c: Call[T]) -> T:
        return (await self.run(c))[0]

    async def attempt(
        self, limit: int | None, name: str, holder: str, ttl: int, value: str, queue: bool
    ) -> p.AcquireReply:
        reply, replicated = await self.run(self.calls.attempt(limit, name, holder, ttl, value, queue))
        if isinstance(reply, p.Acquired) and not replicated:
            try:
                await self(self.calls.release(limit, name, holder))
            except LeaseholdError:
                pass
            raise NotReplicated("acquire" if limit is None else "semaphore acquire", self.calls.min_replicas)
        return reply

    async def renew(self, slot: bool, name: str, holder: str, ttl: int, expect: int | None = None) -> str | None:
        why, replicated = await self.run(self.calls.renew(slot, name, holder, ttl, expect))
        if why is None and not replicated:
            raise NotReplicated("renew", self.calls.min_replicas)
        return why

    async def redis_time_ms(self) -> int:
        try:
            secs, micros = await self.r.time()
        except rx.TimeoutError:
            raise Timeout("time", self.op_timeout) from None
        except (redis.RedisError, OSError) as e:
            raise from_redis("time", e) from None
        return int(secs) * 1000 + int(micros) // 1000
