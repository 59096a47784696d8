"""The asyncio client against a real redis-server."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

import leasehold

from .conftest import RedisServer


async def test_async_with_renews_and_releases(redis_server: RedisServer) -> None:
    async with leasehold.AsyncClient.from_url(redis_server.url) as c:
        lease = c.lease("a", ttl=0.3)
        async with lease:
            assert lease.is_held and isinstance(lease.lost, asyncio.Event)
            await asyncio.sleep(1.0)
            assert lease.is_held and not lease.lost.is_set()
        assert lease.lost.is_set() and lease.lost_reason == "released"
        assert (await c.status("a")).holder is None


async def test_a_release_wakes_an_async_waiter_at_once(redis_server: RedisServer) -> None:
    async with leasehold.AsyncClient.from_url(redis_server.url) as c:
        held = await c.lease("h", ttl=10).acquire()

        async def wait() -> float:
            lease = await c.lease("h", ttl=10).acquire(timeout=5)
            at = time.monotonic()
            await lease.release()
            return at

        task = asyncio.create_task(wait())
        await asyncio.sleep(0.3)
        released = time.monotonic()
        await held.release()
        assert await task - released < 1.0


async def test_lost_is_an_asyncio_event_and_on_lost_may_be_a_coroutine(redis_server: RedisServer) -> None:
    r = redis_server.cli()
    called = asyncio.Event()

    async def on_lost(reason: str) -> None:
        called.set()

    async with leasehold.AsyncClient.from_url(redis_server.url) as c:
        lease = await c.lease("gone", ttl=0.5, on_lost=on_lost).acquire()
        r.delete("leasehold:{gone}:lease")
        await asyncio.wait_for(lease.lost.wait(), 2)
        await asyncio.wait_for(called.wait(), 2)
        assert lease.lost_reason is not None and lease.lost_reason.startswith("renewal refused")
        assert await lease.release() is False


async def test_a_cancelled_acquire_leaves_the_queue(redis_server: RedisServer) -> None:
    r = redis_server.cli()
    async with leasehold.AsyncClient.from_url(redis_server.url) as c:
        held = await c.lease("q", ttl=10).acquire()
        task = asyncio.create_task(c.lease("q", ttl=10).acquire())
        await asyncio.sleep(0.3)
        assert r.zcard("leasehold:{q}:queue") == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert r.zcard("leasehold:{q}:queue") == 0
        with pytest.raises(leasehold.AcquireTimeout):
            await c.lease("q", ttl=10).acquire(timeout=0.2)
        await held.release()


async def test_async_semaphore_election_quota_and_cache(redis_server: RedisServer) -> None:
    async with leasehold.AsyncClient.from_url(redis_server.url) as c:
        a = await c.semaphore("s", 2, ttl=2).acquire()
        b = await c.semaphore("s", 2, ttl=2).acquire()
        assert not await c.semaphore("s", 2, ttl=2).try_acquire()
        await a.release()
        await b.release()

        e = c.election("e", ttl=1)
        obs = e.observe()
        assert await obs.__anext__() is None
        leader = await e.campaign("me")
        got = await asyncio.wait_for(obs.__anext__(), 3)
        assert got is not None and got.value == "me"
        await leader.resign()
        assert await asyncio.wait_for(obs.__anext__(), 3) is None
        await obs.aclose()

        quota = c.quota(2, "15m")
        assert [(await quota.take("k")).allowed for _ in range(3)] == [True, True, False]

        async def fetch() -> tuple[str, float]:
            return "v", 3600

        cache = c.token_cache(fetch_timeout=2)
        assert await cache.get_or_refresh("t", fetch) == "v"


async def until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


async def test_a_released_slot_goes_to_the_async_waiter_not_to_a_latecomer(redis_server: RedisServer) -> None:
    r = redis_server.cli()
    async with leasehold.AsyncClient.from_url(redis_server.url) as c:
        holder = await c.semaphore("one", 1, ttl=10).acquire()

        async def wait() -> tuple[int, float]:
            s = await c.semaphore("one", 1, ttl=10).acquire(timeout=20)
            at = time.monotonic()
            await asyncio.sleep(0.3)
            await s.release()
            return s.token or 0, at

        task = asyncio.create_task(wait())
        await until(lambda: r.zcard("leasehold:{one}:queue") == 1, 10, "the waiter to queue")
        released = time.monotonic()
        await holder.release()
        late = c.semaphore("one", 1, ttl=10)
        assert not await late.try_acquire(), "a latecomer took the slot the waiter was in line for"
        token, at = await task
        assert token > (holder.token or 0)
        assert at - released < 1.0, "handed over on release, not at the 10 s expiry"
        assert r.zcard("leasehold:{one}:queue") == 0


async def test_async_semaphore_waiters_get_slots_in_arrival_order(redis_server: RedisServer) -> None:
    r = redis_server.cli()
    async with leasehold.AsyncClient.from_url(redis_server.url) as c:
        a = await c.semaphore("fifo", 2, ttl=10).acquire()
        b = await c.semaphore("fifo", 2, ttl=10).acquire()

        async def wait() -> int:
            s = await c.semaphore("fifo", 2, ttl=10).acquire(timeout=20)
            await asyncio.sleep(0.2)
            await s.release()
            return s.token or 0

        tasks = []
        for i in range(4):
            tasks.append(asyncio.create_task(wait()))
            # Arrive in order: 0, 1, 2, 3.
            await until(lambda n=i + 1: r.zcard("leasehold:{fifo}:queue") == n, 10, f"waiter {i} to queue")
        t0 = time.monotonic()
        await a.release()
        await b.release()
        tokens = await asyncio.gather(*tasks)
        # Tokens grow in hand-out order: the slots went first come, first served.
        assert tokens == sorted(set(tokens)), f"served out of order: {tokens}"
        assert tokens[0] > max(a.token or 0, b.token or 0)
        assert time.monotonic() - t0 < 5


async def test_an_async_semaphore_waiter_that_gives_up_leaves_the_line(redis_server: RedisServer) -> None:
    r = redis_server.cli()
    async with leasehold.AsyncClient.from_url(redis_server.url) as c:
        holder = await c.semaphore("busy-sem", 1, ttl=10).acquire()
        with pytest.raises(leasehold.AcquireTimeout):
            await c.semaphore("busy-sem", 1, ttl=10).acquire(timeout=0.3)
        assert r.zcard("leasehold:{busy-sem}:queue") == 0, "a waiter that gave up must leave the line"
        # Cancelled, too.
        task = asyncio.create_task(c.semaphore("busy-sem", 1, ttl=10).acquire())
        await until(lambda: r.zcard("leasehold:{busy-sem}:queue") == 1, 10, "the waiter to queue")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert r.zcard("leasehold:{busy-sem}:queue") == 0, "a cancelled waiter must leave the line"
        assert r.hlen("leasehold:{busy-sem}:qinfo") == 0
        # Nobody in line: the slot given back is free for anyone.
        await holder.release()
        s = c.semaphore("busy-sem", 1, ttl=10)
        assert await s.try_acquire()
        await s.release()


def test_async_close_leaves_no_threads(redis_server: RedisServer) -> None:
    before = set(threading.enumerate())

    async def main() -> None:
        c = leasehold.AsyncClient.from_url(redis_server.url)
        await c.ping()
        held = await c.lease("x", ttl=1).acquire()
        await c.close()
        assert not held.is_held

    asyncio.run(main())
    time.sleep(0.1)
    assert {t for t in threading.enumerate() if t.is_alive()} <= before
