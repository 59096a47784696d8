"""The README's least-privilege ACL is all the Python package needs; a
missing right is a clear error, never a hang; WAIT with min_replicas."""

from __future__ import annotations

import threading
import time

import pytest

import leasehold

from .conftest import RedisServer, wait_for

# The rule of the README's Security section.
ACL = (
    "on >s3cret-pw resetkeys ~leasehold:* resetchannels &leasehold:* -@all "
    "+@connection +evalsha +eval +script|load +time +info +wait +subscribe +unsubscribe "
    "+exists +type +get +set +del +incrby +hget +hmget +hset +hdel +hkeys +hlen +pexpire +pexpireat "
    "+pttl +zadd +zrange +zrangebyscore +zremrangebyscore +zrem +zrank +zcount +zscore +zcard +publish"
)


def test_everything_works_as_the_readmes_least_privilege_user(redis_server: RedisServer) -> None:
    redis_server.cli().execute_command("ACL", "SETUSER", "leasehold", *ACL.split())
    url = f"redis://leasehold:s3cret-pw@127.0.0.1:{redis_server.port}"
    with leasehold.Client.from_url(url) as c:
        held = c.lease("acl", ttl=1).acquire()
        got: list[int] = []
        t = threading.Thread(target=lambda: got.append(c.lease("acl", ttl=1).acquire(timeout=5).token or 0))
        t.start()
        time.sleep(0.3)
        held.release()
        t.join()
        assert got and got[0] > (held.token or 0)
        wait_for(lambda: c.status("acl").holder is not None, 2, "the waiter to hold")
        s = c.semaphore("acl-sem", 2, ttl=1)
        assert s.try_acquire()
        s.release()
        assert c.quota(1, "1d").take("k").allowed
        assert c.token_cache().get_or_refresh("tok", lambda: ("v", 60)) == "v"
        e = c.election("acl-el", ttl=1)
        it = e.observe()
        assert next(it) is None
        it.close()


def test_a_subscribe_refused_by_the_acl_is_an_error_not_a_hang(redis_server: RedisServer) -> None:
    # The same rights, but no channels.
    rule = ACL.replace("resetchannels &leasehold:*", "resetchannels")
    redis_server.cli().execute_command("ACL", "SETUSER", "nochan", *rule.split())
    url = f"redis://nochan:s3cret-pw@127.0.0.1:{redis_server.port}"
    with leasehold.Client.from_url(url) as c:
        held = c.lease("busy", ttl=5)
        assert held.try_acquire()
        t0 = time.monotonic()
        with pytest.raises(leasehold.Refused) as e:
            c.lease("busy", ttl=5).acquire(timeout=10)
        assert time.monotonic() - t0 < 3
        assert "Redis refused SUBSCRIBE" in str(e.value) and "s3cret-pw" not in str(e.value)
        held.release()


def test_min_replicas_waits_for_a_replica(make_redis: object) -> None:
    master: RedisServer = make_redis("--repl-diskless-sync-delay", "0")  # type: ignore[operator]
    replica: RedisServer = make_redis("--replicaof", "127.0.0.1", str(master.port), warm=False)  # type: ignore[operator]
    wait_for(
        lambda: master.cli().info("replication").get("slave0", {}).get("state") == "online", 15, "the replica to sync"
    )
    with leasehold.Client.from_url(master.url, min_replicas=1) as c:
        lease = c.lease("w", ttl=1).acquire(timeout=5)
        time.sleep(1.2)  # renewed with WAIT 1 all along
        assert lease.is_held
        assert master.cli().hget("leasehold:{w}:lease", "w") == "1"
        lease.release()
    with leasehold.Client.from_url(master.url, min_replicas=2) as c2:
        with pytest.raises(leasehold.NotReplicated) as e:
            c2.lease("w2", ttl=1).try_acquire()
        assert "was not confirmed by 2 replica(s) in time" in str(e.value)
        assert c2.status("w2").holder is None, "an acquisition not replicated is given back"
    assert replica.port
