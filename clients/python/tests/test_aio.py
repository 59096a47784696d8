"""The asyncio client against a real redis-server."""

from __future__ import annotations

import asyncio
import threading
import time

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
